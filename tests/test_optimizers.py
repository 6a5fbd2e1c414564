"""Optimisers: the numpy spec describes both libraries; each framework's foreign-rule class
follows the spec; matched names agree across frameworks and native ones do not; canonical
state moves between frameworks; a misplaced epsilon is caught.

The measured table of the README/report comes from
``pytest -q -s tests/test_optimizers.py -k measured_differences``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from metalearn_shared import optimizers as S
from metalearn_shared.config import BackboneConfig, TrainConfig
from metalearn_shared.models import param_spec
from metalearn_shared.models.protonet import ProtoNetConfig
from metalearn_shared.weights import to_framework

STEPS = 10
LR = 1e-2


# -- problems -------------------------------------------------------------------------------
def _problem(seed: int = 0, shape: tuple[int, ...] = (6, 9), steps: int = STEPS,
             grad_decades: float = 6.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """float32 parameters (scale 0.1) and ``steps`` gradients whose element scales spread
    over ``grad_decades`` decades, so that epsilon matters for the small ones."""
    rng = np.random.default_rng(seed)
    p0 = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    scale = 10.0 ** rng.uniform(-grad_decades, 0, shape)
    grads = [(scale * rng.standard_normal(shape)).astype(np.float32) for _ in range(steps)]
    return p0, grads


def _spec(step_fn, p0, grads, **hp):
    """Spec trajectory: parameters after each step and the final state (float64)."""
    p, st, out = np.float64(p0), {}, []
    for g in grads:
        p, st = step_fn(p, g, st, **hp)
        out.append(p)
    return out, st


def _torch_run(opt_factory, p0, grads):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = opt_factory([p])
    out = []
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        out.append(p.detach().numpy().copy())
    st = opt.state[p]
    return out, {k: (int(v) if k == "step" else v.numpy().copy()) for k, v in st.items()}


def _keras_run(opt, p0, grads):
    keras = pytest.importorskip("keras")
    v = keras.Variable(p0.copy(), name="p")
    out = []
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [v])
        out.append(keras.ops.convert_to_numpy(v).copy())
    slots = {s: getattr(opt, a)[0] for s, a in _keras_slot_attrs(opt).items() if getattr(opt, a)}
    st = {s: keras.ops.convert_to_numpy(x) for s, x in slots.items()}
    return out, {"step": int(keras.ops.convert_to_numpy(opt.iterations)), **st}


def _keras_slot_attrs(opt):
    from metalearn_tf.optimizers import _NATIVE_SLOTS

    return getattr(type(opt), "SLOTS", None) or _NATIVE_SLOTS[type(opt)]


def assert_follows_spec(run, spec, rtol=1e-5):
    """Every step's parameters and the final state of a float32 run match the float64 spec.

    atol 1e-6 = 1e-4 of one step (lr 1e-2): Keras computes ``beta^t`` in float32
    (``1 - 0.999`` is off by 5e-5 relative), which moves a parameter by ~1e-7 per step.
    """
    (got, got_state), (want, want_state) = run, spec
    for t, (a, b) in enumerate(zip(got, want, strict=True), 1):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6, err_msg=f"parameters after step {t}")
    assert set(got_state) == set(want_state)
    for k, v in want_state.items():
        if k == "step":
            assert got_state[k] == v
        else:  # slots span many decades: relative, with an atol far below the small entries
            np.testing.assert_allclose(got_state[k], v, rtol=10 * rtol, atol=1e-12, err_msg=k)


RMS_SETTINGS = [{"momentum": 0.0, "centered": False}, {"momentum": 0.9, "centered": False},
                {"momentum": 0.0, "centered": True}, {"momentum": 0.9, "centered": True}]
RMS_IDS = ["plain", "momentum", "centered", "momentum+centered"]


# -- the names table ----------------------------------------------------------------------------
def test_table_names_and_errors():
    assert S.OPTIMIZER_NAMES == ("sgd", "adam", "rmsprop", "adam-torch", "rmsprop-torch",
                                 "adam-keras", "rmsprop-keras", "rmsprop-santoro")
    with pytest.raises(ValueError, match="adam-torch, rmsprop-torch"):
        S.optimizer_entry("adamw")
    with pytest.raises(ValueError, match="rmsprop-keras"):
        TrainConfig(optimizer="Adam")
    with pytest.raises(ValueError, match="no hyper-parameter rho"):
        S.optimizer_settings("adam", rho=0.9)
    # matched names: the named library's defaults
    assert S.optimizer_settings("adam-torch")["eps"] == 1e-8
    assert S.optimizer_settings("rmsprop-torch")["rho"] == 0.99
    assert S.optimizer_settings("adam-keras")["eps"] == 1e-7
    assert S.optimizer_settings("rmsprop-keras")["rho"] == 0.9
    assert S.optimizer_settings("rmsprop-santoro") == {"rho": 0.95, "eps": 1e-10,
                                                       "momentum": 0.9, "centered": False}


def test_cli_lists_the_names():
    from metalearn.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = sub.choices["train"].format_help()
    for name in S.OPTIMIZER_NAMES:
        assert name in help_text
    args = parser.parse_args(["train", "--optimizer", "rmsprop-keras"])
    assert args.optimizer == "rmsprop-keras"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--optimizer", "adamw"])


@pytest.mark.torch
def test_torch_pinned_settings_unchanged():
    pytest.importorskip("torch")
    import torch

    from metalearn_torch.optimizers import OPTIMIZER_SETTINGS, make_optimizer
    from metalearn_torch.train import OPTIMIZER_SETTINGS as FROM_TRAIN
    from metalearn_torch.train import make_optimizer as train_make

    assert OPTIMIZER_SETTINGS is FROM_TRAIN
    assert OPTIMIZER_SETTINGS == {"adam": {"eps": 1e-7}, "rmsprop": {"alpha": 0.9, "eps": 1e-7},
                                  "sgd": {}}
    p = [torch.nn.Parameter(torch.zeros(3))]
    adam = train_make(p, TrainConfig(lr=1e-3, optimizer="adam"))
    assert type(adam) is torch.optim.Adam and adam.defaults["fused"]
    assert adam.defaults["eps"] == 1e-7 and adam.defaults["betas"] == (0.9, 0.999)
    rms = make_optimizer("rmsprop", p, lr=1e-4)
    assert type(rms) is torch.optim.RMSprop and rms.defaults["foreach"]
    assert (rms.defaults["alpha"], rms.defaults["eps"]) == (0.9, 1e-7)
    assert make_optimizer("sgd", p, lr=0.1).defaults["fused"]
    assert make_optimizer("adam-torch", p, lr=1e-3).defaults["fused"]
    with pytest.raises(ValueError, match="choose one of: sgd, adam"):
        make_optimizer("adamw", p, lr=1e-3)


@pytest.mark.tf
def test_keras_pinned_settings_unchanged():
    keras = pytest.importorskip("keras")
    from metalearn_tf.optimizers import OPTIMIZER_SETTINGS, TorchAdam, TorchRMSprop, make_optimizer
    from metalearn_tf.train import OPTIMIZER_SETTINGS as FROM_TRAIN
    from metalearn_tf.train import make_optimizer as train_make

    assert OPTIMIZER_SETTINGS is FROM_TRAIN
    assert OPTIMIZER_SETTINGS == {"adam": {"epsilon": 1e-7}, "rmsprop": {"rho": 0.9, "epsilon": 1e-7},
                                  "sgd": {}}
    adam = train_make(TrainConfig(lr=1e-3, optimizer="adam"))
    assert type(adam) is keras.optimizers.Adam and adam.epsilon == 1e-7
    assert type(make_optimizer("rmsprop", lr=1e-4)) is keras.optimizers.RMSprop
    assert type(make_optimizer("adam-torch", lr=1e-3)) is TorchAdam
    assert make_optimizer("adam-torch", lr=1e-3).epsilon == 1e-8
    rms = make_optimizer("rmsprop-torch", lr=1e-3, momentum=0.5)
    assert type(rms) is TorchRMSprop and (rms.rho, rms.momentum) == (0.99, 0.5)
    assert type(make_optimizer("adam-keras", lr=1e-3)) is keras.optimizers.Adam


# -- (a) foreign-rule classes against the spec ------------------------------------------------------
@pytest.mark.torch
def test_torch_keras_adam_follows_spec():
    pytest.importorskip("torch")
    from metalearn_torch.optimizers import KerasAdam

    p0, grads = _problem(1)
    hp = {"lr": LR, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}
    run = _torch_run(lambda ps: KerasAdam(ps, lr=LR, betas=(0.9, 0.999), eps=1e-7), p0, grads)
    assert_follows_spec(run, _spec(S.adam_step, p0, grads, rule="keras", **hp))


@pytest.mark.torch
@pytest.mark.parametrize("setting", RMS_SETTINGS, ids=RMS_IDS)
def test_torch_keras_rmsprop_follows_spec(setting):
    pytest.importorskip("torch")
    from metalearn_torch.optimizers import KerasRMSprop

    p0, grads = _problem(2)
    run = _torch_run(lambda ps: KerasRMSprop(ps, lr=LR, alpha=0.9, eps=1e-7, **setting), p0, grads)
    spec = _spec(S.rmsprop_step, p0, grads, lr=LR, rho=0.9, eps=1e-7, rule="keras", **setting)
    assert_follows_spec(run, spec)


@pytest.mark.tf
def test_keras_torch_adam_follows_spec():
    pytest.importorskip("keras")
    from metalearn_tf.optimizers import TorchAdam

    p0, grads = _problem(3)
    run = _keras_run(TorchAdam(LR, beta_1=0.9, beta_2=0.999, epsilon=1e-8), p0, grads)
    spec = _spec(S.adam_step, p0, grads, lr=LR, beta1=0.9, beta2=0.999, eps=1e-8, rule="torch")
    assert_follows_spec(run, spec)


@pytest.mark.tf
@pytest.mark.parametrize("setting", RMS_SETTINGS, ids=RMS_IDS)
def test_keras_torch_rmsprop_follows_spec(setting):
    pytest.importorskip("keras")
    from metalearn_tf.optimizers import TorchRMSprop

    p0, grads = _problem(4)
    run = _keras_run(TorchRMSprop(LR, rho=0.99, epsilon=1e-8, **setting), p0, grads)
    spec = _spec(S.rmsprop_step, p0, grads, lr=LR, rho=0.99, eps=1e-8, rule="torch", **setting)
    assert_follows_spec(run, spec)


# -- (b) the spec describes the real libraries ---------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("kernel", [{}, {"foreach": True}, {"fused": True}],
                         ids=["single", "foreach", "fused"])
def test_torch_adam_is_spec_rule_torch(kernel):
    torch = pytest.importorskip("torch")
    p0, grads = _problem(5)
    run = _torch_run(lambda ps: torch.optim.Adam(ps, lr=LR, eps=1e-8, **kernel), p0, grads)
    spec = _spec(S.adam_step, p0, grads, lr=LR, beta1=0.9, beta2=0.999, eps=1e-8, rule="torch")
    assert_follows_spec(run, spec)


@pytest.mark.torch
@pytest.mark.parametrize("setting", RMS_SETTINGS, ids=RMS_IDS)
def test_torch_rmsprop_is_spec_rule_torch(setting):
    torch = pytest.importorskip("torch")
    p0, grads = _problem(6)
    run = _torch_run(lambda ps: torch.optim.RMSprop(ps, lr=LR, alpha=0.99, eps=1e-8, foreach=True,
                                                    **setting), p0, grads)
    spec = _spec(S.rmsprop_step, p0, grads, lr=LR, rho=0.99, eps=1e-8, rule="torch", **setting)
    assert_follows_spec(run, spec)


@pytest.mark.tf
def test_keras_adam_is_spec_rule_keras():
    keras = pytest.importorskip("keras")
    p0, grads = _problem(7)
    run = _keras_run(keras.optimizers.Adam(LR, epsilon=1e-7), p0, grads)
    spec = _spec(S.adam_step, p0, grads, lr=LR, beta1=0.9, beta2=0.999, eps=1e-7, rule="keras")
    assert_follows_spec(run, spec)


@pytest.mark.tf
@pytest.mark.parametrize("setting", RMS_SETTINGS, ids=RMS_IDS)
def test_keras_rmsprop_is_spec_rule_keras(setting):
    keras = pytest.importorskip("keras")
    p0, grads = _problem(8)
    run = _keras_run(keras.optimizers.RMSprop(LR, rho=0.9, epsilon=1e-7, **setting), p0, grads)
    spec = _spec(S.rmsprop_step, p0, grads, lr=LR, rho=0.9, eps=1e-7, rule="keras", **setting)
    assert_follows_spec(run, spec)


def test_spec_rules_differ_and_sgd():
    p0, grads = _problem(9)
    hp = {"lr": LR, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}
    t, _ = _spec(S.adam_step, p0, grads, rule="torch", **hp)
    k, _ = _spec(S.adam_step, p0, grads, rule="keras", **hp)
    assert np.max(np.abs(t[-1] - k[-1])) > 1e-4
    p, st = S.sgd_step(p0, grads[0], {}, lr=0.5)
    np.testing.assert_allclose(p, np.float64(p0) - 0.5 * np.float64(grads[0]))
    assert st == {"step": 1}
    with pytest.raises(ValueError, match="rule"):
        S.adam_step(p0, grads[0], {}, rule="jax", **hp)


# -- (e) a misplaced epsilon is caught by (a) ------------------------------------------------------
@pytest.mark.tf
def test_mutation_eps_inside_sqrt_is_caught_keras():
    pytest.importorskip("keras")
    from keras import ops

    from metalearn_tf.optimizers import TorchAdam

    class Mutant(TorchAdam):
        def _denominator(self, v, bc2_sqrt):  # sqrt(v_hat + eps) instead of sqrt(v_hat) + eps
            return ops.sqrt(ops.add(ops.divide(v, ops.square(bc2_sqrt)), self.epsilon))

    p0, grads = _problem(3)
    spec = _spec(S.adam_step, p0, grads, lr=LR, beta1=0.9, beta2=0.999, eps=1e-8, rule="torch")
    with pytest.raises(AssertionError, match="parameters after step 1"):
        assert_follows_spec(_keras_run(Mutant(LR, epsilon=1e-8), p0, grads), spec)


@pytest.mark.torch
def test_mutation_eps_inside_sqrt_is_caught_torch():
    torch = pytest.importorskip("torch")
    from metalearn_torch.optimizers import KerasAdam

    class Mutant(KerasAdam):
        @staticmethod
        def _denominator(v, eps):  # sqrt(v + eps) instead of sqrt(v) + eps
            return torch.sqrt(v + eps)

    p0, grads = _problem(1)
    spec = _spec(S.adam_step, p0, grads, lr=LR, beta1=0.9, beta2=0.999, eps=1e-7, rule="keras")
    with pytest.raises(AssertionError, match="parameters after step 1"):
        assert_follows_spec(_torch_run(lambda ps: Mutant(ps, lr=LR, eps=1e-7), p0, grads), spec)


# -- (c) cross-framework -------------------------------------------------------------------------
MATCHED = [n for n, e in S.OPTIMIZERS.items() if e.rule is not None]


def _both(name, p0, grads, lr=LR, **overrides):
    """Parameters after ``len(grads)`` steps of table name ``name`` in torch and in Keras."""
    from metalearn_tf.optimizers import make_optimizer as k_make
    from metalearn_torch.optimizers import make_optimizer as t_make

    t, _ = _torch_run(lambda ps: t_make(name, ps, lr=lr, **overrides), p0, grads)
    k, _ = _keras_run(k_make(name, lr=lr, **overrides), p0, grads)
    return t[-1], k[-1]


@pytest.mark.parity
@pytest.mark.parametrize(("name", "setting"), [
    ("adam-torch", {}), ("adam-keras", {}), ("rmsprop-torch", {}), ("rmsprop-keras", {}),
    ("rmsprop-torch", {"momentum": 0.9, "centered": True}),
    ("rmsprop-keras", {"momentum": 0.9, "centered": True})])
def test_matched_names_agree_across_frameworks(name, setting):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    p0, grads = _problem(10)
    t, k = _both(name, p0, grads, **setting)
    # float32 rounding of two implementations of one rule (10 steps; parameters ~0.1)
    np.testing.assert_allclose(k, t, rtol=1e-6, atol=1e-7)


def _measured_differences(lr=1e-3):
    """Max abs parameter difference torch vs Keras after 10 steps on a fixed problem."""
    p0, grads = _problem(0, shape=(64, 32), grad_decades=7.0)
    rows = []
    for name in ["sgd", "adam", "rmsprop", *MATCHED]:
        t, k = _both(name, p0, grads, lr=lr)
        moved = float(np.max(np.abs(np.float64(t) - p0)))
        rows.append((name, float(np.max(np.abs(np.float64(t) - np.float64(k)))), moved))
    return rows


@pytest.mark.parity
def test_measured_differences_matched_vs_native():
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    measured = _measured_differences()
    rows = {n: d for n, d, _ in measured}
    print("\n| optimizer | classes | max abs diff torch vs Keras, 10 steps | parameters moved |")
    print("|---|---|---|---|")
    for name, diff, moved in measured:
        kind = ("native, one rule" if name == "sgd" else "native, two rules"
                if S.OPTIMIZERS[name].rule is None else "matched rule")
        print(f"| {name} | {kind} | {diff:.1e} | {moved:.1e} |")
    matched = max(rows[n] for n in MATCHED)
    assert matched < 1e-6
    # the native classes at equal eps are different optimisers: far beyond float32 rounding
    assert rows["adam"] > 100 * matched and rows["rmsprop"] > 100 * matched


# -- (d) canonical state -----------------------------------------------------------------------
CONFIG = ProtoNetConfig(BackboneConfig("conv4", image_size=16, hidden=4))


def _grads(seed):
    rng = np.random.default_rng(seed)
    return {p.name: (10.0 ** rng.uniform(-5, 0, p.shape) * rng.standard_normal(p.shape))
            .astype(np.float32) for p in param_spec(CONFIG) if p.trainable}


def _torch_model():
    from metalearn_torch.models import build_model

    return build_model(CONFIG, seed=0)


def _keras_model(weights):
    from metalearn_tf.checkpoint import set_canonical
    from metalearn_tf.models import build_model

    model = build_model(CONFIG, seed=1)
    set_canonical(model, weights)
    return model


def _torch_step(model, opt, grads):
    import torch

    for n, p in model.named_parameters():
        p.grad = torch.from_numpy(grads[n].copy())
    opt.step()


def _keras_step(model, opt, grads):
    from metalearn_tf.checkpoint import keras_variables

    spec = [p for p in param_spec(CONFIG) if p.trainable]
    by_name = to_framework(grads, spec, "keras")
    path = {id(v): k for k, v in keras_variables(model).items()}
    tv = model.trainable_variables
    opt.apply([by_name[path[id(v)]] for v in tv], tv)


def _assert_state_equal(a, b, **tol):
    assert a["step"] == b["step"] and set(a["slots"]) == set(b["slots"])
    for slot, arrays in a["slots"].items():
        assert set(arrays) == set(b["slots"][slot])
        for n, v in arrays.items():
            np.testing.assert_allclose(b["slots"][slot][n], v, err_msg=f"{slot}/{n}", **tol)


STATE_CASES = [("sgd", {}), ("adam", {}), ("rmsprop", {}), ("rmsprop", {"momentum": 0.9}),
               ("rmsprop", {"momentum": 0.9, "centered": True}), ("adam-torch", {}),
               ("rmsprop-torch", {"momentum": 0.5, "centered": True}), ("adam-keras", {}),
               ("rmsprop-keras", {"momentum": 0.5, "centered": True})]
STATE_IDS = [n + "".join(f"-{k}" for k in s) for n, s in STATE_CASES]


@pytest.mark.torch
@pytest.mark.parametrize(("name", "setting"), STATE_CASES, ids=STATE_IDS)
def test_torch_state_round_trip(name, setting):
    pytest.importorskip("torch")
    from metalearn_torch.optimizers import get_state, make_optimizer, set_state

    model = _torch_model()
    opt = make_optimizer(name, model.parameters(), lr=1e-3, **setting)
    fresh = get_state(opt, model)
    assert fresh["step"] == 0
    assert set(fresh["slots"]) == set(S.slot_names(S.optimizer_entry(name).algorithm, **setting))
    for s in range(3):
        _torch_step(model, opt, _grads(s))
    state = get_state(opt, model)
    if name != "sgd":
        assert state["step"] == 3
    other = make_optimizer(name, model.parameters(), lr=1e-3, **setting)
    set_state(other, model, state)
    _assert_state_equal(state, get_state(other, model), rtol=0, atol=0)
    if name != "sgd":  # torch's SGD keeps no state
        assert set(other.state_dict()["state"][0]) == {"step", *state["slots"]}


@pytest.mark.torch
@pytest.mark.parametrize("name", ["adam-torch", "rmsprop-torch", "adam-keras", "rmsprop-keras"])
def test_torch_set_state_copies(name):
    """The optimiser updates its slots in place; the arrays it was given must not change
    with them (a recorded state, or the other framework's, is reused by the parity driver:
    aliasing made every later update from that state wrong by ~0.4 lr)."""
    pytest.importorskip("torch")
    from metalearn_torch.optimizers import get_state, make_optimizer, set_state

    model = _torch_model()
    opt = make_optimizer(name, model.parameters(), lr=1e-3)
    _torch_step(model, opt, _grads(0))
    state = get_state(opt, model)
    before = {slot: {n: v.copy() for n, v in arrays.items()} for slot, arrays in state["slots"].items()}
    other = make_optimizer(name, model.parameters(), lr=1e-3)
    set_state(other, model, state)
    _torch_step(model, other, _grads(1))
    for slot, arrays in state["slots"].items():
        for n, v in arrays.items():
            np.testing.assert_array_equal(v, before[slot][n], err_msg=f"{slot}/{n}")


@pytest.mark.tf
@pytest.mark.parametrize(("name", "setting"), STATE_CASES, ids=STATE_IDS)
def test_keras_state_round_trip(name, setting):
    pytest.importorskip("keras")
    from metalearn_tf.optimizers import get_state, make_optimizer, set_state

    model = _keras_model(_torch_weights())
    opt = make_optimizer(name, lr=1e-3, **setting)
    fresh = get_state(opt, model)  # builds it
    assert fresh["step"] == 0
    assert set(fresh["slots"]) == set(S.slot_names(S.optimizer_entry(name).algorithm, **setting))
    for s in range(3):
        _keras_step(model, opt, _grads(s))
    state = get_state(opt, model)
    assert state["step"] == 3
    other = make_optimizer(name, lr=1e-3, **setting)
    set_state(other, model, state)
    _assert_state_equal(state, get_state(other, model), rtol=0, atol=0)


def _torch_weights():
    pytest.importorskip("torch")
    from metalearn_torch.checkpoint import get_canonical

    return get_canonical(_torch_model())


@pytest.mark.torch
def test_set_state_is_strict():
    pytest.importorskip("torch")
    from metalearn_shared.weights import WeightMismatchError
    from metalearn_torch.optimizers import get_state, make_optimizer, set_state

    model = _torch_model()
    opt = make_optimizer("adam-torch", model.parameters(), lr=1e-3)
    state = get_state(opt, model)
    with pytest.raises(ValueError, match=r"missing \['exp_avg_sq'\]"):
        set_state(opt, model, {"step": 1, "slots": {"exp_avg": state["slots"]["exp_avg"]}})
    with pytest.raises(ValueError, match=r"extra \['square_avg'\]"):
        set_state(opt, model, {"step": 1, "slots": {**state["slots"], "square_avg": {}}})
    name = next(iter(state["slots"]["exp_avg"]))
    broken = {**state["slots"]["exp_avg"]}
    del broken[name]
    with pytest.raises(WeightMismatchError, match=f"missing.*{name}"):
        set_state(opt, model, {"step": 1, "slots": {**state["slots"], "exp_avg": broken}})
    with pytest.raises(ValueError, match="'step' and 'slots'|'step': int"):
        set_state(opt, model, state["slots"])
    import torch

    with pytest.raises(ValueError, match="not the model's"):
        get_state(torch.optim.Adam([*model.parameters(), torch.nn.Parameter(torch.zeros(2))]), model)


@pytest.mark.parity
@pytest.mark.parametrize("name", MATCHED)
def test_state_continues_across_frameworks(name):
    """3 steps in torch → (weights, canonical state) → Keras; one more step in each: the same
    parameters. And back: Keras state → torch."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from metalearn_tf import optimizers as KO
    from metalearn_tf.checkpoint import get_canonical as k_weights
    from metalearn_torch import optimizers as TO
    from metalearn_torch.checkpoint import get_canonical as t_weights

    # RMSprop without momentum: exercise every slot (momentum and centered); a name with its
    # own momentum (rmsprop-santoro) runs as named — centred with eps 1e-10, v - mean(g)²
    # cancels and float32 rounding dominates the buffers.
    plain = name.startswith("rmsprop") and not S.optimizer_settings(name)["momentum"]
    setting = {"momentum": 0.5, "centered": True} if plain else {}
    t_model = _torch_model()
    t_opt = TO.make_optimizer(name, t_model.parameters(), lr=1e-3, **setting)
    for s in range(3):
        _torch_step(t_model, t_opt, _grads(s))
    k_model = _keras_model(t_weights(t_model))
    k_opt = KO.make_optimizer(name, lr=1e-3, **setting)
    KO.set_state(k_opt, k_model, TO.get_state(t_opt, t_model))
    _torch_step(t_model, t_opt, _grads(3))
    _keras_step(k_model, k_opt, _grads(3))
    t_w, k_w = t_weights(t_model), k_weights(k_model)
    for n in t_w:
        np.testing.assert_allclose(k_w[n], t_w[n], rtol=1e-6, atol=1e-7, err_msg=n)
    _assert_state_equal(TO.get_state(t_opt, t_model), KO.get_state(k_opt, k_model),
                        rtol=1e-5, atol=1e-12)
    # and back: Keras → a fresh torch optimiser, one more step each
    t2 = TO.make_optimizer(name, t_model.parameters(), lr=1e-3, **setting)
    TO.set_state(t2, t_model, KO.get_state(k_opt, k_model))
    _torch_step(t_model, t2, _grads(4))
    _keras_step(k_model, k_opt, _grads(4))
    t_w, k_w = t_weights(t_model), k_weights(k_model)
    for n in t_w:
        np.testing.assert_allclose(k_w[n], t_w[n], rtol=1e-6, atol=1e-7, err_msg=n)


# -- (f) .keras round trip ------------------------------------------------------------------------
@pytest.mark.tf
@pytest.mark.parametrize("cls_name", ["TorchAdam", "TorchRMSprop"])
def test_keras_file_round_trip_with_torch_rule_optimizer(cls_name, tmp_path):
    keras = pytest.importorskip("keras")
    from metalearn_tf import optimizers as KO
    from metalearn_tf.models import build_model

    model = build_model(CONFIG, seed=0)
    opt = getattr(KO, cls_name)(learning_rate=3e-3, epsilon=1e-6, **(
        {"momentum": 0.5, "centered": True} if cls_name == "TorchRMSprop" else {}))
    model.compile(optimizer=opt, loss=model.make_loss())
    for s in range(2):
        _keras_step(model, opt, _grads(s))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.optimizer) is type(opt)
    assert loaded.optimizer.get_config() == opt.get_config()
    _assert_state_equal(KO.get_state(opt, model), KO.get_state(loaded.optimizer, loaded),
                        rtol=0, atol=0)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["adam", "rmsprop", "adam-keras"])
@pytest.mark.parametrize("restore", ["load_state_dict", "set_state"])
def test_restored_state_of_a_channels_last_weight_continues_exactly(name, restore):
    """A state restored contiguous (from a file) for a channels-last weight: the next step
    equals the uninterrupted one bit for bit. The fused Adam pairs elements in storage
    order: without :func:`match_state_layout` its step is silently wrong (the RMSprop and
    Keras-rule cases, which index by shape, guard the other kernels)."""
    torch = pytest.importorskip("torch")
    from metalearn_torch.models import build_model, use_memory_format
    from metalearn_torch.optimizers import get_state, make_optimizer, match_state_layout, set_state

    config = ProtoNetConfig(backbone=BackboneConfig(name="conv4", image_size=16, hidden=4))

    def model_and_grads():
        model = use_memory_format(build_model(config, seed=0), "channels-last")
        gen = torch.Generator().manual_seed(1)
        grads = [[torch.randn(p.shape, generator=gen) for p in model.parameters()]
                 for _ in range(2)]
        return model, grads

    def step(model, opt, grads):
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        opt.step()

    whole, grads = model_and_grads()
    opt = make_optimizer(name, whole.parameters(), lr=LR)
    step(whole, opt, grads[0])
    saved = opt.state_dict()
    canonical = get_state(opt, whole)
    saved_state = {i: {k: v.clone(memory_format=torch.contiguous_format) for k, v in st.items()}
                   for i, st in saved["state"].items()}  # as a file restores it
    weights = [p.detach().clone() for p in whole.parameters()]
    step(whole, opt, grads[1])

    resumed, _ = model_and_grads()
    with torch.no_grad():
        for p, w in zip(resumed.parameters(), weights, strict=True):
            p.copy_(w)
    opt2 = make_optimizer(name, resumed.parameters(), lr=LR)
    if restore == "load_state_dict":
        opt2.load_state_dict({"state": saved_state, "param_groups": saved["param_groups"]})
        match_state_layout(opt2)
    else:
        set_state(opt2, resumed, canonical)
    step(resumed, opt2, grads[1])
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
