"""Every benchmark has a ``--quick`` smoke run that works exactly as benchmarks/README.md documents it, and states its
full and quick run times in one docstring line that the README repeats."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository this test file lives in, whatever the working directory
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py"))
RUN_TIME = re.compile(r"^Run time on 2 CPU cores: full (~[^,]+), --quick (~\d+ s)\.$", re.MULTILINE)

# (table header, a row label) each quick run prints
PRINTS = {
    "cache_precision": ("| storage | bytes / logit |", "| bfloat16 | 2 |"),
    "curvature": ("| teacher spread | term | λ_max at C=3 (× C=10) |", "| 3 | R2KD value (cosine) | "),
    "decode": ("| transform | pipeline | workers | images/s per core | CPU ms / image |", "| kdlab | 1 |"),
    "digits_kd": ("| val accuracy % (mean ± std over seeds [0]) |", "| kd | "),
    "distributed": ("| processes | s / epoch |", "| 2 | "),
    "epoch_throughput": ("| pair | samples | batch | epoch |", "| KD, cached teacher (precomputed all"),
    "feature_step": ("| method | kdlab ms / step | × KD |", "| crd | "),
    "grad_conflict": ("| step | wall ms | CPU ms |", "| extra per measured step | "),
    "guard_margins": ("| run | epochs | step loss / first |", "| mnist1d/dkd | 3 |"),
    "integrity": ("| store | bytes / view | read ms / batch, unchecked |", "| top-10 | 44 |"),
    "losses": ("| loss | shape (N, C) | ms fwd+bwd |", "| cmkd_loss | (256, 1000) |"),
    "overhead": ("| checkout | `kdlab --help` wall s |", "| start-up (interpreter, imports) | "),
    "replay": ("| step | ms / step | × CE step |", "| KD, stored outputs (top-10) |"),
    "small_data": ("| method (test accuracy %, mean ± std over seeds [0], Δ vs CE) |", "| wttm | "),
    "step_time": ("| pair | batch | step | ms / step |", "| KD, cached teacher (lazy, warm) |"),
    "teacher_passes": ("| setting | process wall time (median) |", "| next seed (0 passes) |"),
    "topk_error": ("| teacher outputs | bytes / view |", "| kd (temperature=4.0) | yes |"),
}


def _module(name: str) -> ast.Module:
    return ast.parse((ROOT / "benchmarks" / f"{name}.py").read_text())


def _readme_rows() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "benchmarks" / "README.md").read_text().splitlines():
        m = re.match(r"\| `(\w+)\.py` \|", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_every_benchmark_is_covered():
    assert BENCHMARKS and sorted(PRINTS) == BENCHMARKS
    assert sorted(_readme_rows()) == BENCHMARKS


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_option_and_run_times_are_documented(name):
    module = _module(name)
    options = {c.args[0].value for c in ast.walk(module) if isinstance(c, ast.Call)
               and getattr(c.func, "attr", None) == "add_argument" and c.args and isinstance(c.args[0], ast.Constant)}
    assert "--quick" in options, f"benchmarks/{name}.py has no --quick option"
    doc = ast.get_docstring(module)
    assert f"python benchmarks/{name}.py --quick" in doc
    times = RUN_TIME.findall(doc)
    assert len(times) == 1, f"benchmarks/{name}.py: no single 'Run time on 2 CPU cores: full ~…, --quick ~N s.' line"
    full, quick = times[0]
    row = _readme_rows()[name]
    assert f"`python benchmarks/{name}.py --quick`" in row
    assert f"| {quick} |" in row and f"| {full} |" in row, "benchmarks/README.md and the docstring disagree"


def test_readme_points_at_existing_docs():
    text = (ROOT / "benchmarks" / "README.md").read_text()
    docs = set(re.findall(r"docs/[\w/]+\.md", text))
    assert docs and all((ROOT / d).is_file() for d in docs), sorted(d for d in docs if not (ROOT / d).is_file())


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_run(name):
    # exactly the documented command, from the repository root; one thread as every other subprocess of the tests
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, row = PRINTS[name]
    assert header in proc.stdout and row in proc.stdout, proc.stdout[-3000:]
