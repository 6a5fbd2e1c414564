"""Framework-agnostic parts of training and evaluation, used by both trainers.

Everything a run needs that is not a tensor operation lives here once: turning CLI
arguments into configs, data splits and samplers; which episode feeds step ``s``; the CSV
log both frameworks write (same columns, so curves can be plotted together); the run
folder and resume bookkeeping; the evaluation loops and their plots.
"""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metalearn_shared.augment import augment_spec
from metalearn_shared.config import ModelConfig, TrainConfig
from metalearn_shared.data.dataset import ImageDataset
from metalearn_shared.episodes import (
    FewShotSampler,
    PairSampler,
    SequenceSampler,
    WithinAlphabetSampler,
)
from metalearn_shared.metrics import AccuracyCI, accuracy_ci, per_instance_accuracy

__all__ = [
    "EVAL_SEED_OFFSET",
    "LOG_COLUMNS",
    "RunFiles",
    "TrainSetup",
    "setup_from_args",
    "data_record",
    "load_splits",
    "train_sampler",
    "step_batch",
    "CSVLog",
    "StopRequest",
    "interrupted_message",
    "note_resumed_lr",
    "interruptible",
    "interactive",
    "first_non_finite",
    "NonFiniteLoss",
    "NonFiniteWeights",
    "plot_curves",
    "evaluate_fewshot",
    "evaluate_within_alphabet",
    "evaluate_sequences",
    "plot_per_instance",
    "write_json",
]

#: Held-out evaluation episodes are drawn from ``seed + EVAL_SEED_OFFSET``, so they never
#: coincide with the training stream of the same seed.
EVAL_SEED_OFFSET = 1_000_003

#: Columns of ``log.csv``, identical in both frameworks.
LOG_COLUMNS = ("step", "loss", "accuracy", "seconds", "framework")

@dataclass(frozen=True)
class RunFiles:
    """The files of one run folder."""

    root: Path

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def checkpoint(self) -> Path:
        """Canonical weights (safetensors + JSON metadata), the last saved step."""
        return self.root / "checkpoint.safetensors"

    @property
    def train_state(self) -> Path:
        """Framework-specific optimiser state for ``--resume`` (safetensors)."""
        return self.root / "train_state.safetensors"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def config(self) -> Path:
        return self.root / "run.json"

    def resume_weights(self) -> dict[str, np.ndarray]:
        """Canonical weights of the run's last checkpoint, for ``--resume``."""
        if not self.checkpoint.exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {self.root}; train without "
                                    "--resume first (or point --out at the run to continue).")
        from metalearn_shared.weights import load_canonical

        return load_canonical(self.checkpoint)[0]


@dataclass(frozen=True)
class TrainSetup:
    """Everything a trainer needs, built from CLI arguments."""

    model_config: ModelConfig
    train: TrainConfig
    family: str
    train_data: ImageDataset
    test_data: ImageDataset
    ways: int
    shots: int
    queries: int
    samples_per_class: int
    files: RunFiles
    #: What the data was: ``dataset``, ``data_dir`` (absolute, or None for the default
    #: search), ``seed`` (of the alphabet split), ``size``, ``rotations``, ``holdout``
    #: (which alphabets are held out, :func:`metalearn_shared.data.holdout_split`). Written to
    #: ``run.json`` and the checkpoints, so ``metalearn eval`` evaluates on the same data.
    data: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "data": dict(self.data),
            "model": self.model_config.to_dict(),
            "train": self.train.to_dict(),
            "family": self.family,
            "ways": self.ways, "shots": self.shots, "queries": self.queries,
            "samples_per_class": self.samples_per_class,
            "train_classes": self.train_data.num_classes,
            "test_classes": self.test_data.num_classes,
            "train_alphabets": list(self.train_data.alphabets),
            "test_alphabets": list(self.test_data.alphabets),
        }


def load_splits(dataset: str, data_dir: str | None, size: int, rotations: bool,
                seed: int, num_classes: int | None = None, holdout: str = "auto",
                reflections: bool = False) -> tuple[ImageDataset, ImageDataset]:
    """Alphabet-disjoint train / test datasets.

    ``holdout`` chooses the held-out alphabets (:func:`metalearn_shared.data.holdout_split`):
    by default (``auto``) the official background / evaluation split of Omniglot when both
    are present, else a seeded 75/25 alphabet split (small1 + small2: 6 / 2 of the 8
    alphabets; glyphs: of its synthetic alphabets); ``fold:I/K`` for alphabet
    cross-validation; ``none`` to train on every alphabet. Rotations by 90/180/270 and
    (``reflections``) the mirror image of every training class become new classes of the
    *training* split only (test classes stay as drawn).
    """
    from metalearn_shared import data

    extra = {"num_classes": num_classes} if num_classes else {}
    if dataset == "glyphs" and not num_classes:
        extra = {"num_classes": 400}
    ds = data.load_dataset(dataset, data_dir=data_dir, size=size, seed=seed, **extra)
    train, test = data.holdout_split(ds, holdout, seed=seed)
    if rotations:
        train = data.add_rotations(train)
    if reflections:
        train = data.add_reflections(train)
    return train, test


def data_record(dataset: str, data_dir: str | None, seed: int, size: int, rotations: bool,
                holdout: str = "auto", reflections: bool = False) -> dict[str, Any]:
    """What the data of a run was (:attr:`TrainSetup.data`), as written to ``run.json`` and
    the checkpoints, so that ``metalearn eval`` rebuilds the same held-out split."""
    return {"dataset": dataset,
            "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
            "seed": seed, "size": size, "rotations": bool(rotations),
            "reflections": bool(reflections), "holdout": holdout}


def setup_from_args(args: Any) -> TrainSetup:
    """Build a :class:`TrainSetup` from ``metalearn train``/``eval`` arguments: the model's
    spec (:mod:`metalearn_shared.registry`) maps them onto its config and fills what the
    command line leaves unset (image size, batch, learning rate, optimiser)."""
    from metalearn_shared import models
    from metalearn_shared.data import parse_holdout

    spec = models.get(args.model)
    defaults = spec.defaults
    size = args.size or defaults.image_size
    config = spec.config_from_args(args, size)
    train = TrainConfig(
        steps=getattr(args, "steps", 0) or 0,
        batch=getattr(args, "batch", None) or defaults.batch,
        lr=getattr(args, "lr", None) or defaults.lr,
        optimizer=getattr(args, "optimizer", None) or defaults.optimizer,
        seed=args.seed,
        log_every=max(1, min(50, (getattr(args, "steps", 0) or 50) // 20)),
        checkpoint_every=getattr(args, "checkpoint_every", 0) or 0,
        augment=getattr(args, "augment", None) or "none",
        episode_classes=getattr(args, "episode_classes", None) or "random",
    )
    if train.episode_classes != "random" and spec.family not in ("fewshot", "pairs"):
        raise ValueError(f"--episode-classes {train.episode_classes} draws the classes of "
                         f"few-shot episodes or of different pairs; {args.model} trains on "
                         f"{spec.family}. Drop --episode-classes, or train a few-shot or pair "
                         "model.")
    holdout = getattr(args, "holdout", None) or "auto"
    if getattr(args, "eval_episodes", 0) and parse_holdout(holdout).kind == "none":
        raise ValueError("--eval-episodes evaluates on held-out alphabets, but --holdout none "
                         "holds none out; drop --eval-episodes and evaluate the checkpoint "
                         "externally (metalearn eval --lake-runs DIR), or hold alphabets out.")
    reflections = bool(getattr(args, "reflections", False))
    train_ds, test_ds = load_splits(args.dataset, args.data_dir, size, args.rotations, args.seed,
                                    holdout=holdout, reflections=reflections)
    out = getattr(args, "out", None) or "runs/latest"
    data = data_record(args.dataset, args.data_dir, args.seed, size, args.rotations, holdout,
                       reflections)
    return TrainSetup(config, train, spec.family, train_ds, test_ds, args.ways, args.shots,
                      args.queries, args.samples_per_class, RunFiles(Path(out)), data)


def train_sampler(setup: TrainSetup) -> (PairSampler | FewShotSampler | WithinAlphabetSampler
                                         | SequenceSampler):
    """The seeded sampler whose episode ``s`` (or batch ``s``) feeds training step ``s``."""
    seed = setup.train.seed
    augment = augment_spec(setup.train.augment)  # None: no distortion
    if setup.family == "pairs":
        return PairSampler(setup.train_data, setup.train.batch, seed=seed, augment=augment,
                           within_alphabet=setup.train.episode_classes == "within-alphabet")
    if setup.family == "fewshot" and setup.train.episode_classes == "within-alphabet":
        return WithinAlphabetSampler(setup.train_data, setup.ways, setup.shots, setup.queries,
                                     seed=seed, augment=augment)
    if setup.family == "fewshot":
        return FewShotSampler(setup.train_data, setup.ways, setup.shots, setup.queries, seed=seed,
                              augment=augment)
    return SequenceSampler(setup.train_data, setup.ways, setup.samples_per_class, seed=seed,
                           augment=augment)


def step_batch(sampler: Any, family: str, step: int, batch: int) -> Any:
    """The numpy batch of training step ``step`` — a pure function of (seed, step), so a
    resumed run sees exactly the episodes an uninterrupted one would."""
    if family == "sequence":
        return sampler.batch(step * batch, batch)
    return sampler.episode(step)  # a PairBatch of `batch` pairs, or one few-shot episode


def interactive() -> bool:
    """Whether stdout is a terminal: progress bars there, one plain line per log interval
    otherwise (a progress bar's carriage returns make megabyte lines in a log file)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


class CSVLog:
    """``log.csv`` with :data:`LOG_COLUMNS`; on resume, rows after the checkpoint's step
    are dropped first (they were logged but their weights were never saved).

    With ``echo``, every row is also printed as one line (``torch step 50/1000 loss …``),
    which is the progress report when stdout is not a terminal.
    """

    def __init__(self, path: Path, framework: str, resume_step: int | None = None,
                 echo: bool = False, total_steps: int | None = None) -> None:
        self.path = Path(path)
        self.framework = framework
        self.echo, self.total_steps = echo, total_steps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        from metalearn_shared.data.cache import atomic_write

        with atomic_write(self.path, "w") as f:
            w = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self._t0 = time.perf_counter() - (float(rows[-1]["seconds"]) if rows else 0.0)

    def log(self, step: int, loss: float, accuracy: float) -> None:
        seconds = time.perf_counter() - self._t0
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{loss:.6g}", f"{accuracy:.4f}",
                                    f"{seconds:.3f}", self.framework])
        if self.echo:
            total = f"/{self.total_steps}" if self.total_steps else ""
            print(f"{self.framework} step {step}{total} loss {loss:.4f} "
                  f"accuracy {accuracy:.3f} {seconds:.1f} s", flush=True)


class NonFiniteLoss(FloatingPointError):
    """The training loss became nan or inf; the message names the step and the checkpoint kept."""

    def __init__(self, value: float, step: int, checkpoint: Path, saved_step: int | None) -> None:
        kept = (f"the last good checkpoint ({checkpoint}, step {saved_step}) is kept"
                if saved_step else "no checkpoint was written")
        super().__init__(f"loss became {value} at step {step}; training stopped and {kept}. "
                         "Lower --lr, or check the data for nan/inf pixels.")
        self.step = step


class NonFiniteWeights(NonFiniteLoss):
    """The weights became nan or inf while the loss was still finite (a step's update from an
    overflowing gradient): found before a checkpoint is written, so the last good one stays."""

    def __init__(self, step: int, checkpoint: Path, saved_step: int | None) -> None:
        super().__init__(float("nan"), step, checkpoint, saved_step)
        self.args = (str(self).replace("loss became nan", "weights became nan or inf (the loss "
                                       "was still finite)", 1),)


def first_non_finite(losses: Sequence[float], first_step: int) -> tuple[int, float] | None:
    """``(step, value)`` of the first nan/inf in per-step ``losses`` (step ``first_step``
    first), or None when all are finite."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses, dtype=np.float64)))
    if bad.size == 0:
        return None
    return first_step + int(bad[0]), float(np.asarray(losses)[bad[0]])


def interrupted_message(setup: TrainSetup, step: int) -> str:
    """What to tell the user after Ctrl-C stopped training at ``step``."""
    return (f"interrupted at step {step} of {setup.train.steps}; checkpoint saved in "
            f"{setup.files.root}. Continue with the same command and --resume.")


def note_resumed_lr(restored: float, lr: float, step: int) -> None:
    """What ``--resume`` says (on stderr) when the command's learning rate (``--lr``, or the
    model's default) differs from the one the run's optimiser state holds: the command's is
    used (and ``run.json`` records it), so a resumed run can continue at a decayed rate; the
    same command continues exactly and says nothing (equal to float32's precision)."""
    if abs(lr - restored) <= 1e-6 * max(abs(lr), abs(restored)):
        return
    print(f"note: --resume continues at learning rate {lr:g} (the command's --lr, or the "
          f"model's default); the run had trained at {restored:g} up to step {step}. Give "
          f"--lr {restored:g} to continue at the run's own rate.", file=sys.stderr)


class StopRequest:
    """Set by Ctrl-C (SIGINT) during :func:`interruptible`; the trainer checks it after each
    step, saves a checkpoint at that step and returns."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def interruptible() -> Iterator[StopRequest]:
    """Turn the first SIGINT into a stop request at the next step boundary.

    A second Ctrl-C interrupts at once (the previous handler is back in place after the
    first). Outside the main thread signals cannot be caught, and nothing changes.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        request.requested = True
        signal.signal(signal.SIGINT, previous)
        print("\ninterrupt: stopping after this step and saving a checkpoint "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


def read_log(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([float(r[c]) for r in rows]) for c in ("step", "loss", "accuracy", "seconds")}


def plot_curves(logs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """Loss and accuracy against step for one or more ``log.csv`` files (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metalearn_shared.data.cache import atomic_path

    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, path in enumerate(logs):
        d = read_log(path)
        label = labels[i] if labels else Path(path).parent.name
        ax_l.plot(d["step"], d["loss"], label=label)
        ax_a.plot(d["step"], d["accuracy"], label=label)
    ax_l.set(xlabel="step", ylabel="training loss", yscale="log")
    ax_a.set(xlabel="step", ylabel="training-batch accuracy", ylim=(0, 1))
    ax_a.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(out)


PredictFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _episode_accuracies(predict: PredictFn, sampler: FewShotSampler | WithinAlphabetSampler,
                        episodes: int, desc: str,
                        progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each episode's query accuracy ``(episodes,)`` and its classes ``(episodes, N)``."""
    acc = np.empty(episodes)
    classes = np.empty((episodes, sampler.ways), dtype=np.int64)
    it = range(episodes)
    if progress and interactive():
        from tqdm import tqdm

        it = tqdm(it, desc=desc, leave=False)
    for i in it:
        ep = sampler.episode(i)
        acc[i] = np.mean(np.asarray(predict(ep.support_x, ep.support_y, ep.query_x)) == ep.query_y)
        classes[i] = ep.classes
    return acc, classes


def evaluate_fewshot(predict: PredictFn, data: ImageDataset, ways: int, shots: int,
                     queries: int, episodes: int, seed: int,
                     progress: bool = True) -> AccuracyCI:
    """Mean accuracy ± 95% CI over ``episodes`` held-out episodes.

    Args:
        predict: ``(support_x, support_y, query_x) -> predicted labels (Q,)``.
        seed: evaluation episodes use ``seed + EVAL_SEED_OFFSET`` (never the training
            stream of the same seed).
    """
    sampler = FewShotSampler(data, ways, shots, queries, seed=seed + EVAL_SEED_OFFSET)
    acc, _ = _episode_accuracies(predict, sampler, episodes, f"eval {ways}-way {shots}-shot",
                                 progress)
    return accuracy_ci(acc)


def evaluate_within_alphabet(predict: PredictFn, data: ImageDataset, trials: int, seed: int,
                             ways: int = 20, progress: bool = True) -> dict[str, Any]:
    """Lake et al.'s within-alphabet one-shot protocol on held-out alphabets
    (:class:`metalearn_shared.episodes.WithinAlphabetSampler`): ``trials`` trials of ``ways``
    characters of one alphabet, one training and one test drawing each (by different drawers).

    Returns:
        ``{"ways", "trials", "accuracy": {"mean", "ci95"}, "error", "per_alphabet":
        {alphabet: {"trials", "accuracy"}}, "skipped_alphabets": {alphabet: characters}}``;
        the CI is over trials (each trial's accuracy on its ``ways`` test images).
    """
    sampler = WithinAlphabetSampler(data, ways, 1, 1, seed=seed + EVAL_SEED_OFFSET)
    acc, classes = _episode_accuracies(predict, sampler, trials,
                                       f"eval within-alphabet {ways}-way", progress)
    which = np.array([data.classes[c].alphabet for c in classes[:, 0]])  # one per trial
    overall = accuracy_ci(acc)
    return {"ways": ways, "trials": trials,
            "accuracy": {"mean": overall.mean, "ci95": overall.ci95},
            "error": 1.0 - overall.mean,
            "per_alphabet": {a: {"trials": int((which == a).sum()),
                                 "accuracy": float(acc[which == a].mean())}
                             for a in sampler.alphabets if (which == a).any()},
            "skipped_alphabets": dict(sampler.skipped)}


def evaluate_sequences(logits_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                       data: ImageDataset, ways: int, samples_per_class: int, episodes: int,
                       seed: int, batch: int = 16) -> tuple[dict[int, AccuracyCI], AccuracyCI]:
    """Per-instance accuracy (1st, 2nd, … presentation) on held-out sequence episodes.

    Args:
        logits_fn: ``(x (B, T, P), prev_label (B, T, L)) -> logits (B, T, C)``.

    Returns:
        ``({k: AccuracyCI}, overall AccuracyCI)``.
    """
    sampler = SequenceSampler(data, ways, samples_per_class, seed=seed + EVAL_SEED_OFFSET)
    correct, instance = [], []
    for start in range(0, episodes, batch):
        b = sampler.batch(start, min(batch, episodes - start))
        pred = np.argmax(np.asarray(logits_fn(b.x, b.prev_label)), axis=-1)
        correct.append(pred == b.y)
        instance.append(b.instance)
    c, inst = np.concatenate(correct), np.concatenate(instance)
    return per_instance_accuracy(c, inst), accuracy_ci(c.mean(axis=1))


def plot_per_instance(results: dict[str, dict[int, AccuracyCI]], out: Path) -> Path:
    """Accuracy against presentation number, one line per run (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metalearn_shared.data.cache import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, res in results.items():
        ks = sorted(res)
        ax.errorbar(ks, [100 * res[k].mean for k in ks], yerr=[100 * res[k].ci95 for k in ks],
                    marker="o", capsize=3, label=label)
    ax.set(xlabel="presentation of the class", ylabel="accuracy (%)", ylim=(0, 100))
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(out)


def write_json(path: Path, obj: Any) -> Path:
    """JSON written atomically."""
    from metalearn_shared.data.cache import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    return Path(path)
