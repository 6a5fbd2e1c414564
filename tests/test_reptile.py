"""Reptile (``metalearn_shared.models.reptile``) — the spec and both frameworks against it.

The spec: with one inner step the pseudo-gradient ``theta - phi`` is ``inner_lr`` times the
gradient of the cross-entropy on support and queries together (checked by central finite
differences); more steps follow MAML's tested inner loop. Each framework: the objective's
gradient is ``theta - phi`` and its value the query loss at ``phi``; one trainer step with
SGD at ``eps`` moves the weights to ``theta + eps (phi - theta)`` (torch's loop, Keras'
``fit`` step); a meta-batch averages ``phi - theta``; BatchNorm's running statistics move in
training, never in evaluation; the parameters are never written by the inner loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared.config import BackboneConfig
from metalearn_shared.models import maml as maml_spec
from metalearn_shared.models import reptile as spec
from metalearn_shared.models.reptile import ReptileConfig

#: Relative error of a float32 pseudo-gradient against the float64 reference (measured ~2e-6).
REL = 1e-4


def _mlp(**kw) -> ReptileConfig:
    return ReptileConfig(net="mlp", hidden=5, ways=3, backbone=BackboneConfig(image_size=16),
                         **{"inner_steps": 3, **kw})


def _conv(**kw) -> ReptileConfig:
    return ReptileConfig(ways=5, inner_steps=2, backbone=BackboneConfig(image_size=16, hidden=8), **kw)


def _episode(ways: int = 3, shots: int = 2, queries: int = 2, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    sx = rng.random((ways * shots, size, size), dtype=np.float32)
    qx = rng.random((ways * queries, size, size), dtype=np.float32)
    return sx, np.repeat(np.arange(ways), shots), qx, np.repeat(np.arange(ways), queries)


def _random_params(config: ReptileConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p.name: rng.normal(0, 0.3, p.shape) for p in spec.SPEC.param_spec(config)}


def _rel(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


# -- the spec ---------------------------------------------------------------------------------
def test_one_step_pseudo_gradient_is_the_rate_times_the_task_gradient():
    """``theta - phi = alpha * grad CE(support ∪ queries)`` for one step; the gradient by
    central finite differences of the spec's own loss."""
    config = _mlp(inner_steps=1, inner_lr=0.3)
    params = _random_params(config)
    sx, sy, qx, qy = ep = _episode()
    x, y = spec.task_data(sx, sy, qx, qy)
    pseudo = spec.reference_pseudo_gradient(params, config, *ep)

    def task_loss(p):
        return maml_spec.meta_loss(p, config.replace(inner_steps=1, inner_lr=1e-300), x, y, x, y)

    h = 1e-6
    for name in ("head.weight", "embedding.fc1.bias"):
        fd = np.zeros_like(params[name])
        for i in np.ndindex(fd.shape):
            up, down = dict(params), dict(params)
            up[name] = params[name].copy()
            down[name] = params[name].copy()
            up[name][i] += h
            down[name][i] -= h
            fd[i] = (task_loss(up) - task_loss(down)) / (2 * h)
        assert _rel(pseudo[name], 0.3 * fd) < 1e-6, name


def test_queries_are_part_of_the_inner_data():
    """The support alone gives another ``phi`` (the spec's inner loop sees the queries)."""
    config = _mlp()
    params = _random_params(config)
    sx, sy, qx, qy = _episode()
    with_queries = spec.reference_adapted(params, config, sx, sy, qx, qy)
    support_only = maml_spec.inner_loop(params, config, sx, sy, config.inner_steps)[0][-1]
    assert _rel(with_queries["head.weight"], support_only["head.weight"]) > 1e-3


def test_config_rejects_first_order():
    with pytest.raises(ValueError, match="no second-order terms"):
        ReptileConfig(first_order=True)


# -- torch ------------------------------------------------------------------------------------
def test_torch_against_the_spec_and_one_sgd_step():
    torch = pytest.importorskip("torch")
    from metalearn_torch.checkpoint import get_canonical
    from metalearn_torch.models import build_model

    config = _mlp()
    model = build_model(config, seed=0)
    w = get_canonical(model)
    ep = _episode()
    sx, sy, qx, qy = (torch.from_numpy(a) for a in ep)
    model.train()
    loss, out = model.objective((sx, sy, qx), qy, model.make_loss())
    loss.backward()
    ref = spec.reference_pseudo_gradient(w, config, *ep)
    ref_loss, ref_logits = spec.objective_value(w, config, *ep)
    for n, p in model.named_parameters():
        assert _rel(p.grad.numpy(), ref[n]) < REL, n
        assert torch.equal(p.detach(), torch.from_numpy(w[n])), f"the inner loop wrote {n}"
    assert abs(float(loss.detach()) - ref_loss) < 1e-5 * max(1.0, ref_loss)
    np.testing.assert_allclose(out.numpy(), ref_logits, rtol=0, atol=1e-5)

    # One SGD step at eps: theta + eps (phi - theta).
    phi = spec.reference_adapted(w, config, *ep)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.step()
    for n, p in model.named_parameters():
        want = w[n] + 0.5 * (phi[n] - w[n])
        assert np.abs(p.detach().numpy() - want).max() < 1e-5, n


def test_torch_meta_batch_averages_and_bn_moves_in_training_only():
    torch = pytest.importorskip("torch")
    from metalearn_torch.models import build_model

    config = _conv()
    model = build_model(config, seed=0).train()
    eps = [_episode(ways=5, shots=1, queries=1, seed=s) for s in (1, 2)]
    grads = []
    for ep in eps:
        model.zero_grad()
        sx, sy, qx, qy = (torch.from_numpy(a) for a in ep)
        model.objective((sx, sy, qx), qy, model.make_loss())[0].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    stats = {n: b.clone() for n, b in model.named_buffers()}
    model.zero_grad()
    for ep in eps:  # the trainers' meta-batch: (loss / n).backward() per episode
        sx, sy, qx, qy = (torch.from_numpy(a) for a in ep)
        (model.objective((sx, sy, qx), qy, model.make_loss())[0] / 2).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, (grads[0][n] + grads[1][n]) / 2, rtol=1e-5, atol=1e-7)
    moved = [n for n, b in model.named_buffers() if b.is_floating_point()
             and not torch.equal(b, stats[n])]
    assert moved, "training passes must update the running statistics"
    model.eval()
    before = {n: b.clone() for n, b in model.named_buffers()}
    sx, sy, qx, _ = (torch.from_numpy(a) for a in eps[0])
    model.predict_episode(sx, sy, qx)
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), f"evaluation moved {n}"


# -- Keras ------------------------------------------------------------------------------------
def test_keras_against_the_spec_and_fit_step():
    pytest.importorskip("tensorflow")
    import keras
    import tensorflow as tf

    from metalearn_shared.models import param_spec
    from metalearn_shared.weights import to_canonical
    from metalearn_tf.checkpoint import get_canonical, keras_variables
    from metalearn_tf.models import build_model

    config = _mlp()
    model = build_model(config, seed=0)
    w = get_canonical(model)
    sx, sy, qx, qy = ep = _episode()
    trainable = {k: v for k, v in keras_variables(model).items() if v.trainable}
    with tf.GradientTape() as tape:
        loss, out = model.objective((sx, sy, qx), qy, model.make_loss())
    grads = tape.gradient(loss, list(trainable.values()))
    grads = to_canonical({k: g.numpy() for k, g in zip(trainable, grads, strict=True)},
                         [p for p in param_spec(config) if p.trainable], "keras")
    ref = spec.reference_pseudo_gradient(w, config, *ep)
    ref_loss, ref_logits = spec.objective_value(w, config, *ep)
    for n in ref:
        assert _rel(grads[n], ref[n]) < REL, n
    assert abs(float(loss) - ref_loss) < 1e-5 * max(1.0, ref_loss)
    np.testing.assert_allclose(np.asarray(out), ref_logits, rtol=0, atol=1e-5)
    after = get_canonical(model)
    for n in w:
        np.testing.assert_array_equal(after[n], w[n])  # the inner loop wrote nothing

    # fit's step (the custom train_step): SGD at eps -> theta + eps (phi - theta).
    phi = spec.reference_adapted(w, config, *ep)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=model.make_loss())
    logs = model.train_on_batch((sx, sy, qx), qy, return_dict=True)
    stepped = get_canonical(model)
    for n in phi:
        assert np.abs(stepped[n] - (w[n] + 0.5 * (phi[n] - w[n]))).max() < 1e-5, n
    assert abs(logs["loss"] - ref_loss) < 1e-5 * max(1.0, ref_loss)
