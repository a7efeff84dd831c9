"""The divergence guard (kdlab.engine.guard): it stops a collapsed run with a message, keeps the last good and the best
checkpoints, and never fires on the shipped MNIST-1D recipes or the demo's settings."""

import json

import pytest
import torch

import kdlab
from kdlab import methods, models
from kdlab._io import load_tensors
from kdlab.cli import main
from kdlab.data import BatchLoader, load_dataset
from kdlab.engine import guard as g
from kdlab.engine.guard import DivergenceGuard, NonFiniteLossError as GuardNonFinite, TrainingDiverged
from kdlab.engine.loop import LoopSettings, NonFiniteLossError, train_loop


def _feed(guard, rows):
    """Epoch summaries (acc, loss) → the first Divergence, or None."""
    for epoch, (acc, loss) in enumerate(rows, 1):
        d = guard.update(epoch, {"acc": acc, "loss": loss, "loss_ce": loss / 4, "loss_kd": 3 * loss / 4})
        if d is not None:
            return d
    return None


# ---------------------------------------------------------------------------------------------------------------
# the rules, on summaries
# ---------------------------------------------------------------------------------------------------------------
def test_collapse_fires_after_patience_epochs_and_names_what_to_change():
    rows = [(30, 3.0), (50, 3.5), (56, 4.0), (40, 6.0), (30, 9.0), (28, 12.0), (27, 14.0)]
    d = _feed(DivergenceGuard(chance=10.0, lr=0.05), rows)
    # best 56% (excess 0.511), collapse below 10 + 0.5·46 = 33%: epochs 5, 6, 7
    assert d is not None and d.rule == "collapse" and d.epoch == 7
    for part in ("epoch 7", "27.0%", "56.0% at epoch 3", "chance 10.0%", "ce 3.5", "kd 10.5 (75%)",
                 "lower the learning rate (now 0.05)", "'kd'", "beta", "grad_clip"):
        assert part in d.message, part
    # two bad epochs are not yet a stretch, and a recovery resets it
    assert _feed(DivergenceGuard(chance=10.0), rows[:6]) is None
    assert _feed(DivergenceGuard(chance=10.0), rows[:5] + [(50, 4.0)] + rows[5:]) is None


def test_blow_up_fires_on_a_loss_far_above_its_minimum_and_its_start():
    rows = [(20, 2.0), (30, 1.0), (35, 0.8)] + [(35, 7.0)] * 2 + [(34, 30.0)] * 3  # 7 < 10 × 0.8
    d = _feed(DivergenceGuard(chance=10.0), rows)
    assert d is not None and d.rule == "blow-up" and d.epoch == 8 and "38x its minimum 0.8" in d.message
    # a loss that grows only because a method ramps its weight up (DKD's warm-up) stays within BLOWUP of its minimum
    warmup = [(20 + 4 * e, 1.0 + 0.4 * e) for e in range(20)]  # 1.0 → 8.6 while the accuracy rises
    assert _feed(DivergenceGuard(chance=10.0), warmup) is None
    # near convergence a tiny loss may jump ×20 without rising above where it started: not a blow-up
    assert _feed(DivergenceGuard(chance=10.0), [(50, 2.3), (99, 0.01)] + [(98, 0.2)] * 5) is None


def test_no_learning_fires_after_stuck_epochs_at_chance():
    d = _feed(DivergenceGuard(chance=10.4), [(11.7, 27.7), (9.1, 14.5), (9.6, 14.5), (10.3, 13.9), (9.3, 14.0)])
    assert d is not None and d.rule == "no learning" and d.epoch == 5 and "chance (10.4%)" in d.message
    assert _feed(DivergenceGuard(chance=10.0), [(11.0, 3.0)] * 4 + [(14.0, 2.0)] + [(11.0, 2.0)] * 4) is None


def test_guard_thresholds_are_those_documented():
    # docs/reliability.md states these; a change must update it
    assert (g.PATIENCE, g.LEARNED, g.COLLAPSE, g.BLOWUP, g.STUCK_BAND, g.STUCK_EPOCHS) == (3, 0.2, 0.5, 10.0, 0.02, 5)
    assert (g.EXPLODE, g.SLOW_MOTION, g.PROGRESS, g.ENDED_WITHIN) == (1e4, 0.05, 0.01, 2)


def _feed_moving(guard, rows):
    """Epoch summaries (acc, loss, weight_change) → the first Divergence, or None."""
    for epoch, (acc, loss, moved) in enumerate(rows, 1):
        d = guard.update(epoch, {"acc": acc, "loss": loss, "loss_ce": loss, "weight_change": moved})
        if d is not None:
            return d
    return None


def test_no_learning_says_whether_the_learning_rate_is_too_high_or_too_low():
    # lr = 5 on the MNIST-1D CNN (measured): at chance, the weights move by about their norm every epoch
    high = _feed_moving(DivergenceGuard(chance=10.3, lr=5.0), [(10.3, 15.2, 30.1), (9.4, 14.4, 0.9), (9.5, 14.5, 0.96),
                                                              (10.3, 13.9, 1.35), (9.2, 14.0, 1.22)])
    assert high is not None and high.rule == "no learning" and high.epoch == 5
    assert "the learning rate is too high" in high.message and "lower the learning rate (now 5)" in high.message
    # lr = 1e-5: the weights barely move and the loss is flat
    low = _feed_moving(DivergenceGuard(chance=10.3, lr=1e-5), [(8.0, 2.374, 2e-4), (7.8, 2.377, 2e-4),
                                                               (7.8, 2.372, 2e-4), (8.1, 2.374, 2e-4),
                                                               (7.7, 2.373, 2e-4)])
    assert low is not None and low.rule == "no learning" and "too low" in low.message
    assert "raise the learning rate (now 1e-05)" in low.message and "lower the learning rate" not in low.message
    # mnist1d/ce optim.lr=0.002 on 600 samples (measured): small steps, the loss falling, the accuracy rising from
    # below chance — learning slowly, which stopped the run at epoch 5 with "lower the learning rate" before
    slow = [(6.0, 2.373, 0.002), (6.5, 2.364, 0.0037), (8.8, 2.354, 0.0045), (6.0, 2.353, 0.0048),
            (10.4, 2.333, 0.0049), (7.1, 2.329, 0.0047), (7.7, 2.323, 0.0045), (9.8, 2.312, 0.0046)]
    assert _feed_moving(DivergenceGuard(chance=11.0, lr=0.002), slow) is None


def _step_guard(immediate):
    guard = DivergenceGuard(chance=10.0, lr=50.0, immediate=immediate)
    params = [torch.zeros(3, requires_grad=True)]
    guard.epoch_start(params)
    return guard, params


def test_an_exploding_loss_or_gradient_stops_at_the_step_on_cpu_and_at_the_epochs_end_deferred():
    t = torch.tensor
    guard, _ = _step_guard(immediate=True)
    assert guard.step(t(11.8), t(0.7), 1, 0) is None and guard.first_step == pytest.approx((11.8, 0.7))
    assert guard.step(t(1.4e3), t(131.0), 1, 1) is None  # 120x, 190x: not yet
    d = guard.step(t(1.4e5), t(775.0), 1, 2)  # the loss at 1.2e4x its first step's
    assert d is not None and d.rule == "explosion" and "at step 2 of epoch 1: the loss reached 1.4e+05" in d.message
    guard, _ = _step_guard(immediate=True)
    guard.step(t(2.0), t(0.01), 1, 0)
    d = guard.step(t(2.5), t(200.0), 1, 1)  # a finite loss, an exploding gradient
    assert d is not None and "the gradient norm reached 200" in d.message
    with pytest.raises(NonFiniteLossError, match="non-finite gradient norm at step 1 of epoch 1"):
        guard, _ = _step_guard(immediate=True)
        guard.step(t(2.0), t(1.0), 1, 0)
        guard.step(t(2.0), t(float("nan")), 1, 1)
    # deferred (GPU, torchrun): nothing per step, the epoch's maxima judged with its summary
    guard, params = _step_guard(immediate=False)
    for i, (loss, norm) in enumerate([(11.8, 0.7), (1.4e5, 775.0), (20.0, 3.0)]):
        assert guard.step(t(loss), t(norm), 1, i) is None
    stats = guard.epoch_stats(params)
    assert stats["step_loss_max"] == pytest.approx(1.4e5) and stats["step_loss_first"] == pytest.approx(11.8)
    d = guard.update(1, {"acc": 10.0, "loss": 30.0, "loss_ce": 30.0, **stats})
    assert d is not None and d.rule == "explosion" and "at epoch 1" in d.message
    # weights that a last, finite step made non-finite (2 steps per epoch at lr 50: NaN test logits, exit 2, before)
    guard, params = _step_guard(immediate=True)
    guard.step(t(2.0), t(1.0), 1, 0)
    with torch.no_grad():
        params[0].add_(1.0).mul_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="the weights became non-finite .* in epoch 1") as info:
        guard.update(1, {"acc": 10.0, "loss": 2.0, "loss_ce": 2.0, **guard.epoch_stats(params)})
    assert info.value.epoch == 1 and info.value.rule == "non-finite"
    # resumed: the first step's values come back from the log, not from the resumed run's first step
    again, params = _step_guard(immediate=True)
    again.update(1, {"acc": 30.0, "loss": 2.0, "loss_ce": 2.0, "step_loss_first": 11.8, "grad_norm_first": 0.7})
    again.epoch_start(params)
    assert again.step(t(1.3e5), t(1.0), 2, 0) is not None


def test_a_short_run_that_ends_while_a_rule_builds_is_reported_not_stopped():
    guard = DivergenceGuard(chance=10.3, lr=5.0)
    assert _feed_moving(guard, [(10.3, 15.2, 30.1), (9.4, 14.4, 0.9), (9.5, 14.5, 0.96), (10.3, 13.9, 1.35)]) is None
    d = guard.finish(4)
    assert d is not None and d.rule == "no learning"
    assert "had held for 4 of the 5 epochs that stop a run" in d.message and "too high" in d.message
    slow = DivergenceGuard(chance=11.0, lr=0.002)  # small steps: under-trained, not diverged
    _feed_moving(slow, [(6.0, 2.373, 0.002), (6.5, 2.364, 0.0037), (8.8, 2.354, 0.0045)])
    assert slow.finish(3) is None
    healthy = DivergenceGuard(chance=10.0)
    _feed_moving(healthy, [(30.0, 3.0, 1.0), (50.0, 2.0, 0.7), (60.0, 1.5, 0.3)])
    assert healthy.finish(3) is None


# ---------------------------------------------------------------------------------------------------------------
# the loop: stop or warn, what is kept
# ---------------------------------------------------------------------------------------------------------------
def _toy(n=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return x, (x[:, :3]).argmax(1)


class _Saboteur:
    """A batch transform that wrecks the labels from `epoch` on (a collapse on schedule)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, batch, epoch):
        if epoch >= self.epoch:
            batch.y = (batch.y + 1 + torch.arange(batch.y.shape[0]) % 2) % 3
        return batch


def _toy_run(tmp_path, on_divergence="stop", epochs=12):
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    method = methods.create("ce", student, None, 3)
    x, y = _toy(192)
    train = BatchLoader(x, y, 32, seed=0)
    test = BatchLoader(*_toy(96, 1), 96, shuffle=False)
    s = LoopSettings(epochs=epochs, lr=0.2, out_dir=tmp_path, progress=False, tensorboard=False,
                     on_divergence=on_divergence)
    return train_loop(method, train, test, 3, s, batch_transform=_Saboteur(6))


def test_loop_stops_and_keeps_the_last_good_and_the_best_checkpoints(tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        _toy_run(tmp_path)
    e = info.value
    assert e.rule == "collapse" and e.epoch >= 8
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == e.epoch and records[-1]["divergence"] == "collapse"  # the evidence is logged
    saved = json.loads(load_tensors(tmp_path / "checkpoint.safetensors")[1]["info"])
    # the stretch of PATIENCE bad epochs was never checkpointed: the file holds the last good state
    assert saved["epoch"] == e.epoch - g.PATIENCE
    assert records[saved["epoch"] - 1].get("divergence") is None
    best = saved["best"]
    assert best["epoch"] <= saved["epoch"] and (tmp_path / "best.safetensors").is_file()
    assert f"checkpoint.safetensors (epoch {saved['epoch']}, the last good state)" in str(e)
    assert f"best.safetensors (epoch {best['epoch']}" in str(e)
    assert not (tmp_path / "model.safetensors").exists()  # no "result" of a collapsed run


def test_warn_trains_on_and_says_so(tmp_path):
    with pytest.warns(RuntimeWarning, match="training collapsed"):
        result = _toy_run(tmp_path, on_divergence="warn")
    assert [r["epoch"] for r in result.history] == list(range(1, 13))
    assert sum("divergence" in r for r in result.history) == 1  # warned once
    assert (tmp_path / "model.safetensors").is_file()


def test_non_finite_loss_is_a_kind_of_divergence():
    assert issubclass(NonFiniteLossError, TrainingDiverged) and kdlab.TrainingDiverged is TrainingDiverged
    assert GuardNonFinite is NonFiniteLossError  # one class, defined by the guard, re-exported by the loop


def test_grad_clip_bounds_the_global_gradient_norm(monkeypatch):
    norms = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        out = real(params, max_norm, *a, **k)
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    train = BatchLoader(*_toy(64), 32, seed=0)
    train_loop(methods.create("ce", student, None, 3), train, None, 3,
               LoopSettings(epochs=1, lr=0.1, progress=False, grad_clip=0.01))
    assert len(norms) == 2 and all(n <= 0.01 * (1 + 1e-5) for n in norms)


# ---------------------------------------------------------------------------------------------------------------
# real runs
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist1d():
    s = load_dataset("mnist1d")
    return (s.x_train, s.y_train), (s.x_test, s.y_test)


@pytest.mark.slow
def test_dkd_on_a_bn_free_mlp_at_lr_005_collapses_and_is_stopped(tmp_path, mnist1d):
    """The issue's case: kdlab.fit, DKD with CIFAR-100's β = 8 (given: left at its default, β is scaled to 10
    classes, 8·9/99, and this run does not collapse), T = 4, warm-up 20, a BN-free MLP at lr 0.05."""
    train, test = mnist1d
    torch.manual_seed(0)
    teacher = kdlab.fit(models.create("mnist1d_mlp", 10), None, train, test, method="ce", epochs=8, lr=0.05).student
    torch.manual_seed(0)
    with pytest.raises(kdlab.TrainingDiverged) as info:
        kdlab.fit(models.create("mnist1d_mlp", 10), teacher, train, test, method="dkd", epochs=30, lr=0.05,
                  method_args={"warmup": 20, "beta": 8.0}, out_dir=tmp_path / "run")  # the published warm-up and β
    e = info.value
    assert e.rule == "collapse" and 10 <= e.epoch <= 25, str(e)
    assert "dkd" in str(e) and "beta" in str(e) and "grad_clip" in str(e)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    peak = max(r["train"]["acc"] for r in rows)
    assert peak > 50 and rows[-1]["train"]["acc"] < (10 + peak) / 2  # it really had learned, then collapsed
    tensors, meta = load_tensors(tmp_path / "run" / "checkpoint.safetensors")
    info_ = json.loads(meta["info"])
    assert info_["epoch"] == e.epoch - g.PATIENCE and all(torch.isfinite(t).all() for t in tensors.values())
    best_w, _ = load_tensors(tmp_path / "run" / "best.safetensors")
    net = models.create("mnist1d_mlp", 10)
    net.load_state_dict(best_w)  # the best weights load into the plain student
    assert info_["best"]["acc"] > 45
    assert not (tmp_path / "run" / "final.json").exists()  # no report of the collapsed student


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("guard") / "teacher"
    assert main(["teacher", "mnist1d/teacher", f"out_dir={out}", "data.train_subset=2000", "data.test_subset=200",
                 "teacher.arch=mnist1d_cnn_small", "optim.epochs=5", "optim.milestones=[4]",
                 "run.progress=false", "run.threads=1"]) == 0
    return out / "model.safetensors"


def test_cli_a_bn_student_at_lr_5_does_not_exit_0_at_chance(tmp_path, trained_teacher, capsys):
    code = main(["train", "mnist1d/kd", f"out_dir={tmp_path / 'r'}", f"teacher.checkpoint={trained_teacher}",
                 "teacher.arch=mnist1d_cnn_small", "data.train_subset=2000", "data.test_subset=200", "optim.lr=5",
                 "optim.epochs=8", "run.progress=false", "eval.every=8"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert err.count("\n") == 1 and "not learning" in err and "chance" in err and "lower the learning rate" in err
    assert "lower the weight of the largest term 'kd' (the method's weights, method.args / kdlab.fit's method_args: " \
           "kd_weight 0.9)" in err
    assert not (tmp_path / "r" / "final.json").exists()
    # stopped.json says so, and `kdlab table` counts the run as failed instead of leaving its seed out unsaid
    stopped = json.loads((tmp_path / "r" / "stopped.json").read_text())
    assert stopped["stopped"]["rule"] == "no learning" and stopped["method"] == "kd"
    assert stopped["teacher"]["arch"] == "mnist1d_cnn_small" and stopped["config"]["optim"]["lr"] == 5
    assert main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| kd | 0 + 1 failed |" in out and f"{tmp_path / 'r'}: the divergence guard stopped it at epoch" in out


def test_cli_lr_50_is_not_exit_0(tmp_path, trained_teacher, capsys):
    code = main(["train", "mnist1d/kd", f"out_dir={tmp_path / 'r'}", f"teacher.checkpoint={trained_teacher}",
                 "teacher.arch=mnist1d_cnn_small", "data.train_subset=1000", "data.test_subset=200", "optim.lr=50",
                 "optim.epochs=6", "run.progress=false"])
    err = capsys.readouterr().err
    assert code in (3, 4), err
    assert err.startswith("kdlab: stopped:") and err.count("\n") == 1


def test_cli_lr_50_stops_in_its_first_epoch(tmp_path, trained_teacher, capsys):
    # the case: 4 epochs of mnist1d/kd at lr 50 on the BN student (train loss up to 1e22-1e23 in epoch 1,
    # then exit 0 at chance or a NaN in epoch 2): the step watch stops it within its first epoch
    out = tmp_path / "r"
    code = main(["train", "mnist1d/kd", f"out_dir={out}", f"teacher.checkpoint={trained_teacher}",
                 "teacher.arch=mnist1d_cnn_small", "optim.lr=50", "optim.epochs=4", "run.progress=false"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert err.count("\n") == 1 and "training exploded at step" in err and "of epoch 1:" in err
    assert "lower the learning rate (now 50)" in err
    assert not (out / "metrics.jsonl").exists() and not (out / "final.json").exists()  # no epoch was completed


def test_cli_a_slow_learning_rate_is_not_stopped_and_a_tiny_one_is_told_to_raise_it(tmp_path, capsys):
    # mnist1d/ce at lr 0.002 on 600 samples stopped at epoch 5 with "lower the learning rate" while its test
    # accuracy rose; it trains to the end now
    args = ["train", "mnist1d/ce", "data.num_samples=600", "teacher.checkpoint=null", "run.progress=false",
            "eval.every=5"]
    assert main([*args, "optim.lr=0.002", f"out_dir={tmp_path / 'slow'}"]) == 0, capsys.readouterr().err
    final = json.loads((tmp_path / "slow" / "final.json").read_text())
    assert final["divergence"] is None and final["student"]["last_acc"] > 10.0
    # lr 1e-5: the weights hardly move and the loss is flat: stopped, told to raise the learning rate
    assert main([*args, "optim.lr=1e-5", "optim.epochs=8", f"out_dir={tmp_path / 'tiny'}"]) == 4
    err = capsys.readouterr().err
    assert "not learning" in err and "raise the learning rate (now 1e-05)" in err
    assert "lower the learning rate" not in err


def test_cli_a_short_run_at_chance_is_reported_in_final_json(tmp_path, trained_teacher):
    # lr 5 for 4 epochs (one fewer than the no-learning patience): exit 0 at chance before, with nothing said
    out = tmp_path / "r"
    with pytest.warns(RuntimeWarning, match="the run ended while the divergence guard's 'no learning' rule"):
        assert main(["train", "mnist1d/kd", f"out_dir={out}", f"teacher.checkpoint={trained_teacher}",
                     "teacher.arch=mnist1d_cnn_small", "data.train_subset=2000", "data.test_subset=200",
                     "optim.lr=5", "optim.epochs=4", "run.progress=false"]) == 0
    d = json.loads((out / "final.json").read_text())["divergence"]
    assert d["rule"] == "no learning" and d["ended"] and "too high" in d["message"]


# ---------------------------------------------------------------------------------------------------------------
# never on the shipped recipes
# ---------------------------------------------------------------------------------------------------------------
def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _chance(n=None):
    y = load_dataset("mnist1d").y_train[:n]
    return 100.0 * float(torch.bincount(y).max()) / y.numel()


def _far_from_every_rule(rows, chance):
    assert all("divergence" not in r for r in rows)
    m = g.margins(rows, chance)
    # full-length recipes measured (docs/reliability.md, benchmarks/guard_margins.py): collapse ratio ≥ 0.93,
    # blow-up ≤ 2.5, stuck 0, step loss and gradient norm at most ~30x the first step's
    assert m["collapse_ratio"] > 0.8 and m["blowup"] < g.BLOWUP / 2 and m["stuck"] == 0, m
    assert 0 < max(m["explode_loss"], m["explode_grad"]) < g.EXPLODE / 100, m


@pytest.fixture(scope="module")
def demo_teacher(tmp_path_factory):
    """The demo's quick teacher (`kdlab demo --quick`), trained through the guard as well."""
    from kdlab import builder, demo

    out = tmp_path_factory.mktemp("demo_teacher")
    ov = demo._scaled(demo._recipe("teacher"), demo.QUICK_TEACHER_EPOCHS)
    # one thread: a module fixture runs before the per-test one-thread fixture, and 2 threads per xdist worker on
    # 2 cores are several times slower
    builder.train_teacher(builder.load_config("mnist1d/teacher", [*ov, f"out_dir={out}", "run.progress=false",
                                                              "run.threads=1"]))
    _far_from_every_rule(_rows(out), _chance())
    return out / "model.safetensors"


def _demo_methods():
    from kdlab import demo

    return demo.DEMO_METHODS + demo.CHECK_METHODS


@pytest.mark.slow
@pytest.mark.parametrize("name", _demo_methods())
def test_the_guard_never_fires_on_a_shipped_recipe_at_the_demos_settings(tmp_path, demo_teacher, name):
    """Every shipped MNIST-1D student recipe as `kdlab demo --quick` runs it (10 epochs, milestones and warm-up
    scaled, the quick teacher), through the guard, stays far from every threshold."""
    from kdlab import builder, demo

    ov = [*demo._scaled(demo._recipe(name), demo.QUICK_EPOCHS), f"teacher.checkpoint={demo_teacher}",
          f"out_dir={tmp_path}", "run.progress=false"]
    builder.distil(builder.load_config(f"mnist1d/{name}", ov))
    _far_from_every_rule(_rows(tmp_path), _chance())


@pytest.mark.slow
def test_the_guard_never_fires_on_the_fidelity_recipes(tmp_path):
    """The fidelity experiments' teacher and student recipes at full length (500 signals, 30 epochs)."""
    from kdlab import builder

    teacher = tmp_path / "teacher"
    builder.train_teacher(builder.load_config("mnist1d/fidelity_teacher", [f"out_dir={teacher}", "run.progress=false"]))
    builder.distil(builder.load_config("mnist1d/fidelity_kd", [f"out_dir={tmp_path / 'kd'}", "run.progress=false",
                                                           f"teacher.checkpoint={teacher / 'model.safetensors'}"]))
    for out in (teacher, tmp_path / "kd"):
        _far_from_every_rule(_rows(out), _chance(500))


def test_a_run_without_labelled_samples_has_no_train_accuracy_and_no_accuracy_rule(tmp_path, trained_teacher):
    """distill_data MixUp on every sample (mixup_fraction 1): no sample keeps its label, so there is no training
    accuracy to judge (it was 0 % before, which the no-learning rule would read as 'at chance')."""
    out = tmp_path / "r"
    assert main(["train", "mnist1d/kd", f"out_dir={out}", f"teacher.checkpoint={trained_teacher}",
                 "teacher.arch=mnist1d_cnn_small", "data.train_subset=512", "data.test_subset=100",
                 "distill_data.mixup_alpha=1.0", "optim.epochs=6", "run.progress=false", "run.threads=1"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train"]["acc"] is None for r in rows) and all("divergence" not in r for r in rows)
    assert _feed(DivergenceGuard(chance=10.0), [(None, 2.0)] * 8) is None


class _NaNWhenEvaluated(torch.nn.Module):
    """Trains with finite losses; its eval-mode logits are NaN (as overflowed weights or BN statistics give)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        z = self.fc(x)
        return z if self.training else z * float("nan")


def test_nan_test_logits_after_finite_training_losses_stop_the_run_as_non_finite(tmp_path):
    # digits at lr 50 with 2 steps an epoch: finite losses, then NaN test logits, which ended in a ValueError (exit 2)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    with pytest.raises(NonFiniteLossError, match=r"test logits are NaN or inf after epoch 1 \(8 of 8 examples\)") \
            as info:
        kdlab.fit(_NaNWhenEvaluated(), None, (x, y), eval=(x[:8], y[:8]), method="ce", epochs=2, batch_size=16,
                  lr=0.1, out_dir=tmp_path / "r")
    assert info.value.epoch == 1 and info.value.rule == "non-finite"
    assert json.loads((tmp_path / "r" / "stopped.json").read_text())["stopped"]["rule"] == "non-finite"
