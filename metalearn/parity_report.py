"""The report of a parity run: ``metalearn parity``'s records, table, events, JSON and plots.

:mod:`metalearn.parity` runs the cases and returns :class:`~metalearn_shared.parity.Comparison`
lists; this module measures each against the one tolerance table
(:func:`metalearn_shared.tolerances.measure`), names the discrete events that the measured
allowances absorbed, and writes ``parity.json`` and the PNG plots. :func:`main` is the
command; it reaches the frameworks through their backends only.
"""

from __future__ import annotations

import importlib
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from metalearn import backends
from metalearn.parity import backend, run_case
from metalearn_shared import models as registry
from metalearn_shared.parity import DIRECTIONS, CaseResult, cases
from metalearn_shared.tolerances import TOL, measure

__all__ = ["SETTINGS_ENV", "summarise", "format_table", "format_events", "write_report", "main"]

#: Environment variables that change the kernels and reduction orders a run uses (the CPU
#: matrix of ``.ci/run`` sets them); each report records them.
SETTINGS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS",
                "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")

#: Groups of teacher-forced figures (both frameworks start from the same weights and state).
FORCED = ("step", "update")


def _worst(figures: Sequence[Mapping[str, Any]], groups: Sequence[str], key: str,
           step: int | None = None) -> float | None:
    vals = [f[key] for f in figures if f["group"] in groups and (step is None or f["step"] == step)]
    return max(vals) if vals else None


def _events(figures: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The figures that passed only thanks to a measured allowance, one per step and rule:
    a rounding-flipped kink in a teacher-forced step (``event``), a free-running divergence
    beyond the "train" bound that the noise floor covers (``floor``)."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for f in figures:
        if not f["allow"] or f["plain_ratio"] <= 1:
            continue
        rule = "floor" if f["group"] == "train" else "event"
        key = (f["step"], rule)
        if key not in out or f["plain_ratio"] > out[key]["plain_ratio"]:
            out[key] = {"step": f["step"], "rule": rule, "param": f["param"], "what": f["what"],
                        "max_abs": f["max_abs"], "plain_ratio": f["plain_ratio"],
                        "ratio": f["ratio"]}
    return [out[k] for k in sorted(out)]


def summarise(result: CaseResult) -> dict[str, Any]:
    """A JSON-ready record of one :class:`~metalearn_shared.parity.CaseResult`: every figure
    with its measure, the worst per group, per step the free-running divergence and the
    noise floor, the events the allowances absorbed, the step times."""
    figures = []
    for c in result.comparisons:
        m = measure(c.actual, c.expected, c.kind, c.scale, c.allow)
        plain = measure(c.actual, c.expected, c.kind, c.scale) if c.allow else m
        figures.append({"what": c.what, "group": c.group, "kind": c.kind, "param": c.param,
                        "step": c.step, "scale": c.scale, "allow": c.allow,
                        "max_abs": m.max_abs, "max_rel": m.max_rel, "ratio": m.ratio,
                        "plain_ratio": plain.ratio, "passed": m.passed})

    n_steps = max((f["step"] or 0 for f in figures), default=0)
    divergence = [max(f["max_abs"] / max(1.0, f["scale"]) for f in figures
                      if f["group"] == "train" and f["step"] == k) for k in range(1, n_steps + 1)]
    train_ratio = _worst(figures, ("train",), "ratio")
    return {
        "case": result.case.name, "model": result.case.model, "direction": result.direction,
        "optimizer": result.case.optimizer, "config": result.case.config.to_dict(),
        "lr": result.case.rate, "steps": n_steps,
        "passed": all(f["passed"] for f in figures),
        "worst_ratio": max((f["ratio"] for f in figures), default=0.0),
        "forced_ratio": _worst(figures, FORCED, "ratio"),
        "summary": {
            "forward_max_abs": _worst(figures, ("forward",), "max_abs"),
            "forward_max_rel": _worst(figures, ("forward",), "max_rel"),
            "spec_max_abs": _worst(figures, ("spec",), "max_abs"),
            "exact_max_abs": _worst(figures, ("exact",), "max_abs"),
            "loss_abs": _worst(figures, ("loss",), "max_abs"),
            "loss_rel": _worst(figures, ("loss",), "max_rel"),
            "grad_max_abs": _worst(figures, ("grad",), "max_abs"),
            "step_max_abs": _worst(figures, FORCED, "max_abs"),
            "train_max_abs": _worst(figures, ("train",), "max_abs", n_steps) if n_steps else None,
        },
        "divergence": divergence,
        "floor": list(result.floor),
        # How many times the worst free-running figure could grow before failing.
        "headroom": (1.0 / train_ratio if train_ratio else None),
        "step_errors": divergence,
        "events": _events(figures),
        "moved": result.moved,
        "step_ms": {fw: _median_ms(s) for fw, s in result.seconds.items()},
        "figures": figures,
    }


def _median_ms(seconds: Sequence[float]) -> float | None:
    """Median step time in ms, the first step (tracing, warm-up) left out when there are more."""
    if not seconds:
        return None
    return 1e3 * float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def _fmt(v: float | None, spec: str = ".1e") -> str:
    return "-" if v is None else format(v, spec)


def _last(values: Sequence[float]) -> float | None:
    return values[-1] if values else None


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The terminal table: one row per case and direction."""
    head = (f"{'case':<34} {'direction':<15} {'fwd abs':>8} {'grad abs':>8} {'forced':>6} "
            f"{'floor':>8} {'diverge':>8} {'headroom':>8} {'torch ms':>8} {'keras ms':>8} "
            f"{'worst/tol':>9}  result")
    lines = [head, "-" * len(head)]
    for r in records:
        s, ms = r["summary"], r["step_ms"]
        lines.append(
            f"{r['case']:<34} {r['direction']:<15} {_fmt(s['forward_max_abs']):>8} "
            f"{_fmt(s['grad_max_abs']):>8} {_fmt(r['forced_ratio'], '.2f'):>6} "
            f"{_fmt(_last(r['floor'])):>8} {_fmt(_last(r['divergence'])):>8} "
            f"{_fmt(r['headroom'], '.1f'):>8} "
            f"{_fmt(ms.get('torch'), '.1f'):>8} {_fmt(ms.get('keras'), '.1f'):>8} "
            f"{r['worst_ratio']:>9.2f}  {'ok' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)


def format_events(records: Sequence[Mapping[str, Any]]) -> str:
    """One line per discrete event a measured allowance absorbed: which case, step, layer
    and rule — so chaos is named, not hidden."""
    lines = []
    for r in records:
        for e in r["events"]:
            why = ("a kink flipped by rounding in a teacher-forced step: the source jumps "
                   "as much from a start nudged by a few ulps (event_sensitivity)"
                   if e["rule"] == "event" else "free-running divergence within the noise "
                   "floor (FLOOR_MULTIPLE)")
            lines.append(f"  {r['case']} {r['direction']} step {e['step']}: {e['param']} "
                         f"{e['max_abs']:.2g} = {e['plain_ratio']:.3g}x the plain bound, "
                         f"{e['ratio']:.2f} of the allowed: {why}")
    return "\n".join(lines)


def _plot_layers(records: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Per-parameter error of one case, both directions: gradient, and the worst
    teacher-forced step."""
    import matplotlib.pyplot as plt

    params = [f["param"] for f in records[0]["figures"] if f["group"] == "grad"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.28 * len(params) + 1.6), sharey=True)
    y = np.arange(len(params))
    for ax, group, title in ((axes[0], "grad", "gradient (max abs)"),
                             (axes[1], "step", "teacher-forced steps (worst share of bound)")):
        key = "max_abs" if group == "grad" else "ratio"
        for i, r in enumerate(records):
            err: dict[str, float] = {}
            for f in r["figures"]:
                if f["group"] == group and f["param"] in params:
                    err[f["param"]] = max(err.get(f["param"], 0.0), f[key])
            ax.barh(y + 0.4 * i - 0.2, [max(err.get(p, 0.0), 1e-12) for p in params], height=0.4,
                    label=r["direction"])
        bound = TOL["grad"][1] if group == "grad" else 1.0
        ax.axvline(bound, color="k", ls="--", lw=1, label="tolerance")
        ax.set(xscale="log", title=title)
    axes[0].set_yticks(y, params, fontsize=7)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{records[0]['case']}: per parameter (floor 1e-12 = exact)", fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def _plot_steps(records: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Per step, the free-running cross-framework divergence (solid) against the noise
    floor's allowance (dashed), one panel per registered model."""
    import matplotlib.pyplot as plt

    from metalearn_shared.tolerances import FLOOR_MULTIPLE

    models = [m for m in registry.names() if any(r["model"] == m and r["divergence"] for r in records)]
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4.6 * max(1, len(models)), 3.6),
                             squeeze=False)
    for ax, model in zip(axes[0], models, strict=False):
        for r in records:
            if r["model"] == model and r["divergence"]:
                k = np.arange(1, len(r["divergence"]) + 1)
                line, = ax.plot(k, np.maximum(r["divergence"], 1e-12), marker="o", ms=3,
                                label=f"{r['case']} {r['direction'].replace('_to_', '→')}")
                allowed = TOL["train"][1] + FLOOR_MULTIPLE * np.asarray(r["floor"])
                ax.plot(k, allowed, ls="--", lw=1, color=line.get_color())
        ax.axhline(TOL["train"][1], color="k", ls=":", lw=1, label="train bound")
        ax.set(yscale="log", xlabel="step", ylabel="divergence (solid), allowed (dashed)",
               title=model)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=5)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    import matplotlib.pyplot as plt

    from metalearn_shared.data.cache import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out


def write_report(records: Sequence[Mapping[str, Any]], out_dir: str | Path,
                 meta: Mapping[str, Any]) -> list[Path]:
    """``parity.json`` and the PNG plots of a parity run; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    from metalearn_shared.parity import EVENT_NUDGES
    from metalearn_shared.tolerances import FLOOR_MULTIPLE
    from metalearn_shared.training import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out_dir / "parity.json", {
        **meta, "tolerances": {k: {"rtol": r, "atol": a} for k, (r, a) in TOL.items()},
        "event_nudges": EVENT_NUDGES, "floor_multiple": FLOOR_MULTIPLE,
        "passed": all(r["passed"] for r in records), "results": list(records)})]
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)
    for name, recs in by_case.items():
        if any(f["group"] == "grad" for f in recs[0]["figures"]):
            paths.append(_plot_layers(recs, out_dir / f"layers-{name}.png"))
    if any(r["divergence"] for r in records):
        paths.append(_plot_steps(records, out_dir / "steps.png"))
    return paths


def _versions() -> dict[str, str]:
    import metalearn_shared

    out = {"metalearn": metalearn_shared.__version__, "python": platform.python_version(),
           "numpy": np.__version__}
    for name in ("torch", "tensorflow", "keras"):
        try:
            out[name] = importlib.import_module(name).__version__
        except ModuleNotFoundError:
            out[name] = "not installed"
    return out


def _settings() -> dict[str, Any]:
    """The kernel- and thread-selecting settings the run used (see :data:`SETTINGS_ENV`)."""
    out: dict[str, Any] = {"machine": platform.machine(), "processor": platform.processor(),
                           "env": {k: os.environ[k] for k in SETTINGS_ENV if k in os.environ}}
    for fw in backends.FRAMEWORKS:
        out[fw] = backend(fw).parity_hooks().threads_in_use()
    return out


def _run_all(selected: Sequence[Any], steps: int, seed: int, workdir: Path,
             directions: Sequence[str] = DIRECTIONS) -> Iterator[dict]:
    for case in selected:
        for direction in (d for d in case.directions if d in directions):
            t0 = time.perf_counter()
            record = summarise(run_case(case, direction, workdir, steps=steps, seed=seed))
            record["seconds"] = time.perf_counter() - t0
            yield record


def main(args: Any) -> int:
    """``metalearn parity [--model all|NAME[,NAME…]] [--optimizers …] [--steps N] [--seed S]
    [--threads T] [--direction both|torch_to_keras|keras_to_torch] [--out DIR] [--tiny]``.

    Returns:
        0 when every figure is within the tolerance table, 1 otherwise.

    Raises:
        ParityError: a framework is missing or the run itself broke.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = getattr(args, "threads", 1)
    # Before TensorFlow starts: its thread pools are fixed then.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(threads))
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1; got {args.steps}.")
    optimizers = tuple(getattr(args, "optimizers", None) or ("sgd",))
    selected = cases(args.model, tiny=args.tiny, optimizers=optimizers)
    steps = min(args.steps, 3) if args.tiny else args.steps
    chosen = getattr(args, "direction", "both")
    directions = DIRECTIONS if chosen == "both" else (chosen,)
    records = []
    t0 = time.perf_counter()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="metalearn-parity-") as tmp:
        for fw in backends.FRAMEWORKS:
            stack.enter_context(backend(fw).parity_hooks().parity_context(args.seed, threads))
        for record in _run_all(selected, steps, args.seed, Path(tmp), directions):
            print(f"  {record['case']:<34} {record['direction']:<15} "
                  f"{'ok' if record['passed'] else 'FAIL'} ({record['seconds']:.1f} s)", flush=True)
            records.append(record)
        settings = _settings()
    meta = {"command": "metalearn parity", "model": args.model, "optimizers": list(optimizers),
            "steps": steps, "seed": args.seed, "tiny": bool(args.tiny), "threads": threads,
            "directions": list(directions), "seconds": round(time.perf_counter() - t0, 1),
            "versions": _versions(), "settings": settings}
    paths = write_report(records, args.out, meta)
    print()
    print(format_table(records))
    events = format_events(records)
    if events:
        print("\nDiscrete events absorbed by a measured allowance (step, layer, rule):")
        print(events)
    failed = [(r, f) for r in records for f in r["figures"] if not f["passed"]]
    for r, f in failed[:20]:
        rtol, atol = TOL[f["kind"]]
        print(f"FAIL {r['case']} {r['direction']}: {f['what']}: max abs {f['max_abs']:.3g}, "
              f"{f['ratio']:.3g}x its tolerance ({f['kind']}: rtol {rtol}, atol {atol}, "
              f"+ allowance {f['allow']:.3g}, scale {f['scale']:.3g})")
    if len(failed) > 20:
        print(f"... and {len(failed) - 20} more failing figures in {paths[0]}")
    print("fwd/grad abs: raw max abs error; forced: worst share of its bound any teacher-forced "
          "figure used; floor/diverge: after the last step, free-running; headroom: how many "
          "times the worst free-running figure could grow; worst/tol > 1 fails.")
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    print(f"{len(records)} runs, {sum(len(r['figures']) for r in records)} figures: "
          + ("all within the tolerance table" if not failed else f"{len(failed)} out of tolerance"))
    return 1 if failed else 0
