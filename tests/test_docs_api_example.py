"""docs/api.md shows a complete example and its real output: running the example reproduces that output."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs/api.md"


def _block(text: str, lang: str) -> str:
    return re.search(rf"```{lang}\n(.*?)```", text, re.S).group(1)


def test_the_doc_shows_the_example_file():
    doc = DOC.read_text(encoding="utf-8")
    script = (REPO / "docs" / "examples" / "breast_cancer.py").read_text(encoding="utf-8")
    assert _block(doc, "python").strip() in script


@pytest.mark.slow
def test_the_example_prints_the_output_the_doc_shows(tmp_path):
    pytest.importorskip("sklearn", reason="the example needs scikit-learn (in the test extra: pip install -e '.[test]')")
    doc = DOC.read_text(encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "docs" / "examples" / "breast_cancer.py")], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines() == _block(doc, "text").splitlines()
    assert (tmp_path / "runs" / "breast_cancer_kd" / "final.json").is_file()
    assert not (tmp_path / "runs" / "breast_cancer_kd" / "curves.png").exists()  # drawn on request only
