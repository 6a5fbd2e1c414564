"""The benchmark suite's tiny mode runs end to end and writes complete results.

``benchmarks.runner.main(["--quick", ...])`` measures the quick workloads
(``spec.workloads(True)``) of one registered model per implementation module — models that
share a module (the MAML family: one class, a flag per learner) share every code path the
runner exercises, and each costs tracing and compilation time in CI — in every mode of both
frameworks (tiny sizes, one thread), and the scaling section trains one model of each meta-batch-splitting family on 1
and 2 torch processes (``torchrun``, gloo) and Keras mirrored replicas; the figures mean
nothing, the paths must work. The analytic FLOP formulas are checked against torch's own
counter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from metalearn_shared import models
from metalearn_shared.models import names as model_names
from metalearn_shared.registry import FRAMEWORKS

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


#: The models the quick run measures: one per implementation (``models.representatives``).
QUICK_MODELS = models.representatives()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The README's ``metalearn bench --quick``: the CLI hands its options to the runner."""
    from metalearn.cli import main

    out = tmp_path_factory.mktemp("bench")
    start = time.perf_counter()
    assert main(["bench", "--quick", "--models", ",".join(QUICK_MODELS), "--out", str(out)]) == 0
    return out, time.perf_counter() - start


def _only(out: Path, pattern: str) -> Path:
    found = sorted(out.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {out}; found {found}"
    return found[0]


def test_quick_run_writes_json_markdown_and_charts(quick_run: tuple[Path, float]) -> None:
    from benchmarks.steps import KERAS_MODES, TORCH_MODES

    out, seconds = quick_run
    results = json.loads(_only(out, "*Z.json").read_text())
    markdown = _only(out, "*Z.md").read_text()
    records = results["steps"]["records"]
    failed = [(r["workload"], r["framework"], r["mode"], r["phase"], r["error"])
              for r in records if "error" in r]
    assert not failed, failed
    assert {r["model"] for r in records} == set(QUICK_MODELS)
    assert {r["framework"] for r in records} == set(FRAMEWORKS)
    expected = {w.name for name in QUICK_MODELS for w in models.get(name).workloads(True)}
    for framework in FRAMEWORKS:  # every spec's quick workload trains and infers in each
        assert {r["workload"] for r in records if r["framework"] == framework} == expected
    for framework, modes in (("torch", TORCH_MODES), ("keras", KERAS_MODES)):
        assert {r["mode"] for r in records if r["framework"] == framework} == set(modes)
    assert all(r["per_s"] > 0 and r["median_s"] > 0 for r in records)
    for r in records:  # described by the spec's workload: the report selects rows by these
        spec = models.get(r["model"])
        assert r["family"] == spec.family
        assert r["flops_per_call"] > 0
    for name in QUICK_MODELS:
        assert name in markdown
    for mode in {*TORCH_MODES, *KERAS_MODES}:
        assert f"| {mode} |" in markdown
    workloads = {r["workload"] for r in records}
    pngs = {p.name for p in out.glob("*.png")}
    assert {f"{_only(out, '*Z.json').stem}-{w}.png" for w in workloads} <= pngs
    assert any(name.endswith("-targets.png") for name in pngs)
    # No wall-time assertion: on a shared 2-core runner it measures the neighbours. CI's
    # --durations report shows the quick run's time.


def test_quick_run_records_environment_and_targets(quick_run: tuple[Path, float]) -> None:
    out, _ = quick_run
    results = json.loads(_only(out, "*Z.json").read_text())
    env = results["meta"]["environment"]
    assert env["cpu_model"] and env["timestamp"]
    assert env["torch"]["num_threads"] >= 1 and "intra_op_threads" in env["keras"]
    assert results["gemm"] and all(g["gflops_per_s"] > 0 for g in results["gemm"])
    methods = {r["method"] for r in results["sampling"]["records"]}
    assert {"ours", "per-item DataLoader"} <= methods
    seed = results["seed"]
    assert any(p.get("baseline") for p in seed["pipelines"]) and seed["ladder"]
    names = [t["target"] for t in results["targets"]]
    assert any("DataLoader" in n for n in names) and any("GEMM" in n for n in names)
    assert any("seed-style" in n for n in names)
    for spec in models.specs("sequence"):  # the MANN's target, for every sequence model
        for framework in FRAMEWORKS:
            assert f"{spec.name} training: compiled ≥ 3× eager ({framework})" in names
    for t in results["targets"]:
        assert t["pass"] in (True, False, None)
        assert t["pass"] is not False or t["why"], t


def test_quick_run_measures_the_meta_batch_paths(quick_run: tuple[Path, float]) -> None:
    from benchmarks.meta_batch import MODELS

    out, _ = quick_run
    records = json.loads(_only(out, "*Z.json").read_text())["meta-batch"]["records"]
    assert not [(r["model"], r["path"], r["error"]) for r in records if "error" in r]
    assert {(r["model"], r["path"]) for r in records} == {(m, p) for m in MODELS if m in QUICK_MODELS
                                                          for p in ("loop", "vmap")}
    assert "## MAML meta-step on a meta-batch" in _only(out, "*Z.md").read_text()


def test_quick_run_measures_scaling(quick_run: tuple[Path, float]) -> None:
    from benchmarks.scaling import MODELS

    out, _ = quick_run
    results = json.loads(_only(out, "*Z.json").read_text())
    records = results["scaling"]["records"]
    failed = [(r["label"], r["error"][-1500:]) for r in records if "error" in r]
    assert not failed, failed
    assert {(r["model"], r["framework"], r["world"]) for r in records} == {
        (m, f, w) for m in MODELS for f in FRAMEWORKS for w in (1, 2)}
    for r in records:
        assert r["warmup"] >= 1 and r["steps"] >= 2 and len(r["samples"]) == r["steps"]
        assert r["images_per_s"] == pytest.approx(r["images_per_step"] / r["median_s"])
        assert r["meta_batch"] == r["per_rank_meta_batch"] * r["world"]
        if r["world"] == 2:  # the same total meta-batch as its baseline, W = 1
            base = next(b for b in records if b["world"] == 1 and b["model"] == r["model"]
                        and b["framework"] == r["framework"])
            assert r["meta_batch"] == base["meta_batch"]
            assert r["efficiency"] == pytest.approx(r["images_per_s"] / (2 * base["images_per_s"]))
    assert "## Scaling" in _only(out, "*Z.md").read_text()
    assert (out / f"{_only(out, '*Z.json').stem}-scaling.png").exists()


def test_scaling_efficiency_is_throughput_over_world_times_baseline() -> None:
    from benchmarks.scaling import efficiency

    base = {"model": "m", "framework": "torch", "world": 1, "median_s": 1.0,
            "images_per_s": 100.0, "engine": "1 process", "threads_per_process": 2}
    two = {**base, "world": 2, "images_per_s": 150.0, "engine": "DDP gloo"}
    other = {**two, "framework": "keras"}  # no baseline of its own: left alone
    efficiency([base, two, other])
    assert two["speedup"] == pytest.approx(1.5) and two["efficiency"] == pytest.approx(0.75)
    assert "efficiency" not in other and "efficiency" not in base


def test_cuda_request_without_gpu_skips_cleanly(tmp_path: Path, capsys, monkeypatch) -> None:
    import torch

    from benchmarks.runner import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    assert main(["--device", "cuda", "--quick", "--out", str(tmp_path)]) == 0
    assert "no GPU" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_runner_takes_framework_aliases_and_checks_model_names() -> None:
    from benchmarks.runner import _parse

    args = _parse(["--frameworks", "tf,torch,keras", "--models", ",".join(model_names())])
    assert args.framework_list == ("keras", "torch")
    assert args.model_list == tuple(model_names())
    with pytest.raises(SystemExit):
        _parse(["--models", "no-such-model"])
    with pytest.raises(SystemExit):
        _parse(["--frameworks", "jax"])


def test_model_flops_are_the_specs_formulas() -> None:
    from benchmarks.flops import Flops, model_flops
    from benchmarks.steps import workloads

    ws = workloads(quick=True)
    assert {w.model for w in ws} == set(model_names())
    for w in ws:
        spec = models.get(w.model)
        assert w.flops == model_flops(w.config, w.task) == Flops(*spec.flops(w.config, w.task))
        assert 0 < w.flops.forward < w.flops.train
        assert w.train.lr == spec.defaults.lr and w.train.optimizer == spec.defaults.optimizer


def test_flop_formulas_match_torch_counter() -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.flops import model_flops
    from metalearn_shared.config import BackboneConfig
    from metalearn_shared.models.backbones import backbone_flops
    from metalearn_shared.models.lstm import LSTMConfig
    from metalearn_shared.models.siamese import SiameseConfig
    from metalearn_shared.registry import Task
    from metalearn_torch.models import build_model

    for name in ("seed", "conv4"):
        config = BackboneConfig(name=name)
        net = build_model(SiameseConfig(backbone=config), seed=0).embedding
        x = torch.rand(2, 28, 28)
        with FlopCounterMode(display=False) as fwd:
            net(x)
        with FlopCounterMode(display=False) as train:
            net(x).sum().backward()
        expected = backbone_flops(config)
        assert fwd.get_total_flops() == 2 * expected.forward
        assert train.get_total_flops() == 2 * expected.train
    config = LSTMConfig(controller_units=16)
    model = build_model(config, seed=0)
    x, prev = torch.rand(2, 3, config.input_size), torch.rand(2, 3, config.label_size)
    with FlopCounterMode(display=False) as train:
        model(x, prev).sum().backward()
    # Equal but for the first step's recurrent matmul, whose input (h = 0) needs no gradient.
    task = Task(batch=2, ways=3, samples_per_class=1)  # T = 3 steps
    assert train.get_total_flops() == pytest.approx(model_flops(config, task).train, rel=0.01)
