"""Keras MAML family (``metalearn_tf.models.maml``) against the spec's float64 reference.

The four variants (maml, fomaml, metasgd, anil) on the spec's tanh ``mlp`` net: query
logits after the inner loop in both modes, and the outer gradient of the query loss —
taken by a ``tf.GradientTape`` around the model call, eagerly and traced — against
``reference_meta_gradient`` (exact, second order). Then: second-order terms are not
negligible; the inner loop writes no variable; the BatchNorm statistics follow the
support(θ_0), …, query(θ_k) order; ``compile`` + ``fit`` trains a conv4 learner; ``bn``
running vs transductive; the ``.keras`` round trip of a Meta-SGD model.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from metalearn_shared.config import BackboneConfig  # noqa: E402
from metalearn_shared.data.glyphs import make_glyphs  # noqa: E402
from metalearn_shared.episodes import FewShotSampler  # noqa: E402
from metalearn_shared.models import maml as spec  # noqa: E402
from metalearn_shared.weights import to_canonical  # noqa: E402
from metalearn_tf.checkpoint import get_canonical, keras_variables, save_keras, set_canonical  # noqa: E402
from metalearn_tf.models import maml  # noqa: E402
from metalearn_tf.train import EpisodeDataset  # noqa: E402

CONFIGS = (spec.MAMLConfig, spec.FOMAMLConfig, spec.MetaSGDConfig, spec.ANILConfig)
#: fp32 forward vs the float64 reference: logits are O(1), a few dozen flops deep.
LOGIT_RTOL = 1e-5
#: fp32 meta-gradient vs the exact float64 one, ``max|a - e| / max|e|`` per parameter
#: (measured ≤ 5e-5 on this case: Meta-SGD's bias gradients sum partly cancelling terms).
GRAD_RTOL = 1e-4


def _mlp_config(cls: type) -> spec.MAMLConfig:
    return cls(net="mlp", hidden=5, ways=3, inner_steps=2, backbone=BackboneConfig(image_size=16))


def _conv_config(cls: type = spec.MAMLConfig, **kw) -> spec.MAMLConfig:
    return cls(ways=5, inner_steps=1, backbone=BackboneConfig(image_size=16, hidden=8), **kw)


def _episode(ways: int = 3, shots: int = 2, queries: int = 3, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    sx = rng.random((ways * shots, size, size), dtype=np.float32)
    qx = rng.random((ways * queries, size, size), dtype=np.float32)
    sy = np.repeat(np.arange(ways), shots)
    qy = np.repeat(np.arange(ways), queries)
    return sx, sy, qx, qy


def _mlp_model(cls: type):
    """A built mlp learner; Meta-SGD's rates random positive (not all equal), canonical
    weights float64 for the reference."""
    config = _mlp_config(cls)
    model = maml.build(config, seed=0)
    w = get_canonical(model)
    rng = np.random.default_rng(1)
    for k in w:
        if k.startswith("inner_lr."):
            w[k] = rng.uniform(0.1, 0.6, w[k].shape).astype(np.float32)
    set_canonical(model, w)
    return model, {k: np.asarray(v, np.float64) for k, v in get_canonical(model).items()}


def _canonical_grads(model, grads) -> dict[str, np.ndarray]:
    path = {id(v): p for p, v in keras_variables(model).items()}
    arrays = {path[id(v)]: np.asarray(g) for v, g in zip(model.trainable_variables, grads, strict=True)}
    trainable = [p for p in spec.param_spec(model.config) if p.trainable]
    return to_canonical(arrays, trainable, "keras")


def _meta_grad(model, sx, sy, qx, qy, traced: bool = False):
    """``(logits, canonical grads)`` of the query loss, tape around ``model(..., training=True)``."""
    loss_fn = model.make_loss()

    def step(sx, sy, qx, qy):
        with tf.GradientTape() as tape:
            logits = model((sx, sy, qx), training=True)
            loss = loss_fn(qy, logits)
        return logits, tape.gradient(loss, model.trainable_variables)

    if traced:
        step = tf.function(step)
    logits, grads = step(*(tf.constant(a) for a in (sx, sy, qx, qy)))
    return logits.numpy(), _canonical_grads(model, [g.numpy() for g in grads])


class _Repeat(keras.utils.PyDataset):
    """One fixed ``(inputs, target)`` item, ``n`` times."""

    def __init__(self, item, n: int) -> None:
        super().__init__()
        self.item, self.n = item, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.item


class _Losses(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.losses.append(float(logs["loss"]))
        self.model.reset_metrics()  # per-step loss, not the running mean


def _rel(actual, expected) -> float:
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


def _assert_logits(actual, expected, what):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=LOGIT_RTOL, atol=LOGIT_RTOL * scale, err_msg=what)


# -- 1. the four variants against the float64 reference --------------------------------------
@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.model)
def test_mlp_against_reference(cls):
    model, w = _mlp_model(cls)
    config = model.config
    sx, sy, qx, qy = _episode()
    assert {p.keras_name for p in spec.param_spec(config)} == set(keras_variables(model))
    logits, grads = _meta_grad(model, sx, sy, qx, qy)
    _assert_logits(logits, spec.reference_forward(w, config, sx, sy, qx, training=True), "training logits")
    ref = spec.reference_meta_gradient(w, config, sx, sy, qx, qy)
    assert set(grads) == set(ref)
    errors = {k: _rel(grads[k], ref[k]) for k in ref}
    assert max(errors.values()) < GRAD_RTOL, errors
    eval_logits = model((sx, sy, qx), training=False).numpy()
    _assert_logits(eval_logits, spec.reference_forward(w, config, sx, sy, qx, training=False),
                   "eval logits")


@pytest.fixture
def float64():
    """Keras' global float type and dtype policy float64 for the test, restored after."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.model)
def test_mlp_float64_is_exact(cls, float64):
    """In float64 the model meets the reference to rounding (measured ≤ 1e-14): the fp32
    differences above are conditioning, not a missing or extra term."""
    model, w = _mlp_model(cls)
    sx, sy, qx, qy = _episode()
    sx, qx = sx.astype(np.float64), qx.astype(np.float64)
    logits, grads = _meta_grad(model, sx, sy, qx, qy)
    assert logits.dtype == np.float64
    assert _rel(logits, spec.reference_forward(w, model.config, sx, sy, qx, training=True)) < 1e-12
    ref = spec.reference_meta_gradient(w, model.config, sx, sy, qx, qy)
    assert max(_rel(grads[k], ref[k]) for k in ref) < 1e-12


def test_traced_gradient_equals_eager():
    model, w = _mlp_model(spec.MetaSGDConfig)
    sx, sy, qx, qy = _episode()
    eager = _meta_grad(model, sx, sy, qx, qy)[1]
    traced = _meta_grad(model, sx, sy, qx, qy, traced=True)[1]
    ref = spec.reference_meta_gradient(w, model.config, sx, sy, qx, qy)
    for k in ref:
        # Two float32 evaluations of the same sums by different kernels (the traced graph runs
        # oneDNN's fused ops), so the bound is float32's against the exact gradient: with
        # oneDNN's AVX-512 kernels (AMD EPYC) the two differed by up to 5.9e-6 of a
        # parameter's largest gradient (Meta-SGD's partly cancelling bias terms); elementwise
        # at 1e-7 they passed on other CPUs only. A wrong trace is off by orders more.
        assert _rel(traced[k], eager[k]) < GRAD_RTOL, k
        assert _rel(traced[k], ref[k]) < GRAD_RTOL, k


def test_fit_step_is_the_meta_gradient_step():
    """Keras' standard train step (no custom ``train_step``) is MAML's outer step: one SGD
    step of ``fit`` moves every weight, Meta-SGD's rates included, by ``-lr`` × the exact
    second-order meta-gradient."""
    model, w = _mlp_model(spec.MetaSGDConfig)
    sx, sy, qx, qy = _episode()
    ref = spec.reference_meta_gradient(w, model.config, sx, sy, qx, qy)
    lr = 0.5
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=model.make_loss())
    model.fit(_Repeat(((sx, sy, qx), qy), 1), epochs=1, verbose=0, shuffle=False)
    after = get_canonical(model)
    for k in ref:
        np.testing.assert_allclose((w[k] - after[k]) / lr, ref[k], rtol=0,
                                   atol=GRAD_RTOL * np.abs(ref[k]).max(), err_msg=k)


# -- 2. second order matters -----------------------------------------------------------------
def test_second_order_terms_matter():
    sx, sy, qx, qy = _episode()
    second = _meta_grad(_mlp_model(spec.MAMLConfig)[0], sx, sy, qx, qy)[1]
    first = _meta_grad(_mlp_model(spec.FOMAMLConfig)[0], sx, sy, qx, qy)[1]  # same weights (seed)
    # The body's gradients differ by tens of percent; the head's bias least (a few percent).
    assert min(_rel(first[k], second[k]) for k in second) > 100 * GRAD_RTOL


# -- 3. the inner loop writes no variable ----------------------------------------------------
def _values(model) -> dict[str, np.ndarray]:
    return {k: np.array(v.numpy()) for k, v in keras_variables(model).items()}


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.model)
def test_inner_loop_writes_no_variable_mlp(cls):
    model, _ = _mlp_model(cls)
    sx, sy, qx, _ = _episode()
    before = _values(model)
    model((sx, sy, qx), training=True)
    model((sx, sy, qx), training=False)
    after = _values(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_inner_loop_writes_only_statistics_conv4():
    model = maml.build(_conv_config(spec.MetaSGDConfig), seed=0)
    sx, sy, qx, _ = _episode(ways=5, shots=1, queries=1)
    before = _values(model)
    model((sx, sy, qx), training=False)  # transductive: batch statistics, none stored
    assert all(np.array_equal(before[k], v) for k, v in _values(model).items())
    model((sx, sy, qx), training=True)
    after = _values(model)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed == {k for k in before if "/moving_" in k}
    running = maml.build(_conv_config(spec.MetaSGDConfig, bn="running"), seed=0)
    set_canonical(running, get_canonical(model))
    before = _values(running)
    running((sx, sy, qx), training=False)
    assert all(np.array_equal(before[k], v) for k, v in _values(running).items())


def test_batchnorm_statistics_order():
    """ANIL adapts the head only, so bn1 sees conv1(θ_0) in every pass: its moving mean
    and (unbiased) variance after one training call are inner_steps support updates then
    one query update, in that order."""
    config = _conv_config(spec.ANILConfig).replace(inner_steps=2)
    model = maml.build(config, seed=0)
    sx, sy, qx, _ = _episode(ways=5, shots=1, queries=2, seed=3)
    k = model.embedding.bn1.momentum
    mean = model.embedding.bn1.moving_mean.numpy().astype(np.float64)
    var = model.embedding.bn1.moving_variance.numpy().astype(np.float64)
    for x in (sx, sx, qx):
        a = model.embedding.conv1(x[..., None]).numpy().astype(np.float64).reshape(-1, 8)
        mean = k * mean + (1 - k) * a.mean(0)
        var = k * var + (1 - k) * a.var(0, ddof=1)
    model((sx, sy, qx), training=True)
    np.testing.assert_allclose(model.embedding.bn1.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.embedding.bn1.moving_variance.numpy(), var, rtol=1e-5, atol=1e-6)


# -- 4. conv4: fit, BatchNorm modes ----------------------------------------------------------
def test_conv4_fit():
    sampler = FewShotSampler(make_glyphs(num_classes=10, instances=4, size=16, seed=0),
                             ways=5, shots=1, queries=2, seed=0)
    model = maml.build(_conv_config(), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=model.make_loss())
    start = get_canonical(model)
    model.fit(EpisodeDataset(model, sampler, "fewshot", 1, 0, 3), epochs=1, verbose=0, shuffle=False)
    moved = get_canonical(model)
    assert all(not np.array_equal(start[k], moved[k]) for k in start)  # statistics included
    record = _Losses()
    model.fit(_Repeat(model.inputs_and_target(sampler.episode(7)), 20), epochs=1, verbose=0,
              shuffle=False, callbacks=[record])
    losses = record.losses
    assert np.all(np.isfinite(losses)) and np.mean(losses[-3:]) < 0.7 * losses[0], losses
    labels = model.predict_episode(*model.inputs_and_target(sampler.episode(7))[0])
    assert tuple(labels.shape) == (10,)


def test_bn_running_differs_from_transductive():
    transductive = maml.build(_conv_config(), seed=0)
    sx, sy, qx, _ = _episode(ways=5, shots=1, queries=2)
    transductive((sx, sy, qx), training=True)  # moving statistics away from (0, 1)
    running = maml.build(_conv_config(bn="running"), seed=0)
    set_canonical(running, get_canonical(transductive))
    a = transductive((sx, sy, qx), training=False).numpy()
    b = running((sx, sy, qx), training=False).numpy()
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    assert np.abs(a - b).max() > 1e-2


def test_ways_mismatch_is_an_error():
    model, _ = _mlp_model(spec.MAMLConfig)
    sx, sy, qx, _ = _episode()
    with pytest.raises(ValueError, match="3 outputs"):
        model.predict_episode(sx, sy, qx, ways=4)


# -- 5. the .keras round trip ----------------------------------------------------------------
def test_keras_round_trip_metasgd(tmp_path):
    model = maml.build(_conv_config(spec.MetaSGDConfig), seed=0)
    w = get_canonical(model)
    rng = np.random.default_rng(2)
    for k in w:
        w[k] = (rng.uniform(0.5, 1.5, w[k].shape) if "running_var" in k or k.startswith("inner_lr.")
                else rng.normal(0, 0.3, w[k].shape)).astype(np.float32)
    set_canonical(model, w)
    path = save_keras(model, tmp_path / "metasgd.keras")
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, maml.MAML) and type(loaded.config) is spec.MetaSGDConfig
    assert loaded.config == model.config
    back = get_canonical(loaded)
    assert set(back) == set(w) and all(np.array_equal(back[k], w[k]) for k in w)
    sx, sy, qx, _ = _episode(ways=5, shots=1, queries=1)
    np.testing.assert_array_equal(loaded((sx, sy, qx), training=False).numpy(),
                                  model((sx, sy, qx), training=False).numpy())
