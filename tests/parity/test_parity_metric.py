"""Keras ↔ PyTorch parity of the metric models (issue 3), through a canonical checkpoint file.

For each model × head × backbone, in both directions: weights are created in the source
framework (BatchNorm statistics and affine made non-trivial), saved as a canonical
checkpoint file, loaded by the other framework's ``load_checkpoint``; then, on identical
episodes from the shared samplers:

* forward outputs and embeddings in inference mode, and outputs in training mode;
* the loss (from each framework's own ``make_loss()``);
* gradients of every trainable parameter, converted to canonical layout by the shared
  converter;
* every parameter and BatchNorm running statistic after 10 SGD steps — torch with a plain
  loop over ``compute_loss_on``, Keras with ``compile(loss=model.make_loss())`` + ``fit`` on
  a ``PyDataset`` of ``inputs_and_target`` items (the task contract a trainer uses) — and
  the inference outputs after training.

Tolerances come from the one table, ``tests/parity/tolerances.py``, applied relative to a
quantity's size when it exceeds 1 (``assert_close_scaled``).

Why SGD at small rates (``LR``): the 10-step map of a ``conv4`` network is itself ill-conditioned
at larger rates, whatever the framework. BatchNorm makes the convs scale-invariant, so the
effective step on a kernel is ``lr / |w|^2``; on glyphs (mostly blank images) the first
conv's outputs have batch variances ~1e-3, and torch *against itself*, with the weights
perturbed by 1e-6 (relative), ends 1.8e-2 apart after 10 steps at lr 1e-2 and 2e-4 apart at
3e-4 (Koch head, 32 px), but 2e-6 apart at 1e-4. Keras and torch differ by ~1e-6 after the
first forward pass, so only a rate at which the training map does not amplify 1e-6 can test
the implementations rather than the chaos. (A larger BatchNorm epsilon, e.g. Keras' 1e-3,
also removes the amplification.) The seed network has no BatchNorm and trains at 1e-2; at
3e-2 its ProtoNet (Keras-initialised) already amplifies fp32 noise to 3e-3 in 10 steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared.config import BackboneConfig, SiameseConfig
from metalearn_shared.episodes import FewShotSampler, PairSampler
from metalearn_shared.models import param_spec
from metalearn_shared.models import protonet as protonet_spec
from metalearn_shared.models import siamese as siamese_spec
from metalearn_shared.models.backbones import embedding_chw, flat_hwc_to_chw
from metalearn_shared.weights import to_canonical
from tests.parity.tolerances import TOL, assert_close_scaled

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

import metalearn_tf.checkpoint as kckpt  # noqa: E402
import metalearn_torch.checkpoint as tckpt  # noqa: E402
from metalearn_tf.models import build_model as build_keras  # noqa: E402
from metalearn_torch.models import build_model as build_torch  # noqa: E402

pytestmark = pytest.mark.parity

STEPS = 10
#: SGD learning rate per backbone; see the module docstring for why conv4's is small.
LR = {"conv4": 1e-4, "seed": 1e-2}
PAIRS = 8
WAYS, SHOTS, QUERIES = 5, 1, 3
SPECS = {"siamese": siamese_spec, "protonet": protonet_spec}


def _configs() -> list:
    cases = [*siamese_spec.variants(), *protonet_spec.variants(),
             # conv4 ends on a 2×2 map at 32 px: the Koch head's kernel needs the flatten
             # permutation (at 28 px the map is 1×1 and the permutation is the identity).
             ("siamese-koch-conv4-32px", SiameseConfig(BackboneConfig("conv4", image_size=32), head="koch"))]
    return [pytest.param(config, id=name) for name, config in cases]


# -- the two frameworks behind one small interface ----------------------------------------
class _Torch:
    name = "torch"

    def __init__(self, model):
        self.model = model

    def _tensors(self, inputs):
        return [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]

    def forward(self, inputs, training):
        self.model.train(training)
        with torch.no_grad():
            return self.model(*self._tensors(inputs)).numpy()

    def embed(self, x):
        self.model.eval()
        with torch.no_grad():
            return self.model.embed(torch.from_numpy(x)).numpy()

    def loss_and_grads(self, inputs, target):
        self.model.train()
        self.model.zero_grad()
        out = self.model(*self._tensors(inputs))
        loss = self.model.make_loss()(out, torch.from_numpy(target))
        loss.backward()
        grads = {n: p.grad.numpy().copy() for n, p in self.model.named_parameters()}
        return out.detach().numpy(), loss.item(), grads

    def train(self, batches):
        self.model.train()
        opt = torch.optim.SGD(self.model.parameters(), lr=LR[self.model.config.backbone.name])
        for batch in batches:
            opt.zero_grad()
            self.model.compute_loss_on(batch).backward()
            opt.step()

    def canonical(self):
        return tckpt.get_canonical(self.model)


class _Episodes(keras.utils.PyDataset):
    """The trainer's ``PyDataset``: item ``i`` = ``inputs_and_target(episode i)``."""

    def __init__(self, model, batches):
        super().__init__()
        self.items = [model.inputs_and_target(b) for b in batches]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Keras:
    name = "keras"

    def __init__(self, model):
        self.model = model

    def forward(self, inputs, training):
        return keras.ops.convert_to_numpy(self.model(tuple(inputs), training=training))

    def embed(self, x):
        emb = keras.ops.convert_to_numpy(self.model.embed(x, training=False))
        return flat_hwc_to_chw(emb, embedding_chw(self.model.config.backbone))

    def loss_and_grads(self, inputs, target):
        variables = kckpt.keras_variables(self.model)
        trainable = {k: v for k, v in variables.items() if v.trainable}
        with tf.GradientTape() as tape:
            out = self.model(tuple(inputs), training=True)
            loss = self.model.make_loss()(target, out)
        grads = tape.gradient(loss, list(trainable.values()))
        spec = [p for p in param_spec(self.model.config) if p.trainable]
        arrays = {k: g.numpy() for k, g in zip(trainable, grads, strict=True)}
        return out.numpy(), float(loss), to_canonical(arrays, spec, "keras")

    def train(self, batches):
        lr = LR[self.model.config.backbone.name]
        self.model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr),
                           loss=self.model.make_loss())
        self.model.fit(_Episodes(self.model, batches), epochs=1, shuffle=False, verbose=0)

    def canonical(self):
        return kckpt.get_canonical(self.model)


def _episodes(config, dataset, n):
    if config.model == "siamese":
        sampler = PairSampler(dataset, batch=PAIRS, seed=1)
    else:
        sampler = FewShotSampler(dataset, WAYS, SHOTS, QUERIES, seed=1)
    return [sampler.episode(i) for i in range(n)]


def _perturbed(canonical, seed=0):
    """Non-trivial BatchNorm affine and running statistics, so inference mode tests them."""
    rng = np.random.default_rng(seed)
    out = dict(canonical)
    for name, value in canonical.items():
        n = value.shape
        if ".bn" in name:
            kind = name.rsplit(".", 1)[1]
            out[name] = {
                "weight": rng.uniform(0.5, 1.5, n),
                "bias": rng.normal(0.0, 0.1, n),
                "running_mean": rng.normal(0.0, 0.1, n),
                "running_var": rng.uniform(0.5, 2.0, n),
            }[kind].astype(np.float32)
    return out


def run_parity(config, dataset, direction, tmp_path):
    """Run every comparison.

    Returns:
        ``({what: (kind, actual (dst), expected (src)[, scale])}, initial canonical weights)``.
    """
    src_fw, dst_fw = direction.split("_to_")
    builders = {"torch": (build_torch, _Torch, tckpt), "keras": (build_keras, _Keras, kckpt)}
    build_src, wrap_src, ckpt_src = builders[src_fw]
    _, wrap_dst, ckpt_dst = builders[dst_fw]

    src_model = build_src(config, seed=0)
    ckpt_src.set_canonical(src_model, _perturbed(ckpt_src.get_canonical(src_model)))
    path = ckpt_src.save_checkpoint(src_model, tmp_path / "weights.safetensors", step=0)
    dst_model, meta = ckpt_dst.load_checkpoint(path)
    assert meta["source_framework"] == src_fw and meta["config"] == config.to_dict()
    src, dst = wrap_src(src_model), wrap_dst(dst_model)

    episodes = _episodes(config, dataset, STEPS + 1)
    inputs, target = SPECS[config.model].inputs_and_target(episodes[0])  # numpy

    initial = src.canonical()
    out = {}
    out["embedding (inference)"] = ("forward", dst.embed(inputs[0]), src.embed(inputs[0]))
    out["output (inference)"] = ("forward", dst.forward(inputs, False), src.forward(inputs, False))
    d_out, d_loss, d_grads = dst.loss_and_grads(inputs, target)
    s_out, s_loss, s_grads = src.loss_and_grads(inputs, target)
    out["output (training)"] = ("forward", d_out, s_out)
    out["loss"] = ("loss_inputs", d_loss, s_loss, max(abs(s_loss), float(np.abs(s_out).max())))
    for name in s_grads:
        out[f"grad {name}"] = ("grad", d_grads[name], s_grads[name])

    src.train(episodes[1:])
    dst.train(episodes[1:])
    d_params, s_params = dst.canonical(), src.canonical()
    for name in s_params:
        out[f"after {STEPS} steps: {name}"] = ("train", d_params[name], s_params[name])
    out["output (inference) after training"] = (
        "forward", dst.forward(inputs, False), src.forward(inputs, False))
    return out, initial


@pytest.mark.parametrize("direction", ["torch_to_keras", "keras_to_torch"])
@pytest.mark.parametrize("config", _configs())
def test_parity(config, direction, tmp_path, tf_torch, glyphs_28, glyphs_32):
    dataset = glyphs_32 if config.backbone.image_size == 32 else glyphs_28
    results, initial = run_parity(config, dataset, direction, tmp_path)
    for what, (kind, actual, expected, *scale) in results.items():
        assert np.all(np.isfinite(expected)), what
        assert_close_scaled(actual, expected, kind, what=f"{direction} {what}", scale=(scale or [None])[0])
    # Not vacuous: training moved the weights several times the tolerance, so a framework
    # that did not train (or trained wrongly) would fail above. Some tensors rightly stay
    # put: the last bias of a distance-based model cancels in e1 - e2 and in q - c.
    change = {name: np.abs(results[f"after {STEPS} steps: {name}"][2] - before).max()
              for name, before in initial.items()}
    assert max(change.values()) > 3 * TOL["train"][1], change
