"""Run by tests/test_distributed_tf.py in a fresh process (the CPU must be split into two
logical devices before TensorFlow starts): the teacher-forced check, then ProtoNet and MANN
from the CLI on 2 mirrored replicas and on 1. Prints one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from metalearn_tf import distributed as TD

out = Path(sys.argv[1])
strategy = TD.make_strategy("mirrored", 2)
report = TD.teacher_forced_equivalence(strategy, steps=2)

from metalearn.cli import main  # noqa: E402

common = {"protonet": ["--model", "protonet", "--shots", "1", "--queries", "2", "--meta-batch", "2"],
          "mann": ["--model", "mann", "--samples-per-class", "3", "--batch", "4"]}
for name, extra in common.items():
    for label, dist in (("two", ["--distribute", "mirrored", "--replicas", "2"]), ("one", [])):
        argv = ["train", "--framework", "tf", "--size", "16", "--ways", "3", "--seed", "3",
                "--optimizer", "sgd", "--lr", "0.1", "--steps", "2", *extra, *dist,
                "--out", str(out / f"{name}-{label}")]
        assert main(argv) == 0, argv
print(json.dumps(report))
