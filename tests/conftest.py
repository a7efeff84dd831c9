import os

import pytest
import torch

# Tests must not depend on the user's cache directory: every generated dataset goes to one session tmp dir.
@pytest.fixture(scope="session", autouse=True)
def _isolated_data_cache(tmp_path_factory):
    old = os.environ.get("KDLAB_DATA")
    os.environ["KDLAB_DATA"] = str(tmp_path_factory.mktemp("kdlab_data"))
    yield
    if old is None:
        os.environ.pop("KDLAB_DATA", None)
    else:
        os.environ["KDLAB_DATA"] = old


@pytest.fixture(autouse=True)
def _one_thread():
    # two xdist workers on two cores: one thread each avoids oversubscription
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def random_teacher(tmp_path_factory):
    """A randomly initialised (seed 0) mnist1d_cnn_small saved as a kdlab weights file: a teacher for runs that test
    the machinery, not accuracy."""
    from kdlab import models

    path = tmp_path_factory.mktemp("random_teacher") / "model.safetensors"
    torch.manual_seed(0)
    models.save_model(path, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    return path
