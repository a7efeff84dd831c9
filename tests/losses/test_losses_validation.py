"""Bad input raises ValueError naming the argument; the validation switch turns the synchronising checks off."""

import pytest
import torch

import kdlab.losses as L


def _zv(n=4, c=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)


def _y(n=4, c=5):
    return torch.arange(n) % c


# every loss as (z, v, **kw) -> loss, with its required extra argument filled in
ALL = {
    "kd": lambda z, v, **kw: L.kd_loss(z, v, **kw),
    "dkd": lambda z, v, **kw: L.dkd_loss(z, v, _y(*z.shape) if z.dim() == 2 else _y(), **kw),
    "cakd": lambda z, v, **kw: L.cakd_loss(z, v, torch.zeros(z.shape, dtype=torch.bool), **kw),
    "ttm": lambda z, v, **kw: L.ttm_loss(z, v, **kw),
    "wttm": lambda z, v, **kw: L.wttm_loss(z, v, **kw),
    "dist": lambda z, v, **kw: L.dist_loss(z, v, **kw),
    "binary_kl": lambda z, v, **kw: L.binary_kl_loss(z, v, **kw),
    "binary_kl_norm": lambda z, v, **kw: L.binary_kl_norm_loss(z, v, **kw),
    "r2kd_value": lambda z, v, **kw: L.r2kd_value_loss(z, v, **kw),
    "spearman": lambda z, v, **kw: L.spearman_loss(z, v, **kw),
    "cmkd": lambda z, v, **kw: L.cmkd_loss(z, v, **kw),
}
HAS_TEMPERATURE = sorted(set(ALL) - {"ttm", "wttm"})


@pytest.mark.parametrize("name", sorted(ALL))
def test_shape_errors_name_the_argument(name):
    z, v = _zv()
    with pytest.raises(ValueError, match="teacher_logits"):
        ALL[name](z, torch.randn(4, 6))
    with pytest.raises(ValueError, match="teacher_logits"):
        ALL[name](z, torch.randn(3, 5))
    with pytest.raises(ValueError, match="student_logits"):
        ALL[name](z[0], v[0])
    with pytest.raises(ValueError, match="student_logits"):
        ALL[name](z[:, :1], v[:, :1])  # one class
    with pytest.raises(ValueError, match="student_logits"):
        ALL[name](z.reshape(2, 2, 5), v.reshape(2, 2, 5))
    with pytest.raises(ValueError, match="student_logits"):
        ALL[name](z.long(), v)  # integer logits
    with pytest.raises(ValueError, match="teacher_logits"):
        ALL[name](z, v.numpy())


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_name_the_argument(name, bad):
    z, v = _zv()
    z_bad, v_bad = z.clone(), v.clone()
    z_bad[1, 2] = bad
    v_bad[3, 0] = bad
    with pytest.raises(ValueError, match="student_logits"):
        ALL[name](z_bad, v)
    with pytest.raises(ValueError, match="teacher_logits"):
        ALL[name](z, v_bad)


@pytest.mark.parametrize("name", HAS_TEMPERATURE)
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "4", None, True, torch.tensor(4.0)])
def test_bad_temperature(name, bad):
    z, v = _zv()
    with pytest.raises(ValueError, match="temperature"):
        ALL[name](z, v, temperature=bad)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("bad", ["avg", "batchmean", None, 1])
def test_bad_reduction(name, bad):
    z, v = _zv()
    with pytest.raises(ValueError, match="reduction"):
        ALL[name](z, v, reduction=bad)


@pytest.mark.parametrize(
    "target",
    [
        torch.tensor([0, 1, 2, 5]),  # = C
        torch.tensor([0, -1, 2, 3]),
        torch.tensor([0.0, 1.0, 2.0, 3.0]),  # float labels
        torch.tensor([True, False, True, False]),
        torch.tensor([[0, 1, 2, 3]]),  # wrong shape
        torch.tensor([0, 1, 2]),  # wrong N
        [0, 1, 2, 3],  # not a tensor
    ],
)
def test_bad_target(target):
    z, v = _zv()
    with pytest.raises(ValueError, match="target"):
        L.dkd_loss(z, v, target)
    with pytest.raises(ValueError, match="target"):
        L.dkd_parts(z, v, target)
    with pytest.raises(ValueError, match="target"):
        L.strong_set("target", v, target=target)


def test_bad_hyperparameters_name_the_argument():
    z, v = _zv()
    y = _y()
    mask = L.strong_set_topk(v, 2)
    cases = [
        (lambda: L.dkd_loss(z, v, y, alpha=-1.0), "alpha"),
        (lambda: L.dkd_loss(z, v, y, beta=float("nan")), "beta"),
        (lambda: L.cakd_loss(z, v, mask, gamma=-0.1), "gamma"),
        (lambda: L.ttm_loss(z, v, gamma=0.0), "gamma"),
        (lambda: L.wttm_loss(z, v, gamma=-0.2), "gamma"),
        (lambda: L.power_transform(v, gamma=0.0), "gamma"),
        (lambda: L.dist_loss(z, v, beta=-1.0), "beta"),
        (lambda: L.dist_loss(z, v, gamma=-1.0), "gamma"),
        (lambda: L.spearman_loss(z, v, soft=True, kappa=0.0), "kappa"),
        (lambda: L.spearman_loss(z, v, soft="yes"), "soft"),
        (lambda: L.cmkd_loss(z, v, kappa=-1.0), "kappa"),
        (lambda: L.cmkd_loss(z, v, logit_standardization=1), "logit_standardization"),
        (lambda: L.logit_standardize(z, eps=0.0), "eps"),
        (lambda: L.logit_standardize(z[:, :1]), "^u "),
        (lambda: L.logit_standardize(torch.arange(5)), "^u "),
        (lambda: L.soft_rank(z, kappa=0.0), "kappa"),
        (lambda: L.soft_rank(z, max_chunk_elements=0), "max_chunk_elements"),
        (lambda: L.pearson_rows(z, v[:, :3]), "^b "),
        (lambda: L.cosine_similarity_rows(z, v, eps=-1.0), "eps"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


def test_bad_masks_and_strong_set_arguments():
    z, v = _zv()
    with pytest.raises(ValueError, match="strong_mask"):
        L.cakd_loss(z, v, torch.zeros(4, 5))  # float mask
    with pytest.raises(ValueError, match="strong_mask"):
        L.kl_decomposition(z, v, torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="strong_mask"):
        L.cakd_loss(z, v, [[True] * 5] * 4)
    with pytest.raises(ValueError, match="^k "):
        L.strong_set_topk(v, 0)
    with pytest.raises(ValueError, match="^k "):
        L.strong_set_topk(v, 6)
    with pytest.raises(ValueError, match="threshold"):
        L.strong_set_mass(v, 1.5)
    with pytest.raises(ValueError, match="threshold"):
        L.strong_set_mass(v, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        L.strong_set_mass(v, 0.9, temperature=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        L.strong_set_topk(v[0])
    with pytest.raises(ValueError, match="num_classes"):
        L.strong_set_target(_y(), 1)
    with pytest.raises(ValueError, match="rule"):
        L.strong_set("entropy", v)
    with pytest.raises(ValueError, match="target"):
        L.strong_set("target", v)
    with pytest.raises(ValueError, match="threshold"):
        L.strong_set("topk", v, threshold=0.5)  # option of another rule


def test_validation_switch_skips_only_the_synchronising_checks():
    z, v = _zv()
    z_nan = z.clone()
    z_nan[0, 0] = float("nan")
    assert L.validation_enabled()
    with L.validation(False):
        assert not L.validation_enabled()
        assert torch.isnan(L.kd_loss(z_nan, v))  # no host-syncing finite check
        with pytest.raises(ValueError, match="teacher_logits"):
            L.kd_loss(z, v[:, :3])  # shape checks cost nothing and stay on
        with pytest.raises(ValueError, match="temperature"):
            L.kd_loss(z, v, temperature=0.0)
    assert L.validation_enabled()
    with pytest.raises(ValueError, match="student_logits"):
        L.kd_loss(z_nan, v)
    # the context manager restores the previous state even after an exception
    with pytest.raises(RuntimeError):
        with L.validation(False):
            raise RuntimeError("boom")
    assert L.validation_enabled()
    L.set_validation(False)
    assert not L.validation_enabled()
    L.set_validation(True)
    with pytest.raises(ValueError, match="enabled"):
        L.set_validation("no")


def test_public_api_is_exported():
    required = {
        "kd_loss", "dkd_loss", "kl_decomposition", "cakd_loss", "ttm_loss", "wttm_loss", "dist_loss",
        "binary_kl_loss", "binary_kl_norm_loss", "r2kd_value_loss", "spearman_loss", "cmkd_loss",
        "logit_standardize", "strong_set_target", "strong_set_topk", "strong_set_mass", "strong_set",
        "pearson_distance_rows", "set_validation", "validation",
        "ofd_loss", "ofd_margin", "hcl_loss", "crd_loss",  # feature losses (docs/reference/methods.md §14–§16)
    }
    assert required <= set(L.__all__)
    assert all(callable(getattr(L, name)) for name in L.__all__ if not name.isupper())  # constants: STRONG_SET_RULES, ...
    assert {"nkd_loss", "mlkd_loss", "mlkd_parts", "ctkd_loss", "sdd_loss", "reverse_gradient", "curriculum_lambda",
            "curriculum_temperature"} <= set(L.__all__)
