"""What goes wrong when a PyTorch | Keras difference is forgotten — the figures of
``docs/framework-differences.md``, computed from metalearn's own models.

Each ``demo_*`` function handles one difference twice: as metalearn handles it, and as if it
had been forgotten, and returns the error of each against the other framework (or the exact
value). ``tests/test_docs.py`` runs all of them in ``--tiny`` mode, so the guide's claims
cannot rot.

Usage::

    python docs/demo_differences.py [--tiny] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

__all__ = ["DEMOS", "run_all", "main"]

Figures = dict[str, Any]


def _frameworks() -> tuple[Any, Any]:
    import keras
    import torch

    return keras, torch


def _pair(config: Any, seed: int = 0) -> tuple[Any, Any]:
    """A torch model and its Keras copy through a canonical checkpoint file."""
    import metalearn_tf.checkpoint as kckpt
    import metalearn_torch.checkpoint as tckpt
    from metalearn_torch.models import build_model

    t_model = build_model(config, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        k_model, _ = kckpt.load_checkpoint(tckpt.save_checkpoint(t_model, Path(tmp) / "w.safetensors"))
    return t_model, k_model


def _max_abs(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _rel(a: Any, b: Any) -> float:
    return _max_abs(a, b) / float(np.max(np.abs(np.asarray(b, np.float64))))


def _episode(size: int, seed: int = 1) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    from metalearn_shared.data.glyphs import make_glyphs
    from metalearn_shared.episodes import FewShotSampler
    from metalearn_shared.models import protonet

    data = make_glyphs(num_classes=10, instances=6, size=size, seed=0)
    return protonet.inputs_and_target(FewShotSampler(data, 5, 1, 3, seed=seed).episode(0))


def _sequences(config: Any) -> tuple[Any, tuple[np.ndarray, ...], np.ndarray]:
    from metalearn_shared.data.glyphs import make_glyphs
    from metalearn_shared.episodes import SequenceSampler
    from metalearn_shared.models import lstm

    data = make_glyphs(num_classes=8, instances=10, size=config.image_size, seed=0)
    sampler = SequenceSampler(data, config.num_classes, 10, seed=1)
    inputs, target = lstm.inputs_and_target(sampler.batch(0, 2))
    return sampler, inputs, target


def _assign_keras(model: Any, canonical: dict[str, np.ndarray], spec: Sequence[Any]) -> None:
    """Write canonical arrays into a Keras model through the converter with ``spec``."""
    from metalearn_shared.weights import to_framework
    from metalearn_tf.checkpoint import keras_variables

    variables = keras_variables(model)
    for name, value in to_framework(canonical, spec, "keras").items():
        variables[name].assign(value)


# -- layout ------------------------------------------------------------------------------
def demo_flatten_permutation(tiny: bool) -> Figures:
    """The seed network's first dense layer after a flatten, converted with and without the
    ``(C, H, W)`` → ``(H, W, C)`` row permutation: embedding error in Keras."""
    import metalearn_tf.parity as kp
    import metalearn_torch.checkpoint as tckpt
    import metalearn_torch.parity as tp
    from metalearn_shared.config import BackboneConfig
    from metalearn_shared.models import param_spec
    from metalearn_shared.models.protonet import ProtoNetConfig
    from metalearn_shared.weights import Layout

    size = 20 if tiny else 28
    config = ProtoNetConfig(BackboneConfig("seed", image_size=size))
    t_model, k_model = _pair(config)
    x = _episode(size)[0][0]
    handled = _max_abs(kp.embed(k_model, x), tp.embed(t_model, x))
    forgot = [dataclasses.replace(p, layout=Layout.DENSE) if p.layout is Layout.FLATTEN_DENSE else p
              for p in param_spec(config)]
    _assign_keras(k_model, tckpt.get_canonical(t_model), forgot)  # shapes still fit: no error
    reference = tp.embed(t_model, x)
    return {"map": list(config.backbone.seed_flat_chw), "handled_max_abs": handled,
            "forgotten_max_abs": _max_abs(kp.embed(k_model, x), reference),
            "forgotten_max_rel": _rel(kp.embed(k_model, x), reference)}


def demo_dense_kernel(tiny: bool) -> Figures:
    """A torch ``Linear.weight (out, in)`` handed to Keras without the transpose."""
    from metalearn_shared.config import BackboneConfig
    from metalearn_shared.models import param_spec
    from metalearn_shared.models.protonet import ProtoNetConfig
    from metalearn_shared.weights import WeightMismatchError, to_canonical, to_framework
    from metalearn_torch.checkpoint import get_canonical
    from metalearn_torch.models import build_model

    config = ProtoNetConfig(BackboneConfig("seed", image_size=20 if tiny else 28))
    spec = param_spec(config)
    canonical = get_canonical(build_model(config, seed=0))
    keras_arrays = to_framework(canonical, spec, "keras")
    keras_arrays["embedding/fc2/kernel"] = canonical["embedding.fc2.weight"]  # (out, in) as is
    try:
        to_canonical(keras_arrays, spec, "keras")
    except WeightMismatchError as e:
        return {"refused": True, "message": next(line.strip() for line in str(e).splitlines()
                                                 if "mis-shaped" in line)}
    return {"refused": False, "message": ""}


# -- LSTM --------------------------------------------------------------------------------
def _lstm_config(tiny: bool) -> Any:
    from metalearn_shared.models.lstm import LSTMConfig

    return LSTMConfig(image_size=8 if tiny else 10, num_classes=5, controller_units=12 if tiny else 24)


def demo_lstm(tiny: bool) -> Figures:
    """Gate order, one bias against two, and the default initialisers."""
    keras, torch = _frameworks()
    import metalearn_tf.parity as kp
    import metalearn_torch.checkpoint as tckpt
    import metalearn_torch.parity as tp
    from metalearn_shared.models import param_spec

    config = _lstm_config(tiny)
    t_model, k_model = _pair(config)
    _, inputs, _ = _sequences(config)
    reference = tp.forward(t_model, inputs, False)
    handled = _max_abs(kp.forward(k_model, inputs, False), reference)

    # Gate blocks reordered i, f, g, o -> i, g, f, o (TF 1.x's LSTMBlockCell order i, j, f, o).
    canonical = tckpt.get_canonical(t_model)
    u = config.controller_units
    order = np.concatenate([np.arange(u), np.arange(2 * u, 3 * u), np.arange(u, 2 * u),
                            np.arange(3 * u, 4 * u)])
    swapped = {k: (v[order] if k.startswith("controller.") else v) for k, v in canonical.items()}
    _assign_keras(k_model, swapped, param_spec(config))
    gate_order = _max_abs(kp.forward(k_model, inputs, False), reference)

    # torch.nn.LSTMCell's two biases -> one (Keras, canonical) -> back: the sum is all that
    # matters, so the split is lost; putting the sum in bias_ih changes the arrays by
    # |bias_hh| and the outputs by fp32 rounding of b_ih + b_hh.
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(7, u)
    x, h0 = torch.randn(4, 7), (torch.randn(4, u), torch.randn(4, u))
    with torch.no_grad():
        before = cell(x, h0)[0]
        b_hh = cell.bias_hh.clone()
        cell.bias_ih += cell.bias_hh
        cell.bias_hh.zero_()
        after = cell(x, h0)[0]

    k_cell = keras.layers.LSTMCell(u)
    k_cell.build((None, 7))
    stock = torch.nn.LSTMCell(7, u)
    init = {
        "torch nn.LSTMCell": (stock.weight_ih.std().item(), stock.weight_hh.std().item(),
                              stock.bias_ih[u:2 * u].add(stock.bias_hh[u:2 * u]).mean().item()),
        "keras LSTMCell": (float(np.std(k_cell.kernel.numpy())),
                           float(np.std(k_cell.recurrent_kernel.numpy())),
                           float(np.mean(k_cell.bias.numpy()[u:2 * u]))),
    }
    return {"handled_max_abs": handled, "gate_order_swapped_max_abs": gate_order,
            "two_biases_array_change": float(b_hh.abs().max()),
            "two_biases_output_change": float((after - before).abs().max()),
            "init_std_weight_ih_weight_hh_and_forget_bias": init}


# -- BatchNorm ---------------------------------------------------------------------------
def demo_batchnorm(tiny: bool) -> Figures:
    """conv4 ProtoNet after ``passes`` training-mode forward passes (running statistics
    updated, no optimiser): inference logits and running variances, Keras against torch,
    as metalearn builds it and with one convention forgotten at a time."""
    keras, torch = _frameworks()
    import metalearn_tf.checkpoint as kckpt
    import metalearn_tf.parity as kp
    import metalearn_torch.checkpoint as tckpt
    import metalearn_torch.parity as tp
    from metalearn_shared.config import BackboneConfig
    from metalearn_shared.models.protonet import ProtoNetConfig

    size, hidden, passes = (16, 8, 3) if tiny else (28, 64, 20)
    config = ProtoNetConfig(BackboneConfig("conv4", image_size=size, hidden=hidden))
    episodes = [_episode(size, seed=s)[0] for s in range(passes + 1)]
    t_model, k_model = _pair(config)
    start = tckpt.get_canonical(t_model)
    bns = [getattr(k_model.embedding, f"bn{i}") for i in range(1, 5)]

    def run(forget: Callable[[Any], None] | None) -> dict[str, float]:
        tckpt.set_canonical(t_model, start)
        kckpt.set_canonical(k_model, start)
        for bn in bns:
            bn.momentum, bn.epsilon = config.backbone.keras_bn_momentum, config.backbone.bn_eps
            bn.__dict__.pop("call", None)
            if forget:
                forget(bn)
        for inputs in episodes[1:]:
            tp.forward(t_model, inputs, True)
            kp.forward(k_model, inputs, True)
        t_var = tckpt.get_canonical(t_model)["embedding.bn4.running_var"]
        k_var = kckpt.get_canonical(k_model)["embedding.bn4.running_var"]
        inference = (kp.forward(k_model, episodes[0], False), tp.forward(t_model, episodes[0], False))
        training = (kp.forward(k_model, episodes[0], True), tp.forward(t_model, episodes[0], True))
        return {"inference_logits_rel": _rel(*inference), "training_logits_rel": _rel(*training),
                "running_var_rel": _rel(k_var, t_var)}

    def plain_keras_bn(bn: Any) -> None:
        bn.call = types.MethodType(keras.layers.BatchNormalization.call, bn)

    return {
        "passes": passes,
        "handled": run(None),
        "momentum_unconverted": run(lambda bn: setattr(bn, "momentum", config.backbone.bn_momentum)),
        "keras_default_epsilon_1e-3": run(lambda bn: setattr(bn, "epsilon", 1e-3)),
        "biased_running_variance": run(plain_keras_bn),
    }


# -- optimisers ----------------------------------------------------------------------------
def demo_optimizers(tiny: bool) -> Figures:
    """The LSTM baseline trained ``steps`` steps from the same weights in both frameworks:
    max abs weight difference for each optimiser setting (and how far training moved).

    Names and hyper-parameters are the optimiser table's
    (:data:`metalearn_shared.optimizers.OPTIMIZERS`): ``adam``/``rmsprop`` are each
    framework's own class (two rules), ``adam-torch``/``rmsprop-torch`` PyTorch's rule and
    ``adam-keras``/``rmsprop-keras`` Keras' rule in both frameworks.
    """
    import metalearn_tf.parity as kp
    import metalearn_torch.checkpoint as tckpt
    import metalearn_torch.parity as tp

    config = _lstm_config(tiny)
    steps = 3 if tiny else 20
    sampler, _, _ = _sequences(config)
    settings = {
        "sgd (reference: fp32 rounding only)": ("sgd", 1e-1, {}, {}),
        "adam, each framework's defaults (eps 1e-8 | 1e-7)": ("adam", 1e-3, {"eps": 1e-8},
                                                              {"eps": 1e-7}),
        "adam, metalearn's pinned eps 1e-7 in both": ("adam", 1e-3, {}, {}),
        "adam, eps 1e-12 in both": ("adam", 1e-3, {"eps": 1e-12}, {"eps": 1e-12}),
        "adam-torch (PyTorch's rule in both)": ("adam-torch", 1e-3, {}, {}),
        "adam-keras (Keras' rule in both)": ("adam-keras", 1e-3, {}, {}),
        "rmsprop, each framework's defaults (alpha 0.99 | rho 0.9)": (
            "rmsprop", 1e-3, {"rho": 0.99, "eps": 1e-8}, {"rho": 0.9, "eps": 1e-7}),
        "rmsprop, metalearn's pinned rho 0.9, eps 1e-7 in both": ("rmsprop", 1e-3, {}, {}),
        # Keras adds epsilon inside the square root: its 1e-20 is torch's 1e-10 outside.
        "rmsprop, rho 0.9, eps 1e-10 (torch) | 1e-20 (keras, inside the sqrt)": (
            "rmsprop", 1e-3, {"rho": 0.9, "eps": 1e-10}, {"rho": 0.9, "eps": 1e-20}),
        "rmsprop-torch (PyTorch's rule in both)": ("rmsprop-torch", 1e-3, {}, {}),
        "rmsprop-keras (Keras' rule in both)": ("rmsprop-keras", 1e-3, {}, {}),
    }
    out: Figures = {"steps": steps}
    for label, (name, lr, t_set, k_set) in settings.items():
        t_model, k_model = _pair(config)
        start = tckpt.get_canonical(t_model)
        t_rec = tp.train_steps(t_model, sampler, "sequence", steps, lr, 2, name, **t_set)
        k_rec = kp.train_steps(k_model, sampler, "sequence", steps, lr, 2, name, **k_set)
        t_end, k_end = t_rec.weights[-1], k_rec.weights[-1]
        out[label] = {"lr": lr, "max_abs": max(_max_abs(k_end[n], t_end[n]) for n in t_end),
                      "moved": max(_max_abs(t_end[n], start[n]) for n in t_end)}
    return out


# -- tie-breaking ----------------------------------------------------------------------------
def demo_tie_breaking(tiny: bool) -> Figures:
    """Which slots the LRUA would pick with each framework's own top-k, against metalearn's
    rule (lowest index first); and the MANN's logits when torch uses ``topk`` instead."""
    keras, torch = _frameworks()
    import tensorflow as tf

    import metalearn_tf.parity as kp
    import metalearn_torch.models.mann as tmann
    import metalearn_torch.parity as tp
    from metalearn_shared.models.mann import MANNConfig, least_used_slots

    config = MANNConfig(image_size=8 if tiny else 10, num_classes=5, controller_units=12 if tiny else 24,
                        memory_slots=8 if tiny else 16, memory_width=4 if tiny else 6,
                        read_heads=2 if tiny else 3)
    t_model, k_model = _pair(config)
    _, inputs, _ = _sequences(config)
    usage = tp.trace(t_model, inputs)["usage"]  # (B, T, N) after each step
    prev = np.concatenate([np.zeros_like(usage[:, :1]), usage[:, :-1]], axis=1)  # w^u_{t-1}
    flat = prev.reshape(-1, prev.shape[-1]).astype(np.float32)
    n = config.read_heads
    rule = least_used_slots(flat, n)
    picks = {
        "torch.topk(largest=False)": torch.topk(torch.from_numpy(flat), n, largest=False).indices.numpy(),
        "tf.math.top_k(-usage)": tf.math.top_k(-flat, n).indices.numpy(),
        "numpy argsort (quicksort)": np.argsort(flat, axis=-1)[:, :n],
    }
    t0 = np.arange(len(flat)) % prev.shape[1] == 0
    out: Figures = {"steps": int(len(flat)), "first_step_rule": rule[0].tolist()}
    for name, idx in picks.items():
        differ = np.any(idx != rule, axis=1)
        out[name] = {"first_step": idx[0].tolist(), "share_of_steps_differing": float(differ.mean()),
                     "first_steps_differing": float(differ[t0].mean())}

    def topk_ranks(u: Any) -> Any:  # the "no rule" version: whatever topk returns
        order = torch.topk(u, u.shape[-1], largest=False).indices
        return torch.empty_like(order).scatter_(-1, order, torch.arange(u.shape[-1]).expand_as(order))

    reference = kp.forward(k_model, inputs, False)
    out["handled_logits_max_abs"] = _max_abs(tp.forward(t_model, inputs, False), reference)
    rule_ranks = tmann.least_used_ranks
    tmann.least_used_ranks = topk_ranks
    try:
        out["torch_topk_logits_max_abs"] = _max_abs(tp.forward(t_model, inputs, False), reference)
    finally:
        tmann.least_used_ranks = rule_ranks
    return out


# -- losses ------------------------------------------------------------------------------
def demo_losses(tiny: bool) -> Figures:
    """From-logits stability, and label conventions, against exact values."""
    keras, torch = _frameworks()
    import metalearn_tf.losses as kl
    import metalearn_torch.losses as tl

    z = np.array([-200.0, -30.0, -17.0, 0.0, 17.0], np.float32)
    y = np.ones_like(z)  # every pair "same"; the exact loss is softplus(-z)
    exact = np.logaddexp(0.0, -z.astype(np.float64))
    prob = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    losses = {
        "metalearn koch loss (torch)": tl.koch_verification_loss(torch.from_numpy(y), torch.from_numpy(z)).numpy(),
        "metalearn koch loss (keras)": keras.ops.convert_to_numpy(kl.koch_verification_loss(y, z)),
        "torch BCEWithLogitsLoss": torch.nn.BCEWithLogitsLoss(reduction="none")(
            torch.from_numpy(z), torch.from_numpy(y)).numpy(),
        "torch BCELoss(sigmoid(z))": torch.nn.BCELoss(reduction="none")(
            torch.sigmoid(torch.from_numpy(z)), torch.from_numpy(y)).numpy(),
        "keras BinaryCrossentropy() (default from_logits=False) on sigmoid(z)": np.array([
            float(keras.losses.BinaryCrossentropy()(y[i:i + 1], prob[i:i + 1].astype(np.float32)))
            for i in range(len(z))]),
    }
    out: Figures = {"logits": z.tolist(), "exact": exact.tolist()}
    for name, value in losses.items():
        out[name] = {"values": np.asarray(value, np.float64).tolist(),
                     "max_abs_error": _max_abs(value, exact)}

    # Label conventions: 1/0 labels (the samplers') handed to torch's CosineEmbeddingLoss,
    # which expects +1/-1: the y = 0 pairs silently count for nothing.
    rng = np.random.default_rng(0)
    e1, e2 = rng.normal(size=(2, 64, 16)).astype(np.float32)
    same = (np.arange(64) % 2).astype(np.float32)
    t1, t2 = torch.from_numpy(e1), torch.from_numpy(e2)
    cos = tl.cosine_similarity(t1, t2)
    out["cosine_embedding"] = {
        "metalearn (labels 1/0, mapped to +1/-1)": float(tl.CosineEmbeddingLoss()(cos, torch.from_numpy(same))),
        "torch, labels +1/-1": float(torch.nn.CosineEmbeddingLoss()(t1, t2, torch.from_numpy(2 * same - 1))),
        "torch, labels 1/0 passed as they are": float(torch.nn.CosineEmbeddingLoss()(t1, t2, torch.from_numpy(same))),
    }
    return out


# -- randomness ----------------------------------------------------------------------------
def demo_randomness(tiny: bool) -> Figures:
    """Same seed within a framework, across frameworks, and across torch thread counts."""
    keras, torch = _frameworks()
    import metalearn_tf.checkpoint as kckpt
    import metalearn_tf.parity as kp
    import metalearn_torch.checkpoint as tckpt
    import metalearn_torch.parity as tp
    from metalearn_shared.config import BackboneConfig
    from metalearn_shared.models.protonet import ProtoNetConfig
    from metalearn_tf.models import build_model as build_keras
    from metalearn_torch.models import build_model as build_torch

    size = 16 if tiny else 28
    config = ProtoNetConfig(BackboneConfig("conv4", image_size=size, hidden=8 if tiny else 64))

    def diff(a: dict, b: dict) -> float:
        return max(_max_abs(a[k], b[k]) for k in a)

    t1, t2 = (tckpt.get_canonical(build_torch(config, seed=0)) for _ in range(2))
    k1, k2 = (kckpt.get_canonical(build_keras(config, seed=0)) for _ in range(2))
    inputs, target = _episode(size)
    model = build_torch(config, seed=0)
    threads = torch.get_num_threads()
    grads = []
    for n in (1, 2):
        torch.set_num_threads(n)
        grads.append(tp.loss_and_grads(model, inputs, target)[2])
    torch.set_num_threads(threads)
    k_model = build_keras(config, seed=0)
    k_grads = [kp.loss_and_grads(k_model, inputs, target)[2] for _ in range(2)]
    return {"torch_same_seed_twice": diff(t1, t2), "keras_same_seed_twice": diff(k1, k2),
            "torch_vs_keras_same_seed": diff(t1, k1),
            "torch_grads_1_vs_2_threads": diff(*grads), "keras_grads_twice": diff(*k_grads)}


# -- checkpoints ---------------------------------------------------------------------------
def demo_checkpoints(tiny: bool) -> Figures:
    """A ``torch.save`` pickle refused; a ``.keras`` zip's members; the canonical round trip."""
    keras, torch = _frameworks()
    import zipfile

    import metalearn_tf.checkpoint as kckpt
    import metalearn_torch.checkpoint as tckpt
    from metalearn_shared.weights import load_canonical

    config = _lstm_config(tiny)
    t_model, k_model = _pair(config)
    with tempfile.TemporaryDirectory() as tmp:
        pickled = Path(tmp) / "model.safetensors"  # the name does not fool the loader
        torch.save(t_model.state_dict(), pickled)
        try:
            load_canonical(pickled)
            refused = ""
        except ValueError as e:
            refused = str(e).split(". ")[0] + "."
        k_path = Path(tmp) / "model.keras"
        k_model.save(k_path)
        members = sorted(zipfile.ZipFile(k_path).namelist())
        back, _ = tckpt.load_checkpoint(kckpt.save_checkpoint(k_model, Path(tmp) / "back.safetensors"))
    a, b = tckpt.get_canonical(t_model), tckpt.get_canonical(back)
    return {"pickle_refused": refused, "keras_zip_members": members,
            "torch_keras_torch_bit_identical": all(np.array_equal(a[k], b[k]) for k in a)}


DEMOS: dict[str, Callable[[bool], Figures]] = {
    "flatten_permutation": demo_flatten_permutation,
    "dense_kernel": demo_dense_kernel,
    "lstm": demo_lstm,
    "batchnorm": demo_batchnorm,
    "optimizers": demo_optimizers,
    "tie_breaking": demo_tie_breaking,
    "losses": demo_losses,
    "randomness": demo_randomness,
    "checkpoints": demo_checkpoints,
}


def run_all(tiny: bool = False, names: Sequence[str] | None = None) -> dict[str, Figures]:
    """Every demo (or those named), one torch thread, as ``metalearn parity`` runs."""
    import metalearn_torch.parity as tp

    with tp.parity_context(0):
        return {name: DEMOS[name](tiny) for name in (names or DEMOS)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small models, few steps (tests)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--only", nargs="*", choices=sorted(DEMOS), help="run only these demos")
    args = parser.parse_args(argv)
    figures = run_all(args.tiny, args.only)
    text = json.dumps(figures, indent=1, default=float)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
