"""Fine-tuning starts (kdlab.models.pretrained): every tensor of the file but a classifier of another class count."""

import pytest
import torch

from kdlab._io import CheckpointError
from kdlab.models import create, save_model
from kdlab.models.pretrained import load_pretrained
from kdlab.models.weights import ArchMismatchError


def test_the_body_comes_from_the_file_and_the_head_keeps_its_seeded_init(tmp_path):
    torch.manual_seed(1)
    source = create("resnet8", 1000)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    torch.manual_seed(0)
    model = create("resnet8", 3)
    torch.manual_seed(0)
    fresh = create("resnet8", 3)
    report = load_pretrained(model, "resnet8", tmp_path / "w.pth")
    assert report == {"weights": str(tmp_path / "w.pth"), "loaded": len(source.state_dict()) - 2,
                      "head": "classifier", "head_replaced": True, "file_classes": 1000, "num_classes": 3}
    theirs, ours, init = source.state_dict(), model.state_dict(), fresh.state_dict()
    for k, v in ours.items():
        if k.startswith("classifier."):
            assert torch.equal(v, init[k])  # the architecture's own init, drawn from the seed
        else:
            assert torch.equal(v, theirs[k])


def test_a_head_of_the_same_class_count_is_kept(tmp_path):
    source = create("resnet8", 3)
    save_model(tmp_path / "w.safetensors", source, arch="resnet8", num_classes=3)
    model = create("resnet8", 3)
    assert not load_pretrained(model, "resnet8", tmp_path / "w.safetensors")["head_replaced"]
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_another_architecture_is_refused_with_what_the_file_records(tmp_path):
    save_model(tmp_path / "w.safetensors", create("resnet20", 10), arch="resnet20", num_classes=10)
    with pytest.raises(ArchMismatchError, match="holds a 'resnet20' model but arch 'resnet8'") as info:
        load_pretrained(create("resnet8", 3), "resnet8", tmp_path / "w.safetensors")
    assert info.value.file_arch == "resnet20"
    torch.save(create("resnet20", 10).state_dict(), tmp_path / "bare.pth")  # records nothing: the tensors tell
    with pytest.raises(CheckpointError, match="pretrained weights do not fit resnet8 .*unexpected"):
        load_pretrained(create("resnet8", 3), "resnet8", tmp_path / "bare.pth")
