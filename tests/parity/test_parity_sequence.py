"""Keras ↔ PyTorch parity of the sequence models (issue 4), through a canonical checkpoint file.

For the MANN and the LSTM baseline, in both directions: weights are created in the source
framework, saved as a canonical checkpoint file and loaded by the other framework's
``load_checkpoint``; then, on identical episodes from the shared ``SequenceSampler``:

* logits at every one of 50 steps, and for the MANN the slots the LRUA chose at every step
  (exactly) with the read/write weights and usage — the numpy float64 reference forward
  pass is the third witness for all of them;
* the loss (each framework's ``make_loss()``), also against the numpy loss spec;
* gradients of every parameter, converted to canonical layout by the shared converter;
* every parameter after 10 SGD steps — torch with a plain loop over ``compute_loss_on``,
  Keras with ``compile(loss=model.make_loss())`` + ``fit`` on the trainer's
  ``EpisodeDataset`` — and the logits after training.

The paper's default sizes get one forward-only check (all three witnesses). Tolerances come
from the one table, ``tests/parity/tolerances.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared.config import LSTMConfig, MANNConfig
from metalearn_shared.episodes import SequenceSampler
from metalearn_shared.losses import sequence_cross_entropy
from metalearn_shared.models import lstm as lstm_spec
from metalearn_shared.models import mann as mann_spec
from metalearn_shared.models import param_spec
from metalearn_shared.training import step_batch
from metalearn_shared.weights import to_canonical
from tests.parity.tolerances import TOL, assert_close

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

import metalearn_tf.checkpoint as kckpt  # noqa: E402
import metalearn_torch.checkpoint as tckpt  # noqa: E402
from metalearn_shared.data.glyphs import make_glyphs  # noqa: E402
from metalearn_tf.models import build_model as build_keras  # noqa: E402
from metalearn_tf.train import EpisodeDataset  # noqa: E402
from metalearn_torch.models import build_model as build_torch  # noqa: E402

pytestmark = pytest.mark.parity

STEPS = 10
LR = 0.5
BATCH = 2
WAYS, SAMPLES = 5, 10  # T = 50 steps

#: Small enough for a fast test, large enough that the LRUA reuses every slot (50 steps ×
#: 3 heads over 16 slots) and the label groups are exercised.
SMALL = {
    "mann": MANNConfig(image_size=10, num_classes=WAYS, controller_units=24, memory_slots=16,
                       memory_width=6, read_heads=3),
    "lstm": LSTMConfig(image_size=10, num_classes=WAYS, controller_units=24),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Per-step tensors here are tiny: a second OpenMP thread only contends with TF's pool
    (10× slower on 2 shared cores). Results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def glyphs_10():
    """12 glyph classes × 10 drawings at 10×10: 5-way episodes of 10 presentations."""
    return make_glyphs(num_classes=12, instances=SAMPLES, size=10, seed=0)


def _reference(config, canonical, inputs):
    spec = mann_spec if config.model == "mann" else lstm_spec
    out = spec.reference_forward(canonical, config, *inputs)
    return out if config.model == "mann" else mann_spec.MANNTrace(out, None, None, None, None)


# -- the two frameworks behind one small interface ----------------------------------------
class _Torch:
    name = "torch"

    def __init__(self, model):
        self.model = model

    def forward(self, inputs):
        with torch.no_grad():
            return self.model(*(torch.from_numpy(a) for a in inputs)).numpy()

    def trace(self, inputs):
        tr = self.model.forward_with_trace(*(torch.from_numpy(a) for a in inputs))
        return mann_spec.MANNTrace(*(v.numpy() for v in tr))

    def loss_and_grads(self, inputs, target):
        self.model.zero_grad()
        logits = self.model(*(torch.from_numpy(a) for a in inputs))
        loss = self.model.make_loss()(logits, torch.from_numpy(target))
        loss.backward()
        grads = {n: p.grad.numpy().copy() for n, p in self.model.named_parameters()}
        return float(loss.detach()), grads

    def train(self, sampler):
        opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        for step in range(1, STEPS + 1):
            opt.zero_grad()
            self.model.compute_loss_on(step_batch(sampler, "sequence", step, BATCH)).backward()
            opt.step()

    def canonical(self):
        return tckpt.get_canonical(self.model)


class _Keras:
    name = "keras"

    def __init__(self, model):
        self.model = model

    def forward(self, inputs):
        return keras.ops.convert_to_numpy(self.model(tuple(inputs)))

    def trace(self, inputs):
        return self.model.forward_with_trace(*inputs)

    def loss_and_grads(self, inputs, target):
        variables = kckpt.keras_variables(self.model)
        with tf.GradientTape() as tape:
            loss = self.model.make_loss()(target, self.model(tuple(inputs), training=True))
        grads = tape.gradient(loss, list(variables.values()))
        arrays = {k: g.numpy() for k, g in zip(variables, grads, strict=True)}
        return float(loss), to_canonical(arrays, param_spec(self.model.config), "keras")

    def train(self, sampler):
        self.model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR),
                           loss=self.model.make_loss())
        data = EpisodeDataset(self.model, sampler, "sequence", BATCH, 1, STEPS + 1)
        self.model.fit(data, epochs=1, shuffle=False, verbose=0)

    def canonical(self):
        return kckpt.get_canonical(self.model)


_BUILDERS = {"torch": (build_torch, _Torch, tckpt), "keras": (build_keras, _Keras, kckpt)}


def _moved(config, direction, tmp_path):
    """``(src, dst)`` wrappers: a fresh source model and its copy through a checkpoint file."""
    src_fw, dst_fw = direction.split("_to_")
    build_src, wrap_src, ckpt_src = _BUILDERS[src_fw]
    _, wrap_dst, ckpt_dst = _BUILDERS[dst_fw]
    src_model = build_src(config, seed=0)
    path = ckpt_src.save_checkpoint(src_model, tmp_path / "weights.safetensors", step=0)
    dst_model, meta = ckpt_dst.load_checkpoint(path)
    assert meta["source_framework"] == src_fw and meta["config"] == config.to_dict()
    return wrap_src(src_model), wrap_dst(dst_model)


def _compare_forward(config, src, dst, inputs, label):
    """Logits (and the MANN's memory diagnostics) of dst, src and the numpy reference."""
    ref = _reference(config, src.canonical(), inputs)
    d_logits, s_logits = dst.forward(inputs), src.forward(inputs)
    out = {f"{label} logits vs src": ("forward", d_logits, s_logits),
           f"{label} logits vs spec": ("forward", d_logits, ref.logits),
           f"{label} src logits vs spec": ("forward", s_logits, ref.logits)}
    if config.model == "mann":
        for who, wrapper in (("src", src), ("dst", dst)):
            tr = wrapper.trace(inputs)
            np.testing.assert_array_equal(
                tr.least_used, ref.least_used,
                err_msg=f"{label}: {who} ({wrapper.name}) chose other least-used slots than "
                        "the spec")
            for field in ("logits", "read_weights", "write_weights", "usage"):
                out[f"{label} {who} {field} vs spec"] = (
                    "forward", getattr(tr, field), getattr(ref, field))
    return out


def run_parity(config, direction, tmp_path, dataset):
    """Run every comparison; returns ``({what: (kind, actual, expected)}, moved)`` where
    ``moved`` is how far training moved the source weights (max abs)."""
    src, dst = _moved(config, direction, tmp_path)
    sampler = SequenceSampler(dataset, WAYS, SAMPLES, seed=1)
    # Batch 0 is compared; the 10 training steps see batches 1..STEPS (`step_batch` s = batch s).
    inputs, target = lstm_spec.inputs_and_target(step_batch(sampler, "sequence", 0, BATCH))
    assert inputs[0].shape == (BATCH, WAYS * SAMPLES, config.input_size)

    results = _compare_forward(config, src, dst, inputs, "before training")
    d_loss, d_grads = dst.loss_and_grads(inputs, target)
    s_loss, s_grads = src.loss_and_grads(inputs, target)
    spec_loss = sequence_cross_entropy(target, _reference(config, src.canonical(), inputs).logits)
    results["loss"] = ("loss", d_loss, s_loss)
    results["loss vs spec"] = ("loss", s_loss, spec_loss.mean())
    for name in s_grads:
        results[f"grad {name}"] = ("grad", d_grads[name], s_grads[name])

    initial = src.canonical()
    src.train(sampler)
    dst.train(sampler)
    d_params, s_params = dst.canonical(), src.canonical()
    for name in s_params:
        results[f"after {STEPS} steps: {name}"] = ("train", d_params[name], s_params[name])
    results.update(_compare_forward(config, src, dst, inputs, "after training"))
    moved = max(np.abs(s_params[n] - initial[n]).max() for n in s_params)
    return results, moved


@pytest.mark.parametrize("direction", ["torch_to_keras", "keras_to_torch"])
@pytest.mark.parametrize("model", ["mann", "lstm"])
def test_parity(model, direction, tmp_path, glyphs_10):
    results, moved = run_parity(SMALL[model], direction, tmp_path, glyphs_10)
    for what, (kind, actual, expected) in results.items():
        assert np.all(np.isfinite(expected)), what
        assert_close(actual, expected, kind, what=f"{direction} {what}")
    # Not vacuous: training moved the weights well beyond the tolerance.
    assert moved > 100 * TOL["train"][1], moved


@pytest.mark.parametrize("model", ["mann", "lstm"])
def test_parity_default_sizes_forward(model, tmp_path):
    """The paper's sizes (MANN: 200 units, 128 × 40 memory, 4 heads; 20×20 images), forward
    only: torch → checkpoint → Keras, 50 steps, numpy reference as the third witness."""
    config = MANNConfig() if model == "mann" else LSTMConfig()
    src, dst = _moved(config, "torch_to_keras", tmp_path)
    data = make_glyphs(num_classes=WAYS, instances=SAMPLES, size=config.image_size, seed=2)
    (x, prev_label), _ = lstm_spec.inputs_and_target(
        SequenceSampler(data, WAYS, SAMPLES, seed=3).batch(0, BATCH))
    for what, (kind, actual, expected) in _compare_forward(
            config, src, dst, (x, prev_label), "default sizes").items():
        assert_close(actual, expected, kind, what=what)
