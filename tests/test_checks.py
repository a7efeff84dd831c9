"""kdlab._checks: the shared argument checks (ints that are not bools, finite reals, positive numbers)."""

import math

import numpy as np
import pytest
import torch

from kdlab._checks import check_int, check_positive, check_real, is_int, is_real


def test_is_int_and_is_real_refuse_bools():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0) and not is_int("3")
    assert is_real(3) and is_real(2.5) and is_real(np.float32(2.5)) and not is_real(False) and not is_real("2.5")


def test_check_int_bounds_and_messages():
    assert check_int(4, "n", 1) == 4 and type(check_int(np.int64(4), "n", 1)) is int
    assert check_int(0, "n") == 0 and check_int(8, "n", 1, 8) == 8
    with pytest.raises(ValueError, match=r"^n must be an int >= 1; got 0$"):
        check_int(0, "n", 1)
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 8\] \(the split's size\); got 9"):
        check_int(9, "n", 1, 8, note=" (the split's size)")
    for bad in (True, 2.0, "2", None):
        with pytest.raises(ValueError, match="must be an int"):
            check_int(bad, "n", 1)
    with pytest.raises(TypeError, match="k must be an int >= 1"):
        check_int(0, "k", 1, error=TypeError)


def test_check_real_bounds_and_messages():
    assert check_real(0, "std", minimum=0) == 0.0 and check_real(np.float32(0.5), "alpha", above=0) == 0.5
    with pytest.raises(ValueError, match=r"alpha must be a finite number > 0 \(Beta\); got 0"):
        check_real(0, "alpha", above=0, note=" (Beta)")
    with pytest.raises(ValueError, match="std must be a finite number >= 0; got -1"):
        check_real(-1, "std", minimum=0)
    for bad in (math.inf, math.nan, True, "1"):
        with pytest.raises(ValueError, match="must be a finite number"):
            check_real(bad, "x")


def test_check_positive_takes_anything_float_takes():
    assert check_positive(2, "temperature") == 2.0 and check_positive(torch.tensor(0.5), "temperature") == 0.5
    with pytest.raises(ValueError, match="temperature must be a positive number, got 'hot'"):
        check_positive("hot", "temperature")
    for bad in (0, -1.0, math.inf, math.nan, True):
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            check_positive(bad, "temperature")
