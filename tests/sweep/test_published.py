"""configs/published.yaml holds every published number of docs/reference/methods.md §11, §19, §21–§24 and
docs/reference/imagenet.md §5, §7, each with its source, keyed so that every entry names a shipped recipe (or says why
none exists yet); numbers that could not be checked against a readable source are marked unverified."""

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
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


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


# the columns of the feature-method table (docs/reference/methods.md §13) → the recipes' method names
FEATURE_COLUMNS = {"FitNet": "fitnet", "AT": "at", "SP": "sp", "VID": "vid", "RKD": "rkd", "PKT": "pkt", "NST": "nst"}


def test_every_feature_method_number_of_methods_md_13_is_there_with_its_source(pub):
    table = _tables(_section(METHODS, 13))[-1]
    header, rows = table[0], table[1:]
    assert header[1:] == list(FEATURE_COLUMNS) and len(rows) == 13
    names = _by_paper_name(pub)
    for row in rows:
        key = names[row[0]]
        for column, cell in zip(header[1:], row[1:]):
            found = pub.lookup(*key.split("/"), FEATURE_COLUMNS[column])
            assert [e.acc for e in found] == [float(cell)], (key, column)
            assert "§13" in found[0].source and "Contrastive Representation Distillation" in found[0].source


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
    blocks = [k for k in read_yaml(PUBLISHED_FILE) if k == "pairs" or k.startswith("pairs_")]
    assert len(changed) == len(blocks) == 2  # one line in each block of methods (`pairs`, `pairs_features_b`)
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


def test_every_number_of_methods_md_18_is_there_with_its_source(pub):
    """The feature methods' block (docs/reference/methods.md §18): every cell of both tables, no number more."""
    cifar, imagenet = _tables(_section(METHODS, 18))
    names = {**_by_paper_name(pub), "R34→R18": "imagenet/resnet34-resnet18", "R50→MV1": "imagenet/resnet50-mobilenet_v1"}
    columns = {"OFD": "ofd", "CRD": "crd", "ReviewKD": "reviewkd", "KD + DOT": "kd_dot"}
    seen = 0
    for table in (cifar, imagenet):
        for row in table[1:]:
            key = names[row[0]]
            for column, cell in zip(table[0][1:], row[1:]):
                found = pub.lookup(*key.split("/"), columns[column])
                if cell == "—":
                    assert not found, (key, column)
                    continue
                seen += 1
                assert [e.acc for e in found] == [float(cell)], (key, column)
                assert "§18" in found[0].source
    block = read_yaml(PUBLISHED_FILE)["pairs_features_b"]
    assert seen == sum(len([m for m in entry if m != "paper"]) for entry in block.values()) == 46


def test_a_method_given_in_two_blocks_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("sources: {a: A}\npairs:\n  cifar100/x-y:\n    kd: {acc: 1.0, source: a}\n"
                    "pairs_more:\n  cifar100/x-y:\n    kd: {acc: 2.0, source: a}\n")
    with pytest.raises(ValueError, match=r"cifar100/x-y/kd is given twice \(pairs_more\)"):
        load_published(path)


# docs/reference/methods.md §19–§24 (the pairs' names as the tables write them) → published.yaml keys
PAIR_NAMES = {"resnet110→resnet20": "cifar100/resnet110-resnet20", "ResNet50→vgg8": "cifar100/cifar_resnet50-vgg8",
              "resnet32x4→ShuffleV1": "cifar100/resnet32x4-ShuffleV1", "wrn_40_2→ShuffleV1": "cifar100/wrn_40_2-ShuffleV1"}


def _pair_key(pub, name):
    return _by_paper_name(pub).get(name) or PAIR_NAMES[name]


def test_the_four_pairs_outside_11_have_the_ttm_readme_numbers(pub):
    """docs/reference/methods.md §24: 26 numbers of the TTM authors' README ("n/a": none)."""
    header, *rows = _tables(_section(METHODS, 24))[0]
    columns = {"teacher": "teacher", "student": "ce", "KD": "kd", "DKD": "dkd", "DIST": "dist", "TTM": "ttm",
               "WTTM": "wttm"}
    count = 0
    for row in rows:
        key = _pair_key(pub, row[0])
        for column, cell in zip(header[1:], row[1:]):
            found = pub.lookup(*key.split("/"), columns[column])
            if cell == "n/a":
                assert not found, (key, column)
                continue
            assert [e.acc for e in found] == [float(cell)] and "zkxufo/TTM" in found[0].source, (key, column)
            count += 1
    assert count == 26


@pytest.mark.parametrize("section, method, source", [
    (19, "mlkd", "MLKD rows"),
    (23, "kd_ls", "logit-standardization-KD"),
])
def test_per_pair_tables_of_the_new_sections_are_there(pub, section, method, source):
    """§19 (MLKD) and §23 (KD + logit standardisation): one published number per listed pair."""
    header, *rows = _tables(_section(METHODS, section))[-1 if section == 19 else 0]
    col = len(header) - 1  # the number is the last column
    for row in rows:
        key = _pair_key(pub, row[0])
        found = pub.lookup(*key.split("/"), method)
        assert found and found[0].acc == float(row[col]) and source in found[0].source, (key, method)
        assert not found[0].unverified


def test_ctkd_and_sdd_numbers_are_there(pub):
    """§21: KD+CTKD per pair (CTKD README, then the logit-standardisation README); §22: the SDD run scripts' two
    runs per pair, SD-DKD as `sdd`, SD-KD as `sdd_kd` (its recipe is the sdd recipe with base kd: pending)."""
    text = _section(METHODS, 21)
    pairs = re.findall(r"(\w+→\w+) (\d+\.\d\d)", text.split("Published CIFAR-100 top-1")[1].split("ImageNet")[0])
    assert len(pairs) == 10
    for name, acc in pairs:
        found = pub.lookup(*_pair_key(pub, name).split("/"), "ctkd")
        assert [e.acc for e in found] == [float(acc)] and "CTKD" in found[0].source, name
    header, *rows = _tables(_section(METHODS, 22))[-1]
    for row in rows:
        if row[0].startswith("ImageNet"):
            continue
        key = _pair_key(pub, row[0])
        for column, method in (("SD-DKD", "sdd"), ("SD-KD", "sdd_kd")):
            cell = row[header.index(column)]
            found = pub.lookup(*key.split("/"), method)
            if cell == "—":
                assert not found, (key, method)
                continue
            assert [e.acc for e in found] == [float(x) for x in cell.split(", ")], (key, method)
            assert all("run scripts" in e.source for e in found)
            assert all(e.recipe_pending for e in found) == (method == "sdd_kd")


def test_imagenet_7_numbers_are_there(pub):
    """docs/reference/imagenet.md §7: NKD, CTKD (on KD; on DKD pending) and SD-DKD on the two ImageNet pairs."""
    table = _tables(_section(IMAGENET, 7))[-1]
    rows = {"NKD": "nkd", "CTKD (on KD)": "ctkd", "CTKD (on DKD)": "ctkd_dkd", "SDD (SD-DKD)": "sdd"}
    keys = ["imagenet/resnet34-resnet18", "imagenet/resnet50-mobilenet_v1"]
    for row in table[1:]:
        for key, cell in zip(keys, row[1:3]):
            found = pub.lookup(*key.split("/"), rows[row[0]])
            if cell == "—":
                assert not found
                continue
            assert found[0].acc == float(cell), (row[0], key)


def test_numbers_not_checked_against_a_readable_source_are_marked_unverified(pub):
    """R2KD's 38 numbers (CIFAR-100, ImageNet, Tiny-ImageNet) and the DKD paper's 68.58 KD number."""
    marked = [(key, m, e) for key in pub.pairs for m, entries in pub.methods(key).items() for e in entries
              if e.unverified]
    r2kd = [x for x in marked if "R2KD" in x[2].source or "r2kd" in x[2].source.lower()]
    assert len(r2kd) == 38
    assert {(k, m, e.acc) for k, m, e in marked if (k, m, e) not in r2kd} == {
        ("imagenet/resnet50-mobilenet_v1", "kd", 68.58)}
    kd = pub.lookup("imagenet", "resnet50-mobilenet_v1", "kd")
    assert kd[0].acc == 70.50 and "mdistiller" in kd[0].source and not kd[0].unverified
    assert "DKD paper" in kd[1].source and "TTM" not in kd[1].source


def test_unverified_must_name_a_source(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("sources: {a: A}\nunverified: {b: why}\npairs: {}\n")
    with pytest.raises(ValueError, match="unverified.*'b'"):
        load_published(path)
