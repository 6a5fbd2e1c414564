"""``metalearn`` — the command line: one handler per subcommand. The parser is
:mod:`metalearn.arguments`; frameworks are reached through :mod:`metalearn.backends` and
imported only by the subcommand that needs one, so ``metalearn data …`` works with neither
framework installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from metalearn import backends
from metalearn.arguments import build_parser
from metalearn_shared.evaluation import Member
from metalearn_shared.registry import FRAMEWORK_ALIASES, FRAMEWORKS

__all__ = ["main", "build_parser", "CLIError"]


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _backend(framework: str):
    try:
        return backends.get(framework)
    except backends.FrameworkMissing as e:
        raise CLIError(str(e)) from e


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


def _cmd_train(args: argparse.Namespace) -> int:
    return _backend(args.framework).main_train(args)


def _ensemble_member(text: str, default_framework: str) -> Member:
    """``--ensemble [FRAMEWORK:]CHECKPOINT`` loaded by its framework's backend."""
    head, sep, rest = text.partition(":")
    known = head in FRAMEWORKS or head in FRAMEWORK_ALIASES
    framework, path = (head, rest) if sep and known else (default_framework, text)
    backend = _backend(framework)
    model, meta = backend.load_checkpoint(path)
    return Member(path, backend.NAME, backend.model_fns(model), meta)


def _cmd_eval(args: argparse.Namespace) -> int:
    args.ensemble_members = [_ensemble_member(m, args.framework) for m in args.ensemble]
    return _backend(args.framework).main_eval(args)


def _cmd_predict(args: argparse.Namespace) -> int:
    return _backend(args.framework).main_predict(args)


def _cmd_parity(args: argparse.Namespace) -> int:
    from metalearn import parity_report
    from metalearn_shared.parity import ParityError

    try:
        return parity_report.main(args)
    except ParityError as e:
        raise CLIError(str(e)) from e


def _cmd_convert(args: argparse.Namespace) -> int:
    from metalearn import convert

    return convert.main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        from benchmarks import runner
    except ModuleNotFoundError as e:
        if e.name != "benchmarks":
            raise
        raise CLIError("metalearn bench runs the benchmark suite of a source checkout (the "
                       "benchmarks/ folder is not installed): run it from the repository root, "
                       "or python -m benchmarks there.") from e
    return runner.main(args.rest, prog="metalearn bench")


def _cmd_demo(args: argparse.Namespace) -> int:
    from metalearn import demo

    return demo.main(args)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "data": _cmd_data, "train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict,
    "parity": _cmd_parity, "convert": _cmd_convert, "bench": _cmd_bench, "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the runner parses its own options (and --help)
        args = argparse.Namespace(command="bench", rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(HANDLERS[args.command](args) or 0)
    except (CLIError, ValueError, FileNotFoundError, ConnectionError, FloatingPointError) as e:
        print(f"metalearn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied: one line, not a traceback
        where = f" ({e.filename})" if e.filename and str(e.filename) not in str(e) else ""
        print(f"metalearn {args.command}: error: {e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
