"""The ``meta-batch`` benchmark's two ways give the same meta-gradient, and its section runs.

Tiny sizes (the specs' quick workloads: conv4 8 channels, 16 px, 5-way 1-shot 1-query) and
3 tasks: the library's loop (``meta_step``) and the ``torch.func`` vmap path from the same
weights and episodes, compared with torch's fp32 ``assert_close`` defaults.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from benchmarks.common import Budget, Device  # noqa: E402
from benchmarks.meta_batch import (  # noqa: E402
    MODELS,
    VmapMetaStep,
    meta_gradient,
    run_meta_batch,
    setup,
)

TASKS = 3


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, as the runner's quick mode (two stall on a shared machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize(("name", "norm"), [
    ("maml", "composite"), ("fomaml", "composite"), ("fomaml", "fused"),
    ("metasgd", "composite"), ("anil", "composite"),  # the path is generic over the family
])
def test_vmap_meta_gradient_equals_the_library_loop(name: str, norm: str) -> None:
    model, episodes, _ = setup(name, quick=True, meta_batch=TASKS)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loop = meta_gradient("loop", model, episodes)
    vmap = meta_gradient("vmap", model, episodes, norm)
    assert loop.keys() == vmap.keys() == before.keys()
    for n in loop:
        torch.testing.assert_close(vmap[n], loop[n], msg=lambda m, n=n: f"{n}: {m}")
        torch.testing.assert_close(model.get_parameter(n), before[n], rtol=0, atol=0)
    assert any(g.abs().max() > 0 for g in loop.values())


def test_vmap_path_refuses_running_statistics_and_fused_second_order() -> None:
    model, _, _ = setup("maml", quick=True, meta_batch=1)
    with pytest.raises(ValueError, match="functorch#534"):
        VmapMetaStep(model, norm="fused")
    running = model.config.replace(bn="running")
    model, _, _ = setup("maml", quick=True, meta_batch=1, config=running)
    with pytest.raises(ValueError, match="running statistics"):
        VmapMetaStep(model)


def test_quick_section_measures_every_case() -> None:
    budget = Budget(warmup=1, repeats=2, min_repeats=1, seconds=0.1)
    out = run_meta_batch(True, budget, ("torch",), Device("cpu"), threads=1,
                         progress=lambda line: None)
    records = out["records"]
    assert not [r["error"] for r in records if "error" in r]
    assert {r["model"] for r in records} == set(MODELS)
    assert {(r["path"], r["meta_batch"]) for r in records} == {
        (p, e) for p in ("loop", "vmap") for e in (1, 2)}
    for r in records:
        assert r["per_s"] == pytest.approx(r["meta_batch"] / r["median_s"])
        assert (r["path"] == "vmap") == ("vs_loop" in r)
    assert run_meta_batch(True, budget, ("keras",), Device("cpu"), 1)["records"] == []
