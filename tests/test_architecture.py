"""The two contracts and the layers, checked from the source (``docs/architecture.md``).

* No module outside the three ``models`` packages names a model (the registry is the model
  contract: generic code iterates it).
* Imports run downward — spec and data, then the two framework packages, then orchestration
  (``metalearn``), the benchmarks, and the command line on top — with no circles; lazy
  imports (inside functions) and ``importlib.import_module("literal")`` included.
* Both framework backends implement :class:`metalearn_shared.backend.Backend`.
* A toy model defined in ``tests/toy_model/`` (a spec, a torch and a Keras module, nothing
  else) trains, evaluates, passes parity and is benchmarked from the CLI in both frameworks.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metalearn_shared import models, registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("metalearn", "metalearn_shared", "metalearn_tf", "metalearn_torch", "benchmarks")
MODEL_DIRS = tuple(ROOT / p / "models" for p in ("metalearn_shared", "metalearn_tf", "metalearn_torch"))


def _module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _module_files()


def _resolve(target: str) -> str | None:
    """The longest project module that ``target`` names (or is inside)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def imports_of(module: str, source: str) -> set[str]:
    """Project modules ``module`` imports anywhere in ``source`` (functions included)."""
    is_pkg = MODULES.get(module, Path()).name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            targets = [node.args[0].value]
        out.update(t for t in map(_resolve, targets) if t and t != module)
    return out


def layer(module: str) -> int:
    """0 spec and data, 1 frameworks, 2 orchestration, 3 benchmarks, 4 the command line."""
    if module in ("metalearn.cli", "metalearn.__main__"):
        return 4
    if module.split(".")[0] == "benchmarks":
        return 3
    if module.split(".")[0] == "metalearn":
        return 2
    if module.split(".")[0] in ("metalearn_tf", "metalearn_torch"):
        return 1
    return 0


def _graph() -> dict[str, set[str]]:
    return {m: imports_of(m, p.read_text()) for m, p in MODULES.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, targets in graph.items():
        for b in targets:
            other_framework = (layer(a) == layer(b) == 1 and a.split(".")[0] != b.split(".")[0])
            if layer(b) > layer(a) or other_framework:
                bad.append(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_imports_run_downward():
    assert upward_imports(_graph()) == []


def test_no_import_circles():
    assert cycles(_graph()) == []


def test_the_import_checks_can_fail():
    graph = _graph()
    planted = {**graph, "metalearn_shared.losses": graph["metalearn_shared.losses"] | {"metalearn.cli"}}
    assert upward_imports(planted) == ["metalearn_shared.losses (layer 0) imports metalearn.cli (layer 4)"]
    planted["metalearn.cli"] = planted["metalearn.cli"] | {"metalearn_shared.losses"}
    assert any({"metalearn.cli", "metalearn_shared.losses"} <= set(c) for c in cycles(planted))
    lazy = "def f():\n    from metalearn_torch import models\n    importlib.import_module('metalearn.cli')\n"
    assert imports_of("metalearn_shared.losses", lazy) == {"metalearn_torch.models", "metalearn.cli"}


# -- model names ---------------------------------------------------------------------------
def _builtin_specs() -> list[registry.ModelSpec]:
    return [s for s in models.specs() if s.config_cls.__module__.startswith("metalearn_shared.models")]


def model_mentions(source: str, names: set[str], classes: set[str]) -> list[str]:
    """Code (not docstrings or comments) in ``source`` that names a model: a string equal to a
    model name or starting with ``<name>-``, a config class, an import of a model's module."""
    tree = ast.parse(source)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in names or any(node.value.startswith(f"{n}-") for n in names):
                found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, (ast.Name, ast.Attribute)):
            ident = node.id if isinstance(node, ast.Name) else node.attr
            if ident in classes:
                found.append(f"line {node.lineno}: {ident}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            found += [f"line {node.lineno}: import {m}" for m in mods
                      if m.rpartition(".")[0].endswith(".models") and m.rpartition(".")[2] in names]
    return sorted(found, key=lambda f: int(f.split(":")[0].split()[1]))


def test_no_module_outside_the_models_packages_names_a_model():
    specs = _builtin_specs()
    names = {s.name for s in specs}
    classes = {s.config_cls.__name__ for s in specs}
    bad = {}
    for module, path in MODULES.items():
        if any(path.is_relative_to(d) for d in MODEL_DIRS):
            continue
        hits = model_mentions(path.read_text(), names, classes)
        if hits:
            bad[module] = hits
    assert bad == {}


def test_the_model_name_check_can_fail():
    src = '"""Docstring naming "mann" is fine."""\nif name == "siamese":\n    c = ProtoNetConfig()\n' \
          'from metalearn_shared.models import lstm\nx = "protonet-conv4"\n'
    assert model_mentions(src, {"siamese", "mann", "lstm", "protonet"}, {"ProtoNetConfig"}) == [
        "line 2: 'siamese'", "line 3: ProtoNetConfig", "line 4: import metalearn_shared.models.lstm",
        "line 5: 'protonet-conv4'"]


# -- the framework contract -------------------------------------------------------------------
@pytest.mark.parametrize("framework", registry.FRAMEWORKS)
def test_backend_implements_the_protocol(framework):
    pytest.importorskip("torch" if framework == "torch" else "keras")
    from metalearn import backends
    from metalearn_shared.backend import MEMBERS, Backend

    backend = backends.get(framework)
    assert backend.NAME == framework
    missing = [m for m in MEMBERS if not hasattr(backend, m)]
    assert missing == []
    for name, fn in vars(Backend).items():
        if callable(fn) and not name.startswith("_"):
            want = list(inspect.signature(fn).parameters)[1:]  # without self
            assert list(inspect.signature(getattr(backend, name)).parameters) == want, name
    assert sorted(backend.available_models()) == sorted(models.names())
    assert backends.get({"keras": "tf", "torch": "pytorch"}[framework]) is backend


# -- a model from outside the library ------------------------------------------------------------
def test_plugins_register_from_the_environment():
    env = {**os.environ, "METALEARN_PLUGINS": "tests.toy_model.spec",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", "from metalearn_shared import models; "
                          "print(models.names())"], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert "toylinear" in out.stdout
    env["METALEARN_PLUGINS"] = "tests.no_such_module"
    bad = subprocess.run([sys.executable, "-c", "import metalearn_shared.models"], env=env,
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "METALEARN_PLUGINS" in bad.stderr and "no_such_module" in bad.stderr


@pytest.fixture
def toy():
    from tests.toy_model import spec

    registry.register_model(spec.SPEC)
    yield spec
    registry.unregister_model(spec.NAME)


@pytest.mark.parametrize("framework", registry.FRAMEWORKS)
def test_a_toy_model_runs_through_the_cli(toy, framework, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from metalearn.cli import main

    task = ["--ways", "3", "--queries", "2", "--dataset", "glyphs"]
    run = tmp_path / "run"
    assert main(["train", "--framework", framework, "--model", toy.NAME, "--steps", "4",
                 "--out", str(run), *task]) == 0
    capsys.readouterr()
    assert main(["eval", "--framework", framework, str(run / "checkpoint.safetensors"),
                 "--episodes", "4", *task]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == toy.NAME and 0 <= report["accuracy"]["mean"] <= 1
    if framework == registry.FRAMEWORKS[0]:  # both frameworks, both directions, in one run
        assert main(["parity", "--tiny", "--model", toy.NAME, "--steps", "2",
                     "--out", str(tmp_path / "parity")]) == 0
        results = json.loads((tmp_path / "parity" / "parity.json").read_text())["results"]
        assert {r["case"] for r in results} == {toy.NAME}
        assert len(results) == 2
        assert main(["bench", "--quick", "--only", "steps", "--models", toy.NAME,
                     "--out", str(tmp_path / "bench")]) == 0
        records = json.loads(next((tmp_path / "bench").glob("*.json")).read_text())["steps"]["records"]
        assert {(r["framework"], r["phase"]) for r in records if "error" not in r} >= {
            (fw, phase) for fw in registry.FRAMEWORKS for phase in ("train", "infer")}
        assert all(r["model"] == toy.NAME for r in records)
