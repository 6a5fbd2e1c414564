"""The MAML family's float64 spec (``metalearn_shared/models/maml.py``) against finite
differences: the exact Hessian-vector product, and the second-order meta-gradient of every
learner (first-order MAML: the query gradient at the adapted weights, by its definition)."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared.config import BackboneConfig
from metalearn_shared.models import maml as M

CLASSES = [M.MAMLConfig, M.FOMAMLConfig, M.MetaSGDConfig, M.ANILConfig]


def _problem(cls: type, seed: int = 0, steps: int = 2):
    rng = np.random.default_rng(seed)
    config = cls(net="mlp", hidden=5, ways=3, inner_steps=steps, inner_lr=0.5,
                 backbone=BackboneConfig(image_size=16))
    params = {p.name: rng.normal(0.0, 0.3, p.shape) for p in M.param_spec(config)}
    for name in params:
        if name.startswith("inner_lr."):
            params[name] = rng.uniform(0.2, 0.6, params[name].shape)
    episode = (rng.uniform(0, 1, (6, 16, 16)), np.array([0, 1, 2, 0, 1, 2]),
               rng.uniform(0, 1, (6, 16, 16)), np.array([0, 1, 2, 2, 1, 0]))
    return config, params, episode


def _finite_difference(f, params, rng, per_array: int = 5, eps: float = 1e-5):
    """``{name: [(index, central difference)]}`` at a few random elements of every array."""
    out = {}
    for name, value in params.items():
        flat = value.reshape(-1)
        picks = []
        for i in rng.choice(flat.size, min(per_array, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = f(params)
            flat[i] = old - eps
            down = f(params)
            flat[i] = old
            picks.append((int(i), (up - down) / (2 * eps)))
        out[name] = picks
    return out


def test_hessian_vector_product_is_exact():
    config, p, (sx, sy, _, _) = _problem(M.MAMLConfig)
    rng = np.random.default_rng(1)
    u = {k: rng.normal(size=v.shape) for k, v in p.items()}
    hv = M.hessian_vector_product(p, sx, sy, u)
    eps = 1e-6
    g = M._ce_grads  # the analytic gradient, differenced along u
    up = g({k: p[k] + eps * u[k] for k in p}, sx, sy)[1]
    down = g({k: p[k] - eps * u[k] for k in p}, sx, sy)[1]
    for k in p:
        np.testing.assert_allclose(hv[k], (up[k] - down[k]) / (2 * eps), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cls", [c for c in CLASSES if c is not M.FOMAMLConfig],
                         ids=lambda c: c.model)
def test_second_order_meta_gradient_matches_finite_differences(cls):
    config, p, episode = _problem(cls)
    grads = M.reference_meta_gradient(p, config, *episode)
    fd = _finite_difference(lambda q: M.meta_loss(q, config, *episode), p, np.random.default_rng(2))
    worst = max(abs(d - grads[name].reshape(-1)[i]) for name, picks in fd.items() for i, d in picks)
    assert worst < 1e-7, worst
    assert set(grads) == set(p)


def test_first_order_is_the_query_gradient_and_differs_from_second_order():
    config, p, episode = _problem(M.FOMAMLConfig)
    first = M.reference_meta_gradient(p, config, *episode)
    adapted = M.inner_loop(p, config, episode[0], episode[1], config.inner_steps)[0][-1]
    query = M._ce_grads(adapted, episode[2], episode[3])[1]
    for k in p:
        np.testing.assert_array_equal(first[k], query[k])
    second = M.reference_meta_gradient(p, M.MAMLConfig(**{**vars(config), "first_order": False}),
                                       *episode)
    gap = max(float(np.abs(first[k] - second[k]).max()) for k in p)
    assert gap > 1e-3  # the Hessian terms are far above any tolerance the frameworks are held to


def test_anil_adapts_only_the_head_and_metasgd_learns_every_rate():
    anil = M.ANILConfig(net="mlp")
    assert M.adapted_names(anil) == ["head.weight", "head.bias"]
    sgd = M.MetaSGDConfig(net="mlp")
    rates = [p.name for p in M.param_spec(sgd) if p.name.startswith("inner_lr.")]
    assert rates == [M.inner_lr_name(n) for n in M.adapted_names(sgd)]


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="--bn must be one of"):
        M.MAMLConfig(bn="batch")
    with pytest.raises(ValueError, match="inner_steps"):
        M.MAMLConfig(inner_steps=0)
    with pytest.raises(ValueError, match="mlp"):
        M.reference_meta_gradient({}, M.MAMLConfig(), None, None, None, None)
