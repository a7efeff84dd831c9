"""The practitioner's path end to end (issue 25): a folder of images → a teacher fine-tuned from a saved 1000-class
file → a distilled student → exported (ONNX when installed, TorchScript) → predictions made outside kdlab, from the
exported file's metadata alone, equal `kdlab predict`'s. Each step is a shipped recipe with overrides that shrink it."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab._io import read_metadata
from kdlab.cli import main
from kdlab.models import create, load_model

CLASSES = {"sky": (40, 60, 210), "apple": (200, 30, 30), "leaf": (30, 180, 40)}  # sorted: apple, leaf, sky
SMALL = ["data.image_size=16", "data.workers=0", "optim.epochs=2", "optim.batch_size=8", "run.progress=false",
         "run.tensorboard=false", "teacher.arch=resnet8"]


def make_folder(root, n_train=8, n_val=3, seed=0):
    """Three classes of noisy colour photos of varied sizes, PNG and JPEG, in DIR/train and DIR/val."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for name, rgb in CLASSES.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                shape = (28 + 3 * i, 36 + 2 * (i % 3), 3)
                pixels = np.clip(np.array(rgb) + rng.normal(0, 50, shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    """The three documented commands (shrunk): fine-tune the teacher, distil the student, export it."""
    tmp = tmp_path_factory.mktemp("practitioner")
    folder = make_folder(tmp / "photos")
    torch.manual_seed(1)
    pretrained = tmp / "imagenet_resnet8.pth"
    torch.save(create("resnet8", 1000).state_dict(), pretrained)  # as torchvision ships them: a bare state dict
    teacher, student = tmp / "runs" / "teacher", tmp / "runs" / "kd"
    caplog = []
    handler = logging.Handler()
    handler.emit = lambda record: caplog.append(record.getMessage())
    logging.getLogger("kdlab").addHandler(handler)
    try:
        assert main(["teacher", "imagefolder/finetune-teacher", f"data.root={folder}", *SMALL,
                     f"teacher.pretrained={pretrained}", f"out_dir={teacher}"]) == 0
    finally:
        logging.getLogger("kdlab").removeHandler(handler)
    assert main(["train", "imagefolder/kd", f"data.root={folder}", *SMALL, "student.arch=resnet8",
                 f"teacher.checkpoint={teacher / 'model.safetensors'}", f"out_dir={student}"]) == 0
    return {"tmp": tmp, "folder": folder, "pretrained": pretrained, "teacher": teacher, "student": student,
            "log": caplog}


def test_the_teacher_is_fine_tuned_from_the_1000_class_file(path):
    line = next(m for m in path["log"] if "teacher.pretrained=" in m)
    assert "classifier 'classifier' replaced (1000 classes in the file → 3" in line
    final = json.loads((path["teacher"] / "final.json").read_text())
    assert final["config"]["teacher"]["pretrained"] == str(path["pretrained"])


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_every_run_directory_describes_its_network(path, role):
    run = path[role]
    card = json.loads((run / "model.json").read_text())
    assert card == json.loads((run / "final.json").read_text())["model"]
    assert card == json.loads(read_metadata(run / "model.safetensors")["card"])
    assert card["classes"] == ["apple", "leaf", "sky"] and card["num_classes"] == 3
    assert card["arch"] == "resnet8" and card["role"] == role and card["input_shape"] == [3, 16, 16]
    assert card["preprocessing"] == {"input": "image", "mode": "RGB", "resize": 18, "interpolation": "bilinear",
                                     "crop": 16, "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225]}


def _outside_kdlab(image, meta):
    """What a user without kdlab does with the exported file's metadata: Pillow and numpy only."""
    pre = meta["preprocessing"]
    with Image.open(image) as im:
        im = im.convert(pre["mode"])
        w, h = im.size
        r, s = pre["resize"], pre["crop"]
        size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        im = im.resize(size, Image.BILINEAR)
        left, top = int(round((size[0] - s) / 2)), int(round((size[1] - s) / 2))
        x = np.asarray(im.crop((left, top, left + s, top + s)), dtype=np.float32) * np.float32(pre["scale"])
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_and_predict_outside_kdlab_from_the_metadata_alone(path, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxscript", reason="ONNX export needs the onnx extra (pip install -e '.[test]' has it)")
        ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    run = path["student"]
    # no --input-shape and no data flag (before: "data.name=imagefolder is streamed from disk ...")
    assert main(["export", str(run), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "on 8 evaluation samples of imagefolder" in out and "model.json (3 classes" in out
    exported = run / ("model.onnx" if fmt == "onnx" else "model.pt")
    if fmt == "onnx":
        import onnx

        meta = json.loads({p.key: p.value for p in onnx.load(str(exported)).metadata_props}["model.json"])
        session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
        run_file = lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]  # noqa: E731
    else:
        extra = {"model.json": ""}
        loaded = torch.jit.load(str(exported), _extra_files=extra)
        meta = json.loads(extra["model.json"])
        run_file = lambda x: loaded(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    images = sorted(str(p) for p in (path["folder"] / "val").rglob("*.*"))
    assert main(["predict", str(run), *images, "--top", "3", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    for image, pred in zip(images, ours):
        probs = _softmax(run_file(_outside_kdlab(image, meta)))[0]
        theirs = {meta["classes"][i]: float(p) for i, p in enumerate(probs)}
        assert pred["image"] == image
        assert pred["top"][0]["class"] == max(theirs, key=theirs.get)
        for t in pred["top"]:
            assert t["prob"] == pytest.approx(theirs[t["class"]], abs=2e-3)


def test_predict_prints_class_names_and_probabilities(path, capsys):
    image = str(path["folder"] / "val" / "leaf" / "0.png")
    assert main(["predict", str(path["teacher"]), image, "--top", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.count("%") == 2
    names = [part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")]
    assert set(names) <= set(CLASSES)


def test_eval_reads_the_run_it_is_pointed_at(path, capsys):
    """Before: `kdlab eval --student RUN/model.safetensors` evaluated on MNIST-1D ("3 classes but the data has 10")."""
    run = path["student"]
    final = json.loads((run / "final.json").read_text())
    for argv in (["eval", str(run), "--json", "-"], ["eval", "--student", str(run / "model.safetensors"), "--json",
                                                     "-"]):
        assert main(argv) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["n"] == 9
        assert report["student_acc"] == pytest.approx(final["fidelity"]["student_acc"])
        assert report["agreement"] == pytest.approx(final["fidelity"]["agreement"])  # the run's teacher
    # outside its run (--data given), the class mismatch names the flags to set
    assert main(["eval", "--student", str(run / "model.safetensors"), "--data", "mnist1d"]) == 2
    err = capsys.readouterr().err
    assert "3 classes but the data has 10" in err and "kdlab eval RUN" in err and "--data and --root" in err
    assert main(["eval", str(run), "--arch", "resnet20"]) == 2
    assert "set --arch resnet8" in capsys.readouterr().err
    assert main(["eval", str(run), "--teacher", str(path["teacher"] / "model.safetensors"),
                 "--teacher-arch", "resnet20"]) == 2
    assert "set --teacher-arch=resnet8" in capsys.readouterr().err


def test_a_teacher_of_another_arch_names_the_key_and_the_value(path, capsys):
    """Before: "holds a 'resnet8' model but the config says arch 'resnet20'", without the key to set."""
    assert main(["train", "imagefolder/kd", f"data.root={path['folder']}", *SMALL, "teacher.arch=resnet20",
                 "student.arch=resnet8", f"teacher.checkpoint={path['teacher'] / 'model.safetensors'}",
                 f"out_dir={path['tmp'] / 'wrong'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds a 'resnet8' model but teacher.arch is 'resnet20'" in err
    assert "set teacher.arch=resnet8" in err


def test_the_student_can_start_from_pretrained_weights(path, capsys):
    out = path["tmp"] / "warm"
    assert main(["train", "imagefolder/kd", f"data.root={path['folder']}", *SMALL, "student.arch=resnet8",
                 "optim.epochs=2", f"student.pretrained={path['pretrained']}",
                 f"teacher.checkpoint={path['teacher'] / 'model.safetensors'}", f"out_dir={out}"]) == 0
    assert load_model(out / "model.safetensors").classifier.out_features == 3
