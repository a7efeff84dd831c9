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
