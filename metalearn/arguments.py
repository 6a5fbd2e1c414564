"""``metalearn`` — the command line's parser: every subcommand and option. The handlers
are :mod:`metalearn.cli`'s; this module is separate so that the demo can build the same
arguments the command line does without importing the command line.

The model and framework options come from the registry (:mod:`metalearn_shared.models`)
and the backends (:mod:`metalearn.backends`); no model is named here.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable

from metalearn_shared import models, registry
from metalearn_shared.augment import AUGMENTS
from metalearn_shared.config import EPISODE_CLASSES, MEMORY_FORMATS
from metalearn_shared.data import HOLDOUT_HELP, parse_holdout
from metalearn_shared.evaluation import PROTOCOLS
from metalearn_shared.optimizers import OPTIMIZER_NAMES
from metalearn_shared.parity import DIRECTIONS

__all__ = ["build_parser", "framework_name", "count", "default_model"]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to show
    (``None``, a flag's ``False``) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or \
                action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never break inside a hyphenated name (an optimiser, a model): wrap at spaces only.
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width,
                             break_on_hyphens=False)


def count(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer ``>= minimum``, with the bound in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}; got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _holdout(text: str) -> str:
    """argparse type: a ``--holdout`` value, checked (:func:`parse_holdout`)."""
    try:
        parse_holdout(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# -- data ---------------------------------------------------------------------------------
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download, verify, inspect and preview datasets",
                       formatter_class=_HelpFormatter)
    p.add_argument("action", choices=["download", "verify", "info", "preview"])
    p.add_argument("names", nargs="*",
                   help="download: official Omniglot files (background, evaluation, small1, "
                        "small2; default small1 small2)")
    p.add_argument("--dataset", default="glyphs", help="glyphs | omniglot")
    p.add_argument("--data-dir", default=None,
                   help="Omniglot zip or folder (default: $METALEARN_OMNIGLOT_DIR, then the cache)")
    p.add_argument("--cache-dir", default=None, help="default $METALEARN_HOME or ~/.cache/metalearn")
    p.add_argument("--url", default=None,
                   help="download: base URL the official file names are appended to, e.g. "
                        "file:///path/to/mirror/ (default: the official GitHub folder); a URL "
                        "ending in .zip is used as is")
    p.add_argument("--size", type=int, default=28, help="image side in pixels")
    p.add_argument("--classes", type=int, default=None, help="glyphs: number of classes")
    p.add_argument("--ways", type=int, default=5, help="preview: classes per episode")
    p.add_argument("--shots", type=int, default=1, help="preview: support images per class")
    p.add_argument("--queries", type=int, default=3, help="preview: query images per class")
    p.add_argument("--seed", type=int, default=0, help="glyphs and episode seed")
    p.add_argument("--out", default="episode.png", help="preview: PNG path")


# -- framework-dispatched commands ---------------------------------------------------------
def framework_name(text: str) -> str:
    """argparse type: a framework name or alias → the canonical name."""
    try:
        return registry.canonical_framework(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


framework_name.__name__ = "framework"
_FRAMEWORK_HELP = f"which implementation runs: {' | '.join(registry.FRAMEWORKS)} (tf = keras)"


def default_model() -> str:
    """``--model``'s default: the first registered few-shot model (else the first model)."""
    return next((s.name for s in models.specs("fewshot")), models.names()[0])


def _models_help() -> str:
    return "; ".join(f"{s.name}: {s.summary}" for s in models.specs())


def _add_common_model_args(p: argparse.ArgumentParser, from_checkpoint: bool = False) -> None:
    """Options of ``train`` and ``eval``. ``from_checkpoint``: the data options default to
    what the checkpoint was trained on (``eval``)."""
    ckpt = " (default: what the checkpoint was trained on)" if from_checkpoint else ""
    p.add_argument("--framework", type=framework_name, default="torch", help=_FRAMEWORK_HELP)
    p.add_argument("--model", default=default_model(), choices=models.names(), metavar="MODEL",
                   help=_models_help() + (" (eval: the checkpoint's)" if from_checkpoint else ""))
    registry.add_options(p, models.specs())
    p.add_argument("--dataset", default=None if from_checkpoint else "glyphs",
                   help="glyphs | omniglot" + ckpt)
    p.add_argument("--data-dir", default=None,
                   help="Omniglot zip(s) or folder" + (ckpt or
                        " (default: $METALEARN_OMNIGLOT_DIR, then the cache)"))
    p.add_argument("--ways", type=int, default=5, help="classes per episode")
    p.add_argument("--shots", type=int, default=1, help="support images per class")
    p.add_argument("--queries", type=int, default=15, help="query images per class")
    p.add_argument("--samples-per-class", type=int, default=10,
                   help="sequence models: presentations of each class per episode")
    p.add_argument("--size", type=int, default=None,
                   help="image side in pixels (default: the model's: "
                        + ", ".join(f"{s.name} {s.defaults.image_size}" for s in models.specs()) + ")")
    p.add_argument("--rotations", action="store_true", default=None if from_checkpoint else False,
                   help="rotations by 90/180/270 degrees as extra training classes" + ckpt)
    p.add_argument("--reflections", action="store_true",
                   default=None if from_checkpoint else False,
                   help="the mirror image of every training class as an extra class (with "
                        "--rotations: all 8 symmetries of the square)" + ckpt)
    p.add_argument("--seed", type=int, default=None if from_checkpoint else 0,
                   help="weights, alphabet split and episodes" + ckpt)
    p.add_argument("--holdout", type=_holdout, default=None if from_checkpoint else "auto",
                   metavar="SPLIT", help=HOLDOUT_HELP + ckpt)
    p.add_argument("--batch", type=int, default=None,
                   help="pairs / episodes / sequences per step (default: the model's: "
                        + ", ".join(f"{s.name} {s.defaults.batch}" for s in models.specs()) + ")")


def _add_distribute_args(p: argparse.ArgumentParser) -> None:
    """Multi-process / multi-replica training (docs/scaling.md)."""
    p.add_argument("--meta-batch", type=int, default=None,
                   help="few-shot models: episodes per step, averaged (default 1); split over "
                        "the processes/replicas, so a multiple of their number. Sequence "
                        "models: their --batch is the meta-batch")
    p.add_argument("--distribute", default=None, choices=["mirrored", "multiworker"],
                   help="tf: tf.distribute.MirroredStrategy (this host's devices) or "
                        "MultiWorkerMirroredStrategy (hosts from TF_CONFIG). torch: launch "
                        "with torchrun instead")
    p.add_argument("--replicas", type=int, default=None,
                   help="tf --distribute mirrored on CPU: split the CPU into this many "
                        "logical devices (default: the GPUs, else 1)")


def _add_train_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model in one framework",
                       formatter_class=_HelpFormatter)
    _add_common_model_args(p)
    p.add_argument("--steps", type=count(1), default=1000, help="optimiser steps")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the model's: "
                        + ", ".join(f"{s.name} {s.defaults.lr:g}" for s in models.specs()) + ")")
    p.add_argument("--optimizer", default=None, choices=OPTIMIZER_NAMES, metavar="NAME",
                   help="optimiser: " + " | ".join(OPTIMIZER_NAMES) + " (default: the model's: "
                   + ", ".join(f"{s.name} {s.defaults.optimizer}" for s in models.specs())
                   + "). adam/rmsprop/sgd = each framework's own class; "
                   "NAME-torch / NAME-keras = that library's update rule in both frameworks")
    p.add_argument("--augment", default="none", choices=tuple(AUGMENTS), metavar="NAME",
                   help="per-image affine distortion of every training image: "
                        + " | ".join(AUGMENTS) + ". koch = Koch et al. 2015 (rotation ±10°, "
                        "shear, scale, shift, each with p 0.5); santoro = the MANN reference "
                        "implementation's (rotation ±30°, shift ≤ 10/105 of the side). "
                        "Held-out episodes are never distorted")
    p.add_argument("--episode-classes", default="random", choices=EPISODE_CLASSES,
                   help="few-shot and pair models: how a training episode (a different "
                        "pair) draws its classes. random = any classes of the training "
                        "alphabets; within-alphabet = all from one alphabet, as in Lake's "
                        "one-shot trials (the held-out evaluation is unchanged)")
    p.add_argument("--out", default="runs/latest", help="run folder: log.csv, checkpoints, curves.png")
    p.add_argument("--resume", action="store_true", help="continue from --out's last checkpoint")
    p.add_argument("--checkpoint-every", type=count(0), default=500,
                   help="steps between checkpoints (and at the end); 0 = only at the end")
    p.add_argument("--compile", action="store_true", help="torch.compile / XLA")
    p.add_argument("--memory-format", default="auto", choices=MEMORY_FORMATS,
                   help="torch: the layout of 4-D weights and inputs. auto = channels-last "
                        "where the model's eager step measured faster so (ProtoNet, Siamese, "
                        "ANIL, Reptile; not under --compile), else contiguous (NCHW). Keras' "
                        "tensors are NHWC always: only auto")
    p.add_argument("--eval-episodes", type=count(0), default=0,
                   help="held-out episodes to evaluate at the end (0 = none)")
    _add_distribute_args(p)

    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy ± 95%% CI",
                       formatter_class=_HelpFormatter)
    _add_common_model_args(p, from_checkpoint=True)
    p.add_argument("checkpoint", help="canonical .safetensors (or .keras for --framework tf)")
    p.add_argument("--episodes", type=int, default=1000, help="held-out episodes")
    p.add_argument("--protocol", default="episodes", choices=PROTOCOLS,
                   help="episodes: --episodes random held-out episodes of --ways/--shots/"
                        "--queries; lake-within-alphabet: --episodes of Lake et al.'s one-shot "
                        "trials (20 characters of one held-out alphabet, one training and one "
                        "test drawing each, by different drawers)")
    p.add_argument("--lake-runs", default=None, help="folder of the official 20-run one-shot format")
    p.add_argument("--ensemble", action="append", default=[], metavar="[FRAMEWORK:]CHECKPOINT",
                   help="evaluate the mean of the class probabilities of CHECKPOINT and this "
                        "one (repeat for more members); each member loads in FRAMEWORK "
                        "(default --framework), e.g. --ensemble keras:runs/k/checkpoint.safetensors. "
                        "Members must share the data and split; eval.json gives each "
                        "member's accuracy on the same episodes beside the ensemble's")
    p.add_argument("--tta", type=count(1), default=1, metavar="VIEWS",
                   help="test-time augmentation: classify each episode VIEWS times, as it is "
                        "and VIEWS-1 times with every image distorted by --tta-augment, and "
                        "average the class probabilities (1 = off; few-shot and pair models)")
    p.add_argument("--tta-augment", default="koch", choices=[a for a in AUGMENTS if a != "none"],
                   help="the distortion of --tta's extra views (as metalearn train --augment)")
    p.add_argument("--finetune", type=count(0), default=0, metavar="STEPS",
                   help="transductive fine-tuning: before scoring each trial, take STEPS SGD "
                        "steps on the model's loss on an episode made of the trial's support "
                        "images and distorted copies of them as queries; weights restored "
                        "after each trial (0 = off; few-shot models)")
    p.add_argument("--finetune-lr", type=float, default=1e-3, metavar="LR",
                   help="--finetune's SGD learning rate")
    p.add_argument("--finetune-views", type=count(1), default=4, metavar="V",
                   help="--finetune's distorted copies of each support image (its queries)")
    p.add_argument("--finetune-entropy", type=float, default=0.0, metavar="W",
                   help="--finetune's transductive term: W x the mean entropy of the model's "
                        "predictions for the trial's (unlabelled) queries (0 = support set only)")
    p.add_argument("--finetune-augment", default="koch",
                   choices=[a for a in AUGMENTS if a != "none"],
                   help="the distortion of --finetune's queries (as metalearn train --augment)")
    p.add_argument("--out", default=None, help="folder for eval.json and plots")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", formatter_class=_HelpFormatter,
                       help="few-shot prediction on your own images: a support folder of "
                            "classes, query images")
    p.add_argument("checkpoint", help="canonical .safetensors (or .keras for --framework tf) "
                                      "of a model that compares images: "
                                      + " | ".join(s.name for s in models.specs() if s.predicts))
    p.add_argument("--framework", type=framework_name, default="torch", help=_FRAMEWORK_HELP)
    p.add_argument("--support", required=True,
                   help="folder with one sub-folder per class, each holding 1…K example images")
    p.add_argument("--query", required=True, nargs="+",
                   help="query image files and/or folders of images")
    p.add_argument("--top-k", type=count(1), default=3, help="classes listed per query")
    p.add_argument("--out", default="predictions",
                   help="folder for predictions.csv and the predictions.png contact sheet")


def _add_tools(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parity", help="measure cross-framework parity of every model",
                       formatter_class=_HelpFormatter)
    p.add_argument("--model", default="all", metavar="MODEL",
                   help="all, or one or more of " + ", ".join(models.names())
                        + " joined by commas")
    p.add_argument("--steps", type=int, default=10, help="training steps compared (default 10)")
    p.add_argument("--optimizers", nargs="+", default=["sgd"], metavar="NAME",
                   help="optimisers compared, each with the trainers' own objects: sgd runs "
                        "every case, the others one case per model (the matched ones: "
                        "adam-torch rmsprop-torch adam-keras rmsprop-keras)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of both frameworks during the run")
    p.add_argument("--direction", default="both", choices=("both", *DIRECTIONS),
                   help="which framework's initial weights are moved to the other (default "
                        "both; both frameworks run every step either way)")
    p.add_argument("--seed", type=int, default=0, help="weights, data and episodes")
    p.add_argument("--out", default="parity-report",
                   help="folder for parity.json and the PNG plots (default parity-report)")
    p.add_argument("--tiny", action="store_true",
                   help="one small variant per model, at most 3 steps (for tests)")

    p = sub.add_parser("convert", help="convert a checkpoint between keras, torch and canonical",
                       formatter_class=_HelpFormatter)
    p.add_argument("checkpoint", help="canonical .safetensors, torch state_dict .safetensors or .keras")
    p.add_argument("--to", required=True, type=_format_name, metavar="FORMAT",
                   help="output format: canonical | " + " | ".join(registry.FRAMEWORKS) + " (tf = keras)")
    p.add_argument("--out", default=None, help="output path (default: beside the input)")

    # `metalearn bench ARGS` is handed to the runner whole (see main), so its options and
    # its --help are the runner's; this entry lists the command in `metalearn --help`.
    p = sub.add_parser("bench", help="benchmarks (same as python -m benchmarks; "
                                     "metalearn bench --help for its options)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark runner")


def _format_name(text: str) -> str:
    """argparse type: ``canonical`` or a framework name/alias."""
    return text if text == "canonical" else framework_name(text)


_format_name.__name__ = "format"


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train + evaluate on glyphs in both frameworks, side by side",
                       formatter_class=_HelpFormatter)
    p.add_argument("--model", default=default_model(),
                   choices=[s.name for s in models.specs() if s.predicts],
                   help="a model that compares images")
    p.add_argument("--steps", type=count(1), default=800, help="training steps in each framework")
    p.add_argument("--episodes", type=count(1), default=600, help="held-out evaluation episodes")
    p.add_argument("--ways", type=int, default=5, help="classes per episode")
    p.add_argument("--shots", type=int, default=1, help="support images per class")
    p.add_argument("--seed", type=int, default=0, help="weights, split and episodes")
    p.add_argument("--out", default="runs/demo", help="folder for both runs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalearn",
        description="Few-shot meta-learning in Keras 3 and PyTorch, proven numerically equal.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_data(sub)
    _add_train_eval(sub)
    _add_predict(sub)
    _add_tools(sub)
    return parser
