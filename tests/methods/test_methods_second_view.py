"""distill_data.second_view: R2KD's augmented view x̂ for any logit method (kdlab.methods.second_view).

The term is the method's own loss without CE on (student(x̂), teacher(x̂)); R2KD's own second view is unchanged;
methods for which the term is not defined are refused by name; the teacher cache serves the clean view only; a
run resumed from its checkpoint ends bit for bit like an uninterrupted one.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from kdlab import builder, models
from kdlab._checks import SettingError
from kdlab.data import autoaugment_like, cutmix, cutout, mixup
from kdlab.data.batch import Batch
from kdlab.data.second_view import ViewSpec, draw_view
from kdlab.methods.second_view import SecondView
from kdlab.models import save_model
from kdlab.teachers.frozen import FrozenTeacher


def _with_view(method, kind="cutmix", weight=1.0, **spec):
    method.set_second_view(SecondView(ViewSpec(kind, **spec), weight))
    return method


@pytest.mark.parametrize("name", ["kd", "dkd", "wttm", "dist"])
def test_the_term_is_the_methods_own_loss_without_ce_on_the_view(make_method, make_batch, name):
    batch = make_batch(n=8)
    method = _with_view(make_method(name), "cutmix", weight=0.5)
    torch.manual_seed(3)
    out = method(batch, 5)
    plain = make_method(name)(batch, 5)
    assert set(out.losses) == set(plain.losses) | {"second_view"}
    for k, v in plain.losses.items():  # the clean view's terms are untouched
        torch.testing.assert_close(out.losses[k], v)
    # replay x̂ from the same global RNG state; its label is the larger part's (DKD reads it)
    torch.manual_seed(3)
    x_hat, lam, perm = cutmix(batch.x, None, alpha=1.0)
    y_hat = batch.y if lam >= 0.5 else batch.y[perm]
    view = make_method(name)(Batch(x=x_hat, y=y_hat, index=torch.full_like(y_hat, -1)), 5)
    expected = sum(v for k, v in view.losses.items() if k != "ce")
    torch.testing.assert_close(out.losses["second_view"], 0.5 * expected)
    assert out.losses["second_view"].requires_grad


@pytest.mark.parametrize("kind, fn", [("mixup", lambda x: mixup(x, None, alpha=0.2)[0]),
                                      ("cutout", lambda x: cutout(x, None, size=8))])
def test_each_view_is_drawn_by_the_shared_functions(make_batch, kind, fn):
    x = make_batch(n=8).x
    torch.manual_seed(1)
    got, _ = draw_view(ViewSpec(kind), x)
    torch.manual_seed(1)
    assert torch.equal(got, fn(x))


def test_autoaugment_view_takes_the_loaders_normalisation_and_policy(make_method, make_batch):
    batch = make_batch(n=4, shape=(3, 8, 8))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    view = SecondView(ViewSpec("autoaugment", policy="imagenet"))
    view.setup_data(type("L", (), {"mean": mean, "std": std})())
    teacher = make_method("kd", student="resnet8", teacher="resnet8", shape=(3, 8, 8)).teacher
    torch.manual_seed(2)
    got, _ = view.draw(batch, teacher)
    torch.manual_seed(2)
    assert torch.equal(got.x, autoaugment_like(batch.x, None, mean=mean, std=std, policy="imagenet"))


def test_cutmixpick_keeps_the_pools_most_uncertain_samples_with_their_teacher_logits(make_method, make_batch):
    batch = make_batch(n=6)
    method = make_method("kd")
    view = SecondView(ViewSpec("cutmixpick", pick_pool=3))
    torch.manual_seed(4)
    got, v_hat = view.draw(batch, method.teacher)
    torch.manual_seed(4)
    pool = torch.cat([cutmix(batch.x, None, alpha=1.0)[0] for _ in range(3)])
    v_pool = method.teacher.logits(pool)
    q = torch.log_softmax(v_pool, 1)
    keep = (-(q.exp() * q).sum(1)).topk(6).indices
    assert torch.equal(got.x, pool[keep]) and torch.equal(v_hat, v_pool[keep])
    assert got.view is None and (got.index == -1).all()  # never a stored view: no cache can serve it


@pytest.mark.parametrize("kind", ["cutmix", "mixup", "cutout", "autoaugment", "cutmixpick"])
def test_r2kds_second_view_is_unchanged(make_method, make_batch, kind):
    """R2KD draws through kdlab.data.second_view now: the same draws as its former inline code, bit for bit."""
    shape = (3, 8, 8) if kind == "autoaugment" else (1, 40)
    arch = "resnet8" if kind == "autoaugment" else None
    nets = {"student": arch, "teacher": arch} if arch else {}
    method = make_method("r2kd", {"augment": kind, "cutout_size": 4}, shape=shape, **nets)
    x = make_batch(n=8, shape=shape).x
    torch.manual_seed(9)
    x_hat, v_hat = method.second_view(x)
    torch.manual_seed(9)  # the former code, step by step
    hp, signal = method.hp, method.teacher_signal
    if kind == "cutmixpick":
        pool = torch.cat([cutmix(x, None, alpha=hp.cutmix_alpha)[0] for _ in range(hp.pick_pool)])
        v_pool = signal.logits(pool)
        log_q = torch.log_softmax(v_pool.float(), dim=1)
        keep = (-(log_q.exp() * log_q).sum(dim=1)).topk(x.shape[0]).indices
        ref, v_ref = pool[keep], v_pool[keep]
    else:
        ref = {"cutmix": lambda: cutmix(x, None, alpha=hp.cutmix_alpha)[0],
               "mixup": lambda: mixup(x, None, alpha=hp.mixup_alpha)[0],
               "cutout": lambda: cutout(x, None, size=hp.cutout_size),
               "autoaugment": lambda: autoaugment_like(x, None, mean=hp.input_mean, std=hp.input_std)}[kind]()
        v_ref = signal.logits(ref)
    assert torch.equal(x_hat, ref) and torch.equal(v_hat, v_ref)


@pytest.mark.parametrize("method, why", [
    ("{name: r2kd}", "method 'r2kd': r2kd draws its own second view; set method.args.augment instead"),
    ("{name: mlkd}", "method 'mlkd': mlkd has its own strong view"),
    ("{name: fitnet}", "method 'fitnet': it reads the teacher beyond its logits"),
    ("{name: ce}", "method 'ce': it has no distillation term"),
    ("{name: kd, add: [{name: at, weight: 1.0}]}", "method 'at': it reads the teacher beyond its logits"),
])
def test_methods_without_a_defined_term_are_refused_in_one_line(tmp_path, method, why):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {{name: mnist1d}}\nmethod: {method}\ndistill_data: {{second_view: cutmix}}\n")
    with pytest.raises(SettingError, match="distill_data.second_view=cutmix cannot be used with " + why) as e:
        builder.plan(builder.load_config(str(cfg)), 10, (1, 40))
    assert "\n" not in str(e.value)


def test_tabular_inputs_are_refused_for_box_views(make_method):
    method = make_method("kd", shape=(40,))
    view = SecondView(ViewSpec("cutmix"))
    with pytest.raises(SettingError, match=r"distill_data.second view \(cutmix\) needs images .* shape \(2, 40\)"):
        view.check_input(torch.zeros(2, 40))
    SecondView(ViewSpec("mixup")).check_input(torch.zeros(2, 40))  # MixUp mixes any input


# ----------------------------------------------------------------------------------------------- whole runs
@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_model(path, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    return path


def _run(tmp_path, teacher, out, *overrides, epochs=3, method="kd"):
    cfg = builder.load_config(None, [
        "data.name=mnist1d", "data.train_subset=256", "data.test_subset=64", f"teacher.checkpoint={teacher}",
        "student.arch=mnist1d_cnn_small", f"method.name={method}", f"optim.epochs={epochs}", "optim.batch_size=64",
        "optim.milestones=[2]", "run.progress=false", "run.threads=1", "run.tensorboard=false",
        f"out_dir={tmp_path / out}", *overrides])
    builder.distil(cfg)
    return json.loads((tmp_path / out / "final.json").read_text()), load_file(tmp_path / out / "model.safetensors")


def test_the_cache_serves_the_clean_view_and_the_live_teacher_the_view(tmp_path, teacher):
    view = ["distill_data.second_view=cutmixpick", "data.augment=default"]
    # enabled=true: a run whose cache could not be exact would be refused (cached_teacher), so this one uses it
    _, w_cached = _run(tmp_path, teacher, "cached", *view, "teacher.cache.enabled=true")
    _, w_live = _run(tmp_path, teacher, "live", *view, "teacher.cache.enabled=false")
    for k in w_live:
        torch.testing.assert_close(w_cached[k], w_live[k], rtol=1e-5, atol=1e-6)
    rows = [json.loads(line)["train"] for line in (tmp_path / "cached" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_second_view"] > 0 for r in rows)


def test_a_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path, teacher):
    view = ["distill_data.second_view=cutmix", "distill_data.second_view_weight=0.5"]
    _, full = _run(tmp_path, teacher, "full", *view, epochs=3)
    _run(tmp_path, teacher, "part", *view, epochs=1)
    _, resumed = _run(tmp_path, teacher, "part", *view, epochs=3)  # from the checkpoint of epoch 1
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    _, without = _run(tmp_path, teacher, "without", epochs=3)
    assert any(not torch.equal(full[k], without[k]) for k in full)  # the view really changed training


@pytest.mark.parametrize("overrides, message", [
    (["distill_data.second_view_pick_pool=3"], "second_view_pick_pool is set but distill_data.second_view is 'none'"),
    (["distill_data.second_view=mixup", "distill_data.second_view_cutout_size=4"],
     "second_view_cutout_size is set but distill_data.second_view is 'mixup', which does not use it"),
    (["distill_data.second_view=cutmix", "distill_data.temperatures={data: 2.0}"], "has no source temperature"),
    (["distill_data.second_view=randaugment"], "second_view"),
])
def test_the_config_refuses_parameters_of_another_view(overrides, message):
    with pytest.raises(ValueError, match=message):
        builder.load_config(None, overrides)


def test_the_second_view_is_in_the_identity_but_not_a_batch_policy():
    plain = builder.load_config(None, [])
    view = builder.load_config(None, ["distill_data.second_view=cutmix"])
    assert view.distill_data.policy == "none"  # batches reach the method untouched (the cache stays exact)
    ids = [builder.plan(c, 10, (1, 40)).identity for c in (plain, view)]
    assert ids[1]["distill_data.second_view"] == "cutmix" and ids[0]["distill_data.second_view"] == "none"


def test_r2kd_draws_autoaugments_imagenet_policy_when_asked(make_method, make_batch):
    method = make_method("r2kd", {"augment": "autoaugment", "autoaugment_policy": "imagenet"}, student="resnet8",
                         teacher="resnet8", shape=(3, 8, 8))
    x = make_batch(n=8, shape=(3, 8, 8)).x
    torch.manual_seed(4)
    x_hat, _ = method.second_view(x)
    torch.manual_seed(4)
    hp = method.hp
    assert torch.equal(x_hat, autoaugment_like(x, None, mean=hp.input_mean, std=hp.input_std, policy="imagenet"))


def test_the_tiny_imagenet_res56_res20_recipe_trains_a_step_with_the_imagenet_policy():
    cfg = builder.load_config("tiny_imagenet/resnet56-resnet20/r2kd")
    assert (cfg.method.args["augment"], cfg.method.args["autoaugment_policy"]) == ("autoaugment", "imagenet")
    torch.manual_seed(0)
    method = builder.plan(cfg, 200, (3, 64, 64)).build_method(
        models.create("resnet20", 200), FrozenTeacher(models.create("resnet56", 200)), 200)
    g = torch.Generator().manual_seed(1)
    batch = Batch(x=torch.randn(4, 3, 64, 64, generator=g), y=torch.randint(0, 200, (4,), generator=g),
                  index=torch.arange(4))
    out = method(batch, 1)
    assert set(out.losses) == {"ce", "value", "value_aug"} and all(torch.isfinite(v) for v in out.losses.values())
