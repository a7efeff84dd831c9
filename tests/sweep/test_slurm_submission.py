"""`kdlab sweep --executor slurm` against stand-ins for sbatch/srun/sacct (no cluster here): the sbatch scripts ask for
what the options say (partition, GPUs, time, array, the requeue signal), students wait for their teacher's array
job, job ids land in sweep.json, and a rerun does not submit a cell whose job is still queued or running."""

import json
import stat

import pytest

from kdlab.cli import main

pytest.importorskip("submitit")

FAKE = {
    "srun": "#!/bin/sh\nexit 0\n",
    # keeps each script, answers like sbatch
    "sbatch": "#!/bin/sh\nn=$(ls \"$KDLAB_FAKE_SLURM\" | wc -l)\ncp \"$1\" \"$KDLAB_FAKE_SLURM/job$((n + 1000)).sh\"\n"
              "echo \"Submitted batch job $((n + 1000))\"\n",
    # every job asked about is running
    "sacct": "#!/bin/sh\necho 'JobID|State|NodeList'\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -j ]; then "
             "echo \"$2|RUNNING|node1\"; echo \"${2}_0|RUNNING|node1\"; echo \"${2}_1|RUNNING|node1\"; shift; fi; "
             "shift; done\n",
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, scripts = tmp_path / "bin", tmp_path / "scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    for name, text in FAKE.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("KDLAB_FAKE_SLURM", str(scripts))
    return scripts


def test_slurm_array_jobs_options_dependencies_and_no_double_submission(fake_slurm, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--recipes", "mnist1d/kd", "--seeds", "2", "--teachers", "train", "--out", str(out),
            "--executor", "slurm", "--no-wait", "--partition", "gpu", "--gpus-per-cell", "2", "--time", "600",
            "--no-progress", "--set", "run.device=cuda"]
    assert main(args) == 0
    scripts = sorted(fake_slurm.iterdir())
    assert [p.name for p in scripts] == ["job1000.sh", "job1001.sh"]  # the teacher stage, then the students
    teacher, students = (p.read_text() for p in scripts)
    for text in (teacher, students):
        for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=600",
                     "#SBATCH --cpus-per-task=8", "#SBATCH --signal=USR2@90", "#SBATCH --ntasks-per-node=1"):
            assert line in text, line
    assert "#SBATCH --array=0-1%2" in students and "#SBATCH --dependency=afterok:1000" in students
    assert "#SBATCH --kill-on-invalid-dep=yes" in students
    doc = json.loads((out / "sweep.json").read_text())
    assert [(c["kind"], c["status"], c["job_id"]) for c in doc["cells"]] == [
        ("teacher", "submitted", "1000"), ("student", "submitted", "1001_0"), ("student", "submitted", "1001_1")]
    assert "3 submitted" in capsys.readouterr().out

    # rerun while the jobs run: nothing is submitted twice
    assert main(args) == 0
    assert len(list(fake_slurm.iterdir())) == 2
    assert "still queued or running as job 1001_1" in (out / "sweep.json").read_text()
