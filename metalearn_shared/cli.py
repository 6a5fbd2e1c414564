"""``metalearn`` — the command line. Framework packages are imported lazily, only by the
subcommand that needs one, so ``metalearn data …`` works with neither framework installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from metalearn_shared.optimizers import OPTIMIZER_NAMES

__all__ = ["main", "build_parser"]

FRAMEWORKS = {"tf": "metalearn_tf", "torch": "metalearn_torch"}


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to show
    (``None``, a flag's ``False``) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or \
                action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def _count(minimum: int) -> Callable[[str], int]:
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


# -- data --------------------------------------------------------------------------------
def _cmd_data(args: argparse.Namespace) -> int:
    from metalearn_shared import data

    if args.action == "download":
        if not args.names:
            args.names = ["small1", "small2"]
        for name in args.names:
            path = data.omniglot.download(name, cache_dir=args.cache_dir, url=args.url)
            print(f"{name}: {path}")
        return 0
    if args.action == "verify":
        bad = 0
        for name in data.omniglot.OFFICIAL:
            path = data.omniglot.find_official(name, data_dir=args.data_dir, cache_dir=args.cache_dir)
            if path is None:
                print(f"{name:12s} not found")
                continue
            try:
                data.omniglot.verify_file(path)
                print(f"{name:12s} ok         {path}")
            except data.ChecksumError as e:
                bad += 1
                print(f"{name:12s} BAD        {e}")
        return 1 if bad else 0
    extra = {"num_classes": args.classes} if args.classes else {}
    ds = data.load_dataset(args.dataset, data_dir=args.data_dir, size=args.size,
                           seed=args.seed, **extra)
    if args.action == "info":
        print(data.info(ds))
        return 0
    if args.action == "preview":
        out = data.preview_png(ds, args.out, ways=args.ways, shots=args.shots,
                               queries=args.queries, seed=args.seed)
        print(f"wrote {out} ({args.ways}-way {args.shots}-shot, {args.queries} queries, "
              f"{ds.name}, {ds.image_shape[0]}×{ds.image_shape[1]})")
        return 0
    raise AssertionError(args.action)


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
    p.set_defaults(func=_cmd_data)


# -- framework-dispatched commands ---------------------------------------------------------
def _framework_call(framework: str, module: str, func: str) -> Callable[[argparse.Namespace], int]:
    package = FRAMEWORKS[framework]
    try:
        mod = importlib.import_module(f"{package}.{module}")
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing.split(".")[0] in ("tensorflow", "keras", "torch"):
            extra = "tf" if framework == "tf" else "torch"
            raise CLIError(
                f"--framework {framework} needs {missing}, which is not installed. "
                f'Install it with: pip install -c constraints.txt -e ".[{extra}]"'
            ) from e
        raise
    return getattr(mod, func)


def _add_common_model_args(p: argparse.ArgumentParser, from_checkpoint: bool = False) -> None:
    """Options of ``train`` and ``eval``. ``from_checkpoint``: the data options default to
    what the checkpoint was trained on (``eval``)."""
    ckpt = " (default: what the checkpoint was trained on)" if from_checkpoint else ""
    p.add_argument("--framework", choices=sorted(FRAMEWORKS), default="torch",
                   help="which implementation runs")
    p.add_argument("--model", default="protonet",
                   help="siamese | protonet | mann | lstm" + (" (eval: the checkpoint's)" if from_checkpoint else ""))
    p.add_argument("--head", default="contrastive", help="siamese head: contrastive | cosine | koch")
    p.add_argument("--backbone", default="conv4", help="conv4 | seed")
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
                   help="image side in pixels (default: 28; 20 for mann/lstm)")
    p.add_argument("--rotations", action="store_true", default=None if from_checkpoint else False,
                   help="rotations by 90/180/270 degrees as extra training classes" + ckpt)
    p.add_argument("--seed", type=int, default=None if from_checkpoint else 0,
                   help="weights, alphabet split and episodes" + ckpt)
    p.add_argument("--batch", type=int, default=None,
                   help="pairs / episodes per step (default: 32 pairs, 1 episode, 16 sequences)")


def _cmd_train(args: argparse.Namespace) -> int:
    return _framework_call(args.framework, "train", "main_train")(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    return _framework_call(args.framework, "evaluate", "main_eval")(args)


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
    p.add_argument("--steps", type=_count(1), default=1000, help="optimiser steps")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: 1e-3; 1e-4 for mann/lstm)")
    p.add_argument("--optimizer", default=None, choices=OPTIMIZER_NAMES, metavar="NAME",
                   help="optimiser: " + " | ".join(OPTIMIZER_NAMES) + " (default: the model "
                   "family's, adam or rmsprop). adam/rmsprop/sgd = each framework's own class; "
                   "NAME-torch / NAME-keras = that library's update rule in both frameworks")
    p.add_argument("--out", default="runs/latest", help="run folder: log.csv, checkpoints, curves.png")
    p.add_argument("--resume", action="store_true", help="continue from --out's last checkpoint")
    p.add_argument("--checkpoint-every", type=_count(0), default=500,
                   help="steps between checkpoints (and at the end); 0 = only at the end")
    p.add_argument("--compile", action="store_true", help="torch.compile / XLA")
    p.add_argument("--eval-episodes", type=_count(0), default=0,
                   help="held-out episodes to evaluate at the end (0 = none)")
    _add_distribute_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy ± 95%% CI",
                       formatter_class=_HelpFormatter)
    _add_common_model_args(p, from_checkpoint=True)
    p.add_argument("checkpoint", help="canonical .safetensors (or .keras for --framework tf)")
    p.add_argument("--episodes", type=int, default=1000, help="held-out episodes")
    p.add_argument("--lake-runs", default=None, help="folder of the official 20-run one-shot format")
    p.add_argument("--out", default=None, help="folder for eval.json and plots")
    p.set_defaults(func=_cmd_eval)


def _cmd_predict(args: argparse.Namespace) -> int:
    return _framework_call(args.framework, "predict", "main_predict")(args)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", formatter_class=_HelpFormatter,
                       help="few-shot prediction on your own images: a support folder of "
                            "classes, query images")
    p.add_argument("checkpoint", help="canonical .safetensors (or .keras for --framework tf) "
                                      "of a protonet or siamese model")
    p.add_argument("--framework", choices=sorted(FRAMEWORKS), default="torch",
                   help="which implementation runs")
    p.add_argument("--support", required=True,
                   help="folder with one sub-folder per class, each holding 1…K example images")
    p.add_argument("--query", required=True, nargs="+",
                   help="query image files and/or folders of images")
    p.add_argument("--top-k", type=_count(1), default=3, help="classes listed per query")
    p.add_argument("--out", default="predictions",
                   help="folder for predictions.csv and the predictions.png contact sheet")
    p.set_defaults(func=_cmd_predict)


def _cmd_parity(args: argparse.Namespace) -> int:
    from metalearn_shared import parity_report
    from metalearn_shared.parity import ParityError

    try:
        return parity_report.main(args)
    except ParityError as e:
        raise CLIError(str(e)) from e


def _cmd_convert(args: argparse.Namespace) -> int:
    from metalearn_shared import convert

    return convert.main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks import runner

    return runner.main(args.rest, prog="metalearn bench")


def _add_tools(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parity", help="measure cross-framework parity of every model",
                       formatter_class=_HelpFormatter)
    p.add_argument("--model", default="all", help="all | siamese | protonet | mann | lstm")
    p.add_argument("--steps", type=int, default=10, help="training steps compared (default 10)")
    p.add_argument("--optimizers", nargs="+", default=["sgd"], metavar="NAME",
                   help="optimisers compared, each with the trainers' own objects: sgd runs "
                        "every case, the others one case per model (the matched ones: "
                        "adam-torch rmsprop-torch adam-keras rmsprop-keras)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of both frameworks during the run")
    p.add_argument("--seed", type=int, default=0, help="weights, data and episodes")
    p.add_argument("--out", default="parity-report",
                   help="folder for parity.json and the PNG plots (default parity-report)")
    p.add_argument("--tiny", action="store_true",
                   help="one small variant per model, at most 3 steps (for tests)")
    p.set_defaults(func=_cmd_parity)

    p = sub.add_parser("convert", help="convert a checkpoint between tf, torch and canonical",
                       formatter_class=_HelpFormatter)
    p.add_argument("checkpoint", help="canonical .safetensors, torch state_dict .safetensors or .keras")
    p.add_argument("--to", required=True, choices=["tf", "torch", "canonical"],
                   help="output format")
    p.add_argument("--out", default=None, help="output path (default: beside the input)")
    p.set_defaults(func=_cmd_convert)

    # `metalearn bench ARGS` is handed to the runner whole (see main), so its options and
    # its --help are the runner's; this entry lists the command in `metalearn --help`.
    p = sub.add_parser("bench", help="benchmarks (same as python -m benchmarks; "
                                     "metalearn bench --help for its options)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark runner")
    p.set_defaults(func=_cmd_bench)


def _cmd_demo(args: argparse.Namespace) -> int:
    from metalearn_shared import demo

    return demo.main(args)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train + evaluate on glyphs in both frameworks, side by side",
                       formatter_class=_HelpFormatter)
    p.add_argument("--model", default="protonet", help="protonet or siamese")
    p.add_argument("--steps", type=_count(1), default=800, help="training steps in each framework")
    p.add_argument("--episodes", type=_count(1), default=600, help="held-out evaluation episodes")
    p.add_argument("--ways", type=int, default=5, help="classes per episode")
    p.add_argument("--shots", type=int, default=1, help="support images per class")
    p.add_argument("--seed", type=int, default=0, help="weights, split and episodes")
    p.add_argument("--out", default="runs/demo", help="folder for both runs")
    p.set_defaults(func=_cmd_demo)


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the runner parses its own options (and --help)
        args = argparse.Namespace(command="bench", func=_cmd_bench, rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, ConnectionError, FloatingPointError) as e:
        print(f"metalearn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied: one line, not a traceback
        where = f" ({e.filename})" if e.filename and str(e.filename) not in str(e) else ""
        print(f"metalearn {args.command}: error: {e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
