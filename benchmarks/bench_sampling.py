"""Sampler throughput on one core: few-shot episodes/s, pairs/s, sequences/s.

Usage:
    python -m benchmarks.bench_sampling            # full: 1000 classes × 20 images, 28×28
    python -m benchmarks.bench_sampling --quick    # tiny, seconds; run by the tests

Prints one JSON object per line. The dataset is random uint8 images held in memory: the
samplers only index and convert, so the content does not change the cost. The process is
pinned to one CPU and BLAS/OpenMP pools are set to one thread (the samplers use neither,
but a benchmark should not depend on it). Figures are the median over repeats, after a
warm-up.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from metalearn_shared.data.dataset import ClassInfo, ImageDataset  # noqa: E402
from metalearn_shared.episodes import (  # noqa: E402
    FewShotSampler,
    PairSampler,
    SequenceSampler,
)

__all__ = ["main", "make_dataset"]


def make_dataset(classes: int, per_class: int, size: int, seed: int = 0) -> ImageDataset:
    """``classes × per_class`` random ``size × size`` uint8 images, class-major."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (classes * per_class, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    info = tuple(ClassInfo("bench", f"character{c:04d}") for c in range(classes))
    return ImageDataset(images, labels, info, name=f"random-{classes}x{per_class}")


def _rate(call: Callable[[int], object], units_per_call: int, calls: int, repeats: int) -> dict:
    """Median units/s over ``repeats`` runs of ``calls`` calls (call index passed in)."""
    call(0)  # warm-up: first-touch allocations, code paths
    times = []
    for r in range(repeats):
        base = (r + 1) * calls
        start = time.perf_counter()
        for j in range(calls):
            call(base + j)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "per_s": round(units_per_call * calls / median, 1),
        "median_s": round(median, 5),
        "min_s": round(min(times), 5),
        "repeats": repeats,
        "units": units_per_call * calls,
    }


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def run(quick: bool) -> list[dict]:
    """Measure every sampler; returns the records it printed."""
    classes, per_class = (50, 20) if quick else (1000, 20)
    repeats = 2 if quick else 5
    scale = 0.05 if quick else 1.0  # fraction of the full number of calls
    dataset = make_dataset(classes, per_class, 28)
    records: list[dict] = []

    def calls(n: int) -> int:
        return max(1, int(n * scale))

    few = FewShotSampler(dataset, ways=5, shots=1, queries=15, seed=0)
    for batch in (1, 16, 64):
        n = calls(3200 // batch)
        stats = _rate(lambda b, s=batch: few.batch(b * s, s), batch, n, repeats)
        records.append(
            {
                "bench": "fewshot",
                "ways": 5,
                "shots": 1,
                "queries": 15,
                "batch": batch,
                "unit": "episodes",
                **stats,
            }
        )
    stats = _rate(few.episode, 1, calls(2000), repeats)
    records.append(
        {
            "bench": "fewshot.episode",
            "ways": 5,
            "shots": 1,
            "queries": 15,
            "batch": None,
            "unit": "episodes",
            **stats,
        }
    )

    for augment in (False, True):
        pairs = PairSampler(dataset, batch=128, seed=0, augment=augment)
        n = calls(50 if augment else 800)
        stats = _rate(pairs.episode, 128, n, repeats)
        records.append(
            {"bench": "pairs", "batch": 128, "augment": augment, "unit": "pairs", **stats}
        )

    for ways, labels in ((5, "onehot"), (15, "string")):
        seq = SequenceSampler(dataset, ways, 10, seed=0, labels=labels, rotate=True)
        n = calls(3200 // ways // 16)
        stats = _rate(lambda b, s=seq: s.batch(b * 16, 16), 16, n, repeats)
        records.append(
            {
                "bench": "sequences",
                "ways": ways,
                "samples_per_class": 10,
                "labels": labels,
                "rotate": True,
                "batch": 16,
                "unit": "sequences",
                **stats,
            }
        )

    for record in records:
        record.update(size="28x28", dataset=dataset.name)
        _emit(record)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny dataset and few repeats")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args(argv)

    pinned = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        pinned = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(pinned)})
    try:
        _emit(
            {
                "bench": "env",
                "python": platform.python_version(),
                "numpy": np.__version__,
                "machine": platform.machine(),
                "cpus_used": 1 if pinned else os.cpu_count(),
                "quick": args.quick,
            }
        )
        run(args.quick)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)  # the caller (a test) keeps its CPUs
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
