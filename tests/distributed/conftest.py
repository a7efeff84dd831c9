import pytest
import torch

from kdlab import models
from kdlab.models import save_model


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A randomly initialised mnist1d_cnn_small teacher checkpoint (speed and equivalence do not need a good one)."""
    path = tmp_path_factory.mktemp("ddp") / "teacher.safetensors"
    torch.manual_seed(7)
    save_model(path, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    return path
