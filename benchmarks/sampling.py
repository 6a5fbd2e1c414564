"""Section ``sampling``: our samplers against the ways people usually feed episodes.

Measured on the same in-memory ``uint8`` dataset (random images; the samplers only index
and convert, so content does not change the cost), all producing float32 images in [0, 1]:

* **ours** — :class:`~metalearn_shared.episodes.FewShotSampler` (5-way 1-shot 15-query, one
  episode per call and 16 per call), :class:`~metalearn_shared.episodes.PairSampler`
  (128 pairs) and :class:`~metalearn_shared.episodes.SequenceSampler` (16 episodes of
  5 classes × 10).
* **per-item DataLoader** — the tutorial way: a ``torch.utils.data.Dataset`` whose
  ``__getitem__`` returns one ``(1, H, W)`` image and its label, a batch sampler that yields
  the indices of one episode (N classes × (K + Q) images, drawn with numpy), the default
  collate, then the split into support and query sets and the relabelling to ``0..N-1``.
* **easyfsl** — ``easyfsl.samplers.TaskSampler`` + ``DataLoader`` with its
  ``episodic_collate_fn``, on the same per-item dataset (it implements ``get_labels``), when
  easyfsl is installed (``pip install --no-deps easyfsl``: its ``torchvision`` requirement
  is only needed by its image-folder datasets; see :func:`easyfsl_task_sampler`).

``num_workers=0`` everywhere: the data is in memory, and worker processes would add
inter-process copies, not remove work.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_sampling import make_dataset
from benchmarks.common import Budget, measure
from metalearn_shared.data.dataset import ImageDataset
from metalearn_shared.episodes import FewShotSampler, PairSampler, SequenceSampler

__all__ = ["item_dataset", "EpisodeBatchSampler", "tutorial_episodes", "easyfsl_task_sampler",
           "run_sampling"]


# -- the per-item baseline ----------------------------------------------------------------
def item_dataset(dataset: ImageDataset) -> Any:
    """``dataset`` as a per-item torch ``Dataset`` (one image per ``__getitem__``)."""
    import torch

    class ItemDataset(torch.utils.data.Dataset):
        """``(1, H, W)`` float image in [0, 1] and its int label; ``get_labels`` for easyfsl."""

        def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
            self.images, self.labels = images, labels

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.from_numpy(self.images[i]).float().div_(255).unsqueeze(0), int(self.labels[i])

        def get_labels(self) -> list[int]:
            return self.labels.tolist()

    return ItemDataset(dataset.images, dataset.labels)


class EpisodeBatchSampler:
    """Yields the dataset indices of one N-way (K + Q)-shot episode per batch (tutorial style)."""

    def __init__(self, labels: np.ndarray, ways: int, per_class: int, episodes: int,
                 seed: int = 0) -> None:
        self.by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.ways, self.per_class, self.episodes = ways, per_class, episodes
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.episodes):
            classes = self.rng.choice(len(self.by_class), self.ways, replace=False)
            yield [int(i) for c in classes
                   for i in self.rng.choice(self.by_class[c], self.per_class, replace=False)]


def _tutorial_loader(items: Any, labels: np.ndarray, ways: int, shots: int, queries: int,
                     episodes: int) -> Any:
    import torch

    sampler = EpisodeBatchSampler(labels, ways, shots + queries, episodes)
    return torch.utils.data.DataLoader(items, batch_sampler=sampler, num_workers=0)


def tutorial_episodes(loader: Any, ways: int, shots: int) -> Iterator[tuple[Any, ...]]:
    """What a tutorial's training loop does with each batch: split it into an episode."""
    import torch

    for images, _ in loader:  # (N*(K+Q), 1, H, W), dataset class ids
        x = images.view(ways, -1, *images.shape[1:])  # (N, K+Q, 1, H, W)
        support = x[:, :shots].reshape(-1, *images.shape[1:])  # (N*K, 1, H, W)
        query = x[:, shots:].reshape(-1, *images.shape[1:])  # (N*Q, 1, H, W)
        support_y = torch.arange(ways).repeat_interleave(shots)  # (N*K,)
        query_y = torch.arange(ways).repeat_interleave(x.shape[1] - shots)  # (N*Q,)
        yield support, support_y, query, query_y


def _drain(episodes: Iterator[Any]) -> None:
    for _ in episodes:
        pass


# -- easyfsl ------------------------------------------------------------------------------
def easyfsl_task_sampler() -> tuple[Any, str]:
    """easyfsl's ``TaskSampler`` class and how it was imported, or ``(None, why not)``.

    ``easyfsl.samplers`` imports ``easyfsl.datasets``, whose ``__init__`` imports its CUB /
    miniImageNet readers and through them ``torchvision``. ``TaskSampler`` itself needs only
    ``FewShotDataset``; without torchvision, easyfsl's own ``few_shot_dataset.py`` and
    ``task_sampler.py`` are loaded unchanged, with ``easyfsl.datasets`` standing for the
    first during the import (and removed from ``sys.modules`` afterwards).
    """
    if importlib.util.find_spec("easyfsl") is None:
        return None, "easyfsl not installed (pip install --no-deps easyfsl; the `bench` extra)"
    try:
        from easyfsl.samplers import TaskSampler

        return TaskSampler, "easyfsl.samplers.TaskSampler (normal import)"
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            return None, f"easyfsl import failed: {exc}"
    root = Path(importlib.util.find_spec("easyfsl").origin).parent

    def load(name: str, path: Path) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    stub = types.ModuleType("easyfsl.datasets")
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.startswith("easyfsl.datasets")
             or k.startswith("easyfsl.samplers")}
    sys.modules["easyfsl.datasets"] = stub
    try:
        stub.FewShotDataset = load("easyfsl.datasets.few_shot_dataset",
                                   root / "datasets" / "few_shot_dataset.py").FewShotDataset
        task_sampler = load("easyfsl.samplers.task_sampler", root / "samplers" / "task_sampler.py")
    finally:
        for k in [k for k in sys.modules if k.startswith(("easyfsl.datasets", "easyfsl.samplers"))]:
            del sys.modules[k]
        sys.modules.update(saved)
    return task_sampler.TaskSampler, ("easyfsl TaskSampler loaded from its task_sampler.py "
                                      "without easyfsl.datasets (whose __init__ needs "
                                      "torchvision, not installed)")


class _AcceptsDataSource:
    """Takes the ``data_source`` argument ``torch.utils.data.Sampler.__init__`` took until
    torch 2.x removed it; easyfsl 1.5.0's ``TaskSampler.__init__`` still passes it
    (``super().__init__(data_source=None)`` raises a ``TypeError`` on torch 2.13)."""

    def __init__(self, data_source: Any = None) -> None:
        pass


def easyfsl_compatible(task_sampler_cls: Any) -> Any:
    """``task_sampler_cls`` runnable on this torch: unchanged when ``Sampler`` still takes
    ``data_source``, else with :class:`_AcceptsDataSource` after ``Sampler`` in its MRO."""
    import torch

    if "__init__" in vars(torch.utils.data.Sampler):
        return task_sampler_cls
    return type("TaskSampler", (task_sampler_cls, _AcceptsDataSource), {})


def _easyfsl_loader(task_sampler_cls: Any, items: Any, ways: int, shots: int, queries: int,
                    episodes: int) -> Any:
    import torch

    sampler = easyfsl_compatible(task_sampler_cls)(
        items, n_way=ways, n_shot=shots, n_query=queries, n_tasks=episodes)
    return torch.utils.data.DataLoader(items, batch_sampler=sampler, num_workers=0,
                                       collate_fn=sampler.episodic_collate_fn)


# -- the section ---------------------------------------------------------------------------
def _record(name: str, method: str, unit: str, units_per_call: int, timing: Any,
            **extra: Any) -> dict[str, Any]:
    return {"bench": name, "method": method, "unit": unit, "per_s": timing.rate(units_per_call),
            "units_per_call": units_per_call, **timing.to_dict(), **extra}


def run_sampling(quick: bool, budget: Budget, frameworks: tuple[str, ...]) -> dict[str, Any]:
    """Measure every sampler and baseline; returns ``{"records": [...], "notes": {...}}``."""
    classes, per_class = (50, 20) if quick else (1000, 20)
    dataset = make_dataset(classes, per_class, 28)
    seq_data = make_dataset(classes, per_class, 20)
    ways, shots, queries = 5, 1, 15
    records: list[dict[str, Any]] = []
    notes: dict[str, Any] = {"dataset": f"{classes} classes × {per_class} random uint8 images",
                             "episode": f"{ways}-way {shots}-shot {queries}-query, 28×28"}
    counter = iter(range(10**9))  # a fresh episode index for every call

    few = FewShotSampler(dataset, ways, shots, queries, seed=0)
    t = measure(lambda: few.episode(next(counter)), budget)
    records.append(_record("fewshot", "ours", "episodes", 1, t, call="episode(i)"))
    t = measure(lambda: few.batch(16 * next(counter), 16), budget)
    records.append(_record("fewshot", "ours-batch16", "episodes", 16, t, call="batch(i, 16)"))
    pairs = PairSampler(dataset, batch=128, seed=0)
    t = measure(lambda: pairs.episode(next(counter)), budget)
    records.append(_record("pairs", "ours", "pairs", 128, t, call="episode(i), 128 pairs"))
    seq = SequenceSampler(seq_data, 5, 10, seed=0)
    t = measure(lambda: seq.batch(16 * next(counter), 16), budget)
    records.append(_record("sequences", "ours", "sequences", 16, t,
                           call="batch(i, 16), 5 ways × 10, 20×20"))

    if "torch" not in frameworks:
        notes["baselines"] = "skipped: the DataLoader baselines need torch"
        return {"records": records, "notes": notes}
    items = item_dataset(dataset)
    chunk = 8 if quick else 40  # episodes per loader pass (one timed call)
    t = measure(lambda: _drain(tutorial_episodes(
        _tutorial_loader(items, dataset.labels, ways, shots, queries, chunk), ways, shots)), budget)
    records.append(_record("fewshot", "per-item DataLoader", "episodes", chunk, t,
                           call=f"DataLoader pass of {chunk} episodes, num_workers=0"))
    task_sampler, how = easyfsl_task_sampler()
    notes["easyfsl"] = how
    if task_sampler is not None and easyfsl_compatible(task_sampler) is not task_sampler:
        notes["easyfsl"] += ("; its TaskSampler passes data_source to Sampler.__init__, which "
                             "this torch no longer accepts: a shim class takes the argument")
    if task_sampler is not None:
        t = measure(lambda: _drain(iter(
            _easyfsl_loader(task_sampler, items, ways, shots, queries, chunk))), budget)
        records.append(_record("fewshot", "easyfsl TaskSampler", "episodes", chunk, t,
                               call=f"DataLoader pass of {chunk} episodes, num_workers=0"))
    return {"records": records, "notes": notes}
