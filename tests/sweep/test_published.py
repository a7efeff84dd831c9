"""configs/published.yaml holds every published number of docs/reference/methods.md §11 and
docs/reference/imagenet.md §5, each with its source, keyed so that every entry names a shipped recipe (or says why
none exists yet)."""

import os
import re
from pathlib import Path

import pytest

from kdlab.config import RECIPES_DIR, read_yaml, recipe_names
from kdlab.sweep.published import PUBLISHED_FILE, load_published
from kdlab.sweep.spec import teacher_recipes
from kdlab.teachers import published as published_teachers

ROOT = Path(__file__).resolve().parents[2]
METHODS, IMAGENET = "docs/reference/methods.md", "docs/reference/imagenet.md"
# the columns of the CIFAR-100 table (docs/reference/methods.md §11) → the methods of published.yaml (recipe file names)
CIFAR_COLUMNS = {"teacher": "teacher", "student": "ce", "KD": "kd", "DKD": "dkd", "DIST": "dist", "TTM": "ttm",
                 "WTTM": "wttm", "R2KD": "r2kd_no_second_view", "R2KD+CutMix": "r2kd"}
IMAGENET_ROWS = {"KD": "kd", "DKD": "dkd", "DIST": "dist", "WTTM": "wttm", "R2KD": "r2kd",
                 "KD + logit standardisation": "kd_ls"}
TINY_COLUMNS = {"teacher": "teacher", "student (CE)": "ce", "DKD": "dkd", "R2KD + CutMixPick": "r2kd"}
NUMBER = re.compile(r"\d+\.\d\d")


def _section(doc: str, number: int) -> str:
    text = (ROOT / doc).read_text(encoding="utf-8")
    start = text.index(f"\n## {number}. ")
    return text[start:text.index("\n## ", start + 1)]


def _tables(section: str) -> list[list[list[str]]]:
    """Markdown tables of a section as rows of cells (header first, separator dropped)."""
    tables, current = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.fixture(scope="module")
def pub():
    return load_published()


def _by_paper_name(pub):
    return {entry["paper"]: key for key, entry in pub.pairs.items()}


def _accs(pub, key, method=None):
    methods = pub.methods(key)
    return {e.acc for m, entries in methods.items() if method in (None, m) for e in entries}


def test_every_cifar100_number_of_methods_md_11_is_there_with_its_source(pub):
    table = _tables(_section(METHODS, 11))[0]
    header, rows = table[0], table[1:]
    names = _by_paper_name(pub)
    assert len(rows) == 9
    for row in rows:
        key = names[row[0]]  # every pair of the reference table has an entry
        for column, cell in zip(header[1:], row[1:]):
            method = CIFAR_COLUMNS[column]
            found = pub.lookup(*key.split("/"), method)
            if cell == "—":
                assert not found, (key, method)
                continue
            assert [e.acc for e in found] == [float(cell)], (key, method)
            assert found[0].source in pub.sources.values() and "§11" in found[0].source
    # the one extra published number of §11: KD + logit standardisation on resnet32x4→resnet8x4
    assert "76.62" in _section(METHODS, 11)
    assert pub.lookup("cifar100", "resnet32x4-resnet8x4", "kd_ls")[0].acc == 76.62


def test_every_imagenet_and_tiny_imagenet_number_of_imagenet_md_5_is_there(pub):
    imagenet, tiny = _tables(_section(IMAGENET, 5))
    names = _by_paper_name(pub)
    pairs = [names[h] for h in imagenet[0][1:3]]  # "R34 (73.31) → R18 (69.76)", "R50 (76.16) → MV1 (68.87)"
    for key, head in zip(pairs, imagenet[0][1:3]):
        teacher, student = (float(x) for x in NUMBER.findall(head))
        assert pub.lookup(*key.split("/"), "teacher")[0].acc == teacher
        assert pub.lookup(*key.split("/"), "ce")[0].acc == student
    for row in imagenet[1:]:
        method = IMAGENET_ROWS.get(row[0])
        for key, cell in zip(pairs, row[1:3]):
            for number in NUMBER.findall(cell):
                assert float(number) in _accs(pub, key, method), (row[0], key, number)
    for row in tiny[1:]:
        key = names[row[0]]
        for column, cell in zip(tiny[0][1:], row[1:]):
            assert pub.lookup(*key.split("/"), TINY_COLUMNS[column])[0].acc == float(cell), (key, column)


def test_every_entry_names_a_shipped_recipe_or_says_why_not(pub):
    names = set(recipe_names())
    teachers = teacher_recipes()
    for key, entry in pub.pairs.items():
        dataset, pair = key.split("/")
        pair_dir = RECIPES_DIR / dataset / pair
        if entry.get("recipe_pending"):
            assert not pair_dir.is_dir(), f"{key}: its recipes exist now; drop `recipe_pending` in published.yaml"
            continue
        assert pair_dir.is_dir(), f"{key}: no recipe directory {pair_dir} (renamed? change the key)"
        one = read_yaml(next(pair_dir.glob("*.yaml")))
        for method, entries in pub.methods(key).items():
            if all(e.recipe_pending for e in entries):
                assert f"{key}/{method}" not in names, f"{key}/{method} exists now; drop its `recipe_pending`"
                continue
            if method == "teacher":
                named = published_teachers.lookup(one["teacher"]["checkpoint"])
                if named is not None:  # the released teacher (kdlab.teachers.published), whose accuracy is quoted
                    assert named.arch == one["teacher"]["arch"], key
                    assert f"{dataset}/teachers/{named.arch}" in names, f"{key}: no recipe trains {named.arch}"
                    continue
                ckpt = os.path.normpath(os.path.abspath(one["teacher"]["checkpoint"]))
                assert ckpt in teachers, f"{key}: no teacher recipe writes {ckpt}"
            elif method == "ce":
                assert f"{dataset}/students/{one['student']['arch']}/ce" in names, key
            else:
                assert f"{key}/{method}" in names, f"{key}/{method}: no such recipe"


def test_a_renamed_recipe_directory_is_a_one_line_change(tmp_path):
    # e.g. the CIFAR ResNet50 rename (cifar100/ResNet50-MobileNetV2 → cifar100/cifar_resnet50-MobileNetV2), here undone
    text = PUBLISHED_FILE.read_text(encoding="utf-8")
    renamed = text.replace("cifar100/cifar_resnet50-MobileNetV2:", "cifar100/ResNet50-MobileNetV2:")
    changed = [a for a, b in zip(text.splitlines(), renamed.splitlines()) if a != b]
    assert len(changed) == 1
    (tmp_path / "published.yaml").write_text(renamed, encoding="utf-8")
    pub = load_published(tmp_path / "published.yaml")
    assert pub.lookup("cifar100", "ResNet50-MobileNetV2", "dkd")[0].acc == 70.35
    assert not pub.lookup("cifar100", "cifar_resnet50-MobileNetV2", "dkd")


def test_published_yaml_is_not_a_recipe(capsys):
    from kdlab.cli import main

    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out.split()
    assert "published" not in listed and "cifar100/resnet32x4-resnet8x4/kd" in listed


def test_a_bad_entry_is_refused_with_its_place(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("sources: {a: A}\npairs:\n  cifar100/x-y:\n    kd: {acc: 1.0, source: b}\n")
    with pytest.raises(ValueError, match=r"cifar100/x-y/kd: source 'b'"):
        load_published(path)
