"""The sequence models (MANN, LSTM baseline): the numpy spec, and each framework against it.

Cross-framework parity through checkpoint files is ``tests/parity/test_parity_sequence.py``;
here each framework is checked on its own against the float64 reference, so these tests
run with only one framework installed.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from metalearn_shared.data.glyphs import make_glyphs  # noqa: E402
from metalearn_shared.episodes import SequenceSampler  # noqa: E402
from metalearn_shared.losses import sequence_cross_entropy  # noqa: E402
from metalearn_shared.models import lstm as lstm_spec  # noqa: E402
from metalearn_shared.models import mann as mann_spec  # noqa: E402
from metalearn_shared.models import param_spec  # noqa: E402
from metalearn_shared.models.lstm import LSTMConfig
from metalearn_shared.models.mann import MANNConfig
from metalearn_shared.tolerances import assert_close  # noqa: E402
from metalearn_shared.weights import framework_shape  # noqa: E402

FRAMEWORKS = ["torch", "tf"]
T_STEPS = 50

MANN_SMALL = MANNConfig(image_size=8, num_classes=5, controller_units=16, memory_slots=12,
                        memory_width=5, read_heads=3)
#: Santoro's string labels: 5 softmaxes of 5 characters.
MANN_STRINGS = MANN_SMALL.replace(label_groups=5)
#: The reference implementation's separate add vector.
MANN_ADD = MANN_SMALL.replace(write_vector="add")
#: Sharpened reads (softmax of 4 × cosine): a port that drops the factor changes every read.
MANN_SHARP = MANN_SMALL.replace(read_sharpness=4.0)
#: A learned key strength per head and step (starting at 4): a port that drops the
#: softplus, its scale or the per-head axis changes every read.
MANN_STRENGTH = MANN_SHARP.replace(key_strength="learned")
LSTM_SMALL = LSTMConfig(image_size=8, num_classes=5, controller_units=16)
LSTM_STRINGS = LSTM_SMALL.replace(label_groups=5)


# -- the frameworks, imported lazily --------------------------------------------------------
def _fw(name: str):
    """``(build_model, checkpoint module)`` of framework ``name``; skips when not installed."""
    pytest.importorskip("torch" if name == "torch" else "keras")
    models = importlib.import_module(f"metalearn_{name}.models")
    return models.build_model, importlib.import_module(f"metalearn_{name}.checkpoint")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Per-step tensors are tiny; a second OpenMP thread only contends with TF's pool."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _forward(name, model, x, prev_label):
    if name == "torch":
        import torch

        with torch.no_grad():
            return model(torch.from_numpy(x), torch.from_numpy(prev_label)).numpy()
    import keras

    return keras.ops.convert_to_numpy(model((x, prev_label)))


def _trace(name, model, x, prev_label) -> mann_spec.MANNTrace:
    if name == "torch":
        import torch

        tr = model.forward_with_trace(torch.from_numpy(x), torch.from_numpy(prev_label))
        return mann_spec.MANNTrace(*(v.numpy() for v in tr))
    return model.forward_with_trace(x, prev_label)


def _episodes(config, batch=3, seed=1):
    """``((x, prev_label), y)`` of ``batch`` 50-step episodes from the shared sampler."""
    data = make_glyphs(num_classes=8, instances=10, size=config.image_size, seed=0)
    labels = "string" if config.label_groups == 5 else "onehot"
    sampler = SequenceSampler(data, config.num_classes, 10, seed=seed, labels=labels)
    return lstm_spec.inputs_and_target(sampler.batch(0, batch))


# -- the numpy spec ---------------------------------------------------------------------------
def test_param_spec_shapes():
    c = MANN_SMALL
    shapes = {p.name: p.shape for p in param_spec(c)}
    reads = c.read_heads * c.memory_width
    assert shapes == {
        "cell.controller.weight_ih": (4 * 16, 64 + 5 + reads),  # [x ; prev_label ; r_{t-1}]
        "cell.controller.weight_hh": (4 * 16, 16),
        "cell.controller.bias": (4 * 16,),
        "cell.key.weight": (reads, 16),
        "cell.key.bias": (reads,),
        "cell.alpha.weight": (3, 16),
        "cell.alpha.bias": (3,),
        "cell.classifier.weight": (5, 16 + reads),
        "cell.classifier.bias": (5,),
    }
    added = {p.name: p.shape for p in param_spec(MANN_ADD)}
    assert added == {**shapes, "cell.add.weight": (reads, 16), "cell.add.bias": (reads,)}
    strength = {p.name: p.shape for p in param_spec(MANN_STRENGTH)}
    assert strength == {**shapes, "cell.strength.weight": (3, 16), "cell.strength.bias": (3,)}
    assert {p.name: p.shape for p in param_spec(LSTM_STRINGS)} == {
        "controller.weight_ih": (64, 64 + 25), "controller.weight_hh": (64, 16),
        "controller.bias": (64,), "classifier.weight": (25, 16), "classifier.bias": (25,)}


#: Zero weights make the controller output 0 at every step: keys 0, gates σ(0) = 1/2,
#: cosines 0, read weights uniform — so the memory can be followed by hand.
HAND = MANNConfig(image_size=2, num_classes=3, controller_units=5, memory_slots=8,
                  memory_width=4, read_heads=2)


def _hand_params():
    params = {p.name: np.zeros(p.shape, np.float32) for p in param_spec(HAND)}
    # The classifier reads out the first 3 components of r_t, so logits show the read vector.
    w = params["cell.classifier.weight"]
    w[np.arange(3), HAND.controller_units + np.arange(3)] = 1.0
    return params


def _hand_trace(name):
    x = np.random.default_rng(0).random((2, 10, HAND.input_size)).astype(np.float32)
    prev = np.zeros((2, 10, HAND.label_size), np.float32)
    if name == "numpy":
        return mann_spec.reference_forward(_hand_params(), HAND, x, prev)
    build, ckpt = _fw(name)
    model = build(HAND, seed=0)
    ckpt.set_canonical(model, _hand_params())
    return _trace(name, model, x, prev)


@pytest.mark.parametrize("name", ["numpy", *FRAMEWORKS])
def test_memory_by_hand(name):
    tr = _hand_trace(name)
    n, h, init = HAND.memory_slots, HAND.read_heads, HAND.memory_init
    # Usage starts at zero: every slot ties, and the lowest indices win.
    np.testing.assert_array_equal(tr.least_used[:, 0], [[0, 1], [0, 1]])
    # Head j writes (1 - σ(0)) = 1/2 to the j-th least-used slot (w^r_{-1} = 0).
    expected_write = np.zeros((h, n))
    expected_write[[0, 1], [0, 1]] = 0.5
    np.testing.assert_allclose(tr.write_weights[0, 0], expected_write, atol=1e-7)
    # Slot 0 erased, nothing added (keys are 0): r_0 = mean of the memory = (N-1)/N · 1e-6.
    np.testing.assert_allclose(tr.read_weights[0, 0], np.full((h, n), 1 / n), atol=1e-7)
    np.testing.assert_allclose(tr.logits[0, 0], np.full(3, (n - 1) / n * init), rtol=1e-6)
    # w^u_0 = γ·0 + sum_j w^r + sum_j w^w.
    usage0 = np.full(n, h / n)
    usage0[:2] += 0.5
    np.testing.assert_allclose(tr.usage[0, 0], usage0, rtol=1e-6)
    # Least recently used: the heads sweep the memory two slots a step, and come back.
    sweep = [[2 * t % n, (2 * t + 1) % n] for t in range(10)]
    np.testing.assert_array_equal(tr.least_used[0], sweep)
    usage1 = HAND.gamma * usage0 + h / n + 0.5 * h / n
    usage1[2:4] += 0.5
    np.testing.assert_allclose(tr.usage[0, 1], usage1, rtol=1e-6)


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_least_used_ranks_break_ties_by_index(name):
    """Integer usages tie often; the frameworks' pairwise ranks equal a stable sort's."""
    usage = np.random.default_rng(0).integers(0, 4, (6, 16)).astype(np.float32)
    usage[0] = 0.0  # all tied
    expected = mann_spec.least_used_ranks(usage)
    np.testing.assert_array_equal(expected[0], np.arange(16))
    if name == "torch":
        import torch

        from metalearn_torch.models.mann import least_used_ranks, slots_from_ranks

        ranks = least_used_ranks(torch.from_numpy(usage))
        slots = slots_from_ranks(ranks, 3).numpy()
        ranks = ranks.numpy()
    else:
        pytest.importorskip("keras")
        import keras

        from metalearn_tf.models.mann import least_used_ranks, slots_from_ranks

        ranks = least_used_ranks(keras.ops.convert_to_tensor(usage))
        slots = keras.ops.convert_to_numpy(slots_from_ranks(ranks, 3))
        ranks = keras.ops.convert_to_numpy(ranks)
    np.testing.assert_array_equal(ranks, expected)
    np.testing.assert_array_equal(slots, mann_spec.least_used_slots(usage, 3))


def test_cosine_eps_keeps_zero_vectors_finite():
    keys = np.array([[[0.0, 0.0], [3.0, 4.0]]])  # (B=1, H=2, W=2)
    memory = np.array([[[0.0, 0.0], [6.0, 8.0]]])  # (B=1, N=2, W=2)
    cos = mann_spec.cosine(keys, memory, eps=1e-8)
    np.testing.assert_allclose(cos, [[[0.0, 0.0], [0.0, 50 / np.sqrt(2500 + 1e-8)]]])


# -- each framework against the spec ----------------------------------------------------------
CASES = [pytest.param(MANN_SMALL, id="mann"), pytest.param(MANN_STRINGS, id="mann-strings"),
         pytest.param(MANN_ADD, id="mann-add"), pytest.param(MANN_SHARP, id="mann-sharp"),
         pytest.param(MANN_STRENGTH, id="mann-strength"),
         pytest.param(LSTM_SMALL, id="lstm"), pytest.param(LSTM_STRINGS, id="lstm-strings")]


@pytest.mark.parametrize("config", CASES)
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_forward_matches_spec_over_50_steps(name, config):
    build, ckpt = _fw(name)
    model = build(config, seed=0)
    (x, prev), _ = _episodes(config)
    assert x.shape[1] == T_STEPS
    logits = _forward(name, model, x, prev)
    groups = () if config.label_groups == 1 else (config.label_groups,)
    assert logits.shape == (3, T_STEPS, *groups, config.num_classes)
    params = ckpt.get_canonical(model)
    if config.model == "lstm":
        assert_close(logits, lstm_spec.reference_forward(params, config, x, prev), "forward")
        return
    ref = mann_spec.reference_forward(params, config, x, prev)
    tr = _trace(name, model, x, prev)
    np.testing.assert_array_equal(tr.least_used, ref.least_used)
    assert_close(logits, ref.logits, "forward", what="logits (model call)")
    for field in ("logits", "read_weights", "write_weights", "usage"):
        assert_close(getattr(tr, field), getattr(ref, field), "forward", what=field)
    # Every slot was reused: the test exercised the LRUA beyond its first sweep.
    assert np.all(np.bincount(ref.least_used[..., 0].ravel(), minlength=12) >= 2)


@pytest.mark.parametrize("config", [MANN_SMALL, MANN_STRENGTH, LSTM_STRINGS],
                         ids=["mann", "mann-strength", "lstm-strings"])
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_param_names_equal_spec(name, config):
    build, _ = _fw(name)
    model = build(config, seed=0)
    spec = param_spec(config)
    if name == "torch":
        found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert found == {p.name: p.shape for p in spec}
    else:
        from metalearn_tf.checkpoint import keras_variables

        found = {k: tuple(v.shape) for k, v in keras_variables(model).items()}
        assert found == {p.keras_name: framework_shape(p, "keras") for p in spec}


@pytest.mark.parametrize("config", [MANN_SMALL, LSTM_SMALL], ids=["mann", "lstm"])
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_bad_inputs_raise_clear_errors(name, config):
    build, _ = _fw(name)
    model = build(config, seed=0)
    x = np.zeros((2, 4, config.input_size), np.float32)
    prev = np.zeros((2, 4, config.label_size), np.float32)
    bad = {
        "last axis 63, expected 64": (x[..., :-1], prev),
        "found x (2, 4, 64) and prev_label (2, 5)": (x, prev[:, 0]),
        "disagree on the batch axis": (x, prev[:1]),
        "disagree on the time axis": (x, prev[:, :3]),
    }
    for message, (bx, bp) in bad.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            _forward(name, model, bx, bp)
    spec = mann_spec if config.model == "mann" else lstm_spec
    with pytest.raises(ValueError, match="last axis 63"):
        spec.reference_forward({}, config, x[..., :-1], prev)
    if name == "torch":
        import torch

        with pytest.raises(ValueError, match="floating-point"):
            model(torch.zeros(2, 4, config.input_size, dtype=torch.long), torch.from_numpy(prev))
    else:
        with pytest.raises(ValueError, match="tuple of two arrays"):
            model(x)


# -- Keras: serialisation, fit, graph modes -------------------------------------------------
@pytest.mark.parametrize("config", [MANN_STRINGS, LSTM_SMALL], ids=["mann-strings", "lstm"])
def test_keras_file_round_trip(config, tmp_path):
    build, ckpt = _fw("tf")
    import keras

    model = build(config, seed=0)
    assert model.get_config() == {"name": config.model, **config.to_dict()}
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode: no lambdas, no pickles
    assert type(loaded) is type(model) and loaded.config == config
    (x, prev), _ = _episodes(config, batch=2)
    np.testing.assert_array_equal(_forward("tf", loaded, x, prev), _forward("tf", model, x, prev))
    for k, v in ckpt.get_canonical(model).items():
        np.testing.assert_array_equal(ckpt.get_canonical(loaded)[k], v)


@pytest.mark.parametrize("config", [MANN_SMALL, LSTM_SMALL], ids=["mann", "lstm"])
def test_keras_fit_and_graph_modes(config):
    build, ckpt = _fw("tf")
    import keras
    import tensorflow as tf

    model = build(config, seed=0)
    (x, prev), y = _episodes(config, batch=4)
    eager = _forward("tf", model, x, prev)
    graph = tf.function(lambda a, b: model((a, b)), jit_compile=True)(x, prev).numpy()
    assert_close(graph, eager, "forward", what="XLA vs eager")
    before = ckpt.get_canonical(model)

    def fit(jit: bool) -> dict[str, np.ndarray]:
        ckpt.set_canonical(model, before)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=model.make_loss(),
                      jit_compile=jit)
        history = model.fit((x, prev), y, batch_size=2, epochs=1, shuffle=False, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        return ckpt.get_canonical(model)

    after = fit(jit=True)
    assert any(np.abs(after[k] - before[k]).max() > 1e-4 for k in before)
    eager_after = fit(jit=False)  # XLA's gradients, through two SGD steps, equal eager's
    for k in before:
        assert_close(after[k], eager_after[k], "train", what=f"XLA vs eager {k}")


# -- torch: compile, task contract ----------------------------------------------------------
def test_torch_compiled_cell_matches_eager():
    """``fullgraph=True``: the cell compiles to one graph, so it has no host sync (an
    ``.item()`` would break the graph). The ``aot_eager`` backend traces forward and
    backward as inductor would, without its C++ code generation (30 s on 2 cores)."""
    build, _ = _fw("torch")
    import torch

    model = build(MANN_SMALL, seed=0)
    (x, prev), y = _episodes(MANN_SMALL, batch=2)

    def grads() -> dict[str, np.ndarray]:
        model.zero_grad(set_to_none=True)
        loss = model.make_loss()(model(torch.from_numpy(x), torch.from_numpy(prev)),
                                 torch.from_numpy(y))
        loss.backward()
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}

    eager = _forward("torch", model, x, prev)
    eager_grads = grads()
    model.compile_cell(backend="aot_eager", fullgraph=True)
    assert list(model.state_dict()) == [p.name for p in param_spec(MANN_SMALL)]
    assert_close(_forward("torch", model, x, prev), eager, "forward", what="compiled vs eager")
    compiled_grads = grads()
    assert set(compiled_grads) == set(eager_grads)
    for name, g in compiled_grads.items():  # the compiled backward equals eager autograd
        assert_close(g, eager_grads[name], "grad", what=f"compiled vs eager {name}")


@pytest.mark.parametrize("config", [MANN_SMALL, LSTM_STRINGS], ids=["mann", "lstm-strings"])
def test_torch_task_contract(config):
    build, _ = _fw("torch")
    import torch

    model = build(config, seed=0)
    data = make_glyphs(num_classes=8, instances=10, size=config.image_size, seed=0)
    labels = "string" if config.label_groups == 5 else "onehot"
    sampler = SequenceSampler(data, config.num_classes, 10, seed=1, labels=labels)
    batch = sampler.batch(0, 2)
    (x, prev), y = model.inputs_and_target(batch)
    assert x.shape == (2, T_STEPS, config.input_size) and y.dtype == torch.int64
    with torch.no_grad():
        expected = model.make_loss()(model(x, prev), y)
        np.testing.assert_allclose(float(model.compute_loss_on(batch)), float(expected))
        # One episode (no batch axis) is a batch of one.
        (x1, _), y1 = model.inputs_and_target(sampler.episode(0))
        assert x1.shape == (1, T_STEPS, config.input_size) and y1.shape[0] == 1


# -- the loss in each framework against the spec ---------------------------------------------
def _tensor(name, a):
    if name == "torch":
        import torch

        return torch.from_numpy(a)
    import keras

    return keras.ops.convert_to_tensor(a)


@pytest.mark.parametrize("groups", [1, 5])
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_sequence_cross_entropy_matches_spec(name, groups):
    rng = np.random.default_rng(groups)
    shape = (3, 7) if groups == 1 else (3, 7, groups)
    y = rng.integers(0, 5, shape)
    logits = (rng.normal(size=(*shape, 5)) * 5).astype(np.float32)
    expected = sequence_cross_entropy(y, logits)  # (B,)
    _fw(name)
    losses = importlib.import_module(f"metalearn_{name}.losses")
    per_episode = np.asarray(losses.sequence_cross_entropy(_tensor(name, y), _tensor(name, logits)))
    loss = losses.SequenceCrossEntropy()
    if name == "torch":  # torch criteria take (input, target), Keras losses (y_true, y_pred)
        mean = float(loss(_tensor(name, logits), _tensor(name, y)))
    else:
        import keras

        mean = float(loss(y, logits))
        assert keras.losses.deserialize(keras.losses.serialize(loss)).get_config() == \
            loss.get_config()
    assert_close(per_episode, expected, "spec")
    assert_close(mean, expected.mean(), "spec")
    with pytest.raises(ValueError, match="without its last"):
        losses.sequence_cross_entropy(_tensor(name, y[:, :-1]), _tensor(name, logits))


def test_an_unknown_write_vector_is_a_clear_error():
    with pytest.raises(ValueError, match=r"write_vector.*'key', 'add'.*'erase'"):
        MANNConfig(write_vector="erase")


def test_read_sharpness_sharpens_the_reads_and_must_be_positive():
    """``s`` multiplies the cosines before the read softmax: s = 1 is the paper's rule, a
    larger ``s`` puts more weight on the best-matching slot."""
    params = {p.name: np.random.default_rng(0).normal(0, 0.5, p.shape) for p in
              param_spec(MANN_SMALL)}
    (x, prev), _ = _episodes(MANN_SMALL)
    flat = mann_spec.reference_forward(params, MANN_SMALL, x, prev).read_weights
    sharp = mann_spec.reference_forward(params, MANN_SHARP, x, prev).read_weights
    assert sharp.max(-1).mean() > 2 * flat.max(-1).mean()
    with pytest.raises(ValueError, match="read_sharpness must be positive"):
        MANNConfig(read_sharpness=0.0)


def test_a_learned_key_strength_starts_at_the_fixed_one_and_varies_per_head():
    """With the strength layer's weights at zero every head reads at ``s`` exactly as the
    fixed rule does; with weights, the strengths are positive and differ by head and step."""
    rng = np.random.default_rng(0)
    params = {p.name: rng.normal(0, 0.5, p.shape) for p in param_spec(MANN_STRENGTH)}
    (x, prev), _ = _episodes(MANN_STRENGTH)
    zero = {**params, "cell.strength.weight": np.zeros((3, 16)), "cell.strength.bias": np.zeros(3)}
    fixed = {k: v for k, v in params.items() if not k.startswith("cell.strength.")}
    np.testing.assert_allclose(mann_spec.reference_forward(zero, MANN_STRENGTH, x, prev).logits,
                               mann_spec.reference_forward(fixed, MANN_SHARP, x, prev).logits,
                               rtol=1e-12, atol=1e-12)
    h = rng.normal(0, 1, (4, 16))
    strengths = mann_spec.read_strength(params, MANN_STRENGTH, h)[..., 0]  # (4, 3)
    assert strengths.shape == (4, 3) and np.all(strengths > 0)
    assert np.ptp(strengths, axis=1).min() > 0.1 and np.ptp(strengths, axis=0).min() > 0.1
    with pytest.raises(ValueError, match=r"key_strength.*'fixed', 'learned'.*'adaptive'"):
        MANNConfig(key_strength="adaptive")


def test_write_vector_from_the_command_line_and_back():
    """``metalearn train --model mann --write-vector add`` builds the add-vector MANN, and
    ``metalearn eval`` reads the option back from a checkpoint's config."""
    from metalearn.cli import build_parser
    from metalearn_shared import models

    spec = models.get("mann")
    args = build_parser().parse_args(["train", "--model", "mann", "--write-vector", "add"])
    config = spec.config_from_args(args, 20)
    assert config.write_vector == "add" and config.image_size == 20
    assert spec.args_from_config(config)["write_vector"] == "add"
    default = build_parser().parse_args(["train", "--model", "mann"])
    assert spec.config_from_args(default, 20).write_vector == "key"  # the paper's Eq. 23
    assert spec.config_from_args(default, 20).read_sharpness == 1.0  # the paper's Eq. 17
    sharp = build_parser().parse_args(["train", "--model", "mann", "--read-sharpness", "8"])
    assert spec.config_from_args(sharp, 20).read_sharpness == 8.0
    assert spec.args_from_config(spec.config_from_args(sharp, 20))["read_sharpness"] == 8.0
    assert spec.config_from_args(default, 20).key_strength == "fixed"
    learned = build_parser().parse_args(["train", "--model", "mann", "--key-strength", "learned"])
    assert spec.args_from_config(spec.config_from_args(learned, 20))["key_strength"] == "learned"
