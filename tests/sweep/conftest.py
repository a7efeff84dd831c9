"""Shared by the sweep tests: the processes a process started (Linux /proc), to signal or to watch them."""

import os

import pytest


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return out


@pytest.fixture
def children():
    return _children
