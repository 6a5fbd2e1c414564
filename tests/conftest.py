"""Suite-wide settings: the "everything required" switch and the hypothesis profile.

``METALEARN_REQUIRE_ALL=1`` (set in CI) turns every skip into a failure that names the
skip's reason: a module-level ``pytest.importorskip`` (a broken framework install), a
conftest's (``tests/parity/conftest.py``), a test's ``pytest.skip`` (missing Omniglot
data). With frameworks and data present, CI then shows 0 skipped tests, and anything that
would have been silently skipped fails instead. ``xfail`` is left alone.

``CI`` set (to anything): hypothesis runs derandomised (the same examples every run, so a
CI failure reproduces) and without deadlines (a shared 2-core runner is slow at times).

``METALEARN_MALLOC=default`` unless set: the many in-process ``metalearn train --framework
torch`` calls keep pytest's allocator as glibc has it (``tests/test_allocator.py`` tests the
setting itself, with the variable unset in its own processes).
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = "METALEARN_REQUIRE_ALL"
os.environ.setdefault("METALEARN_MALLOC", "default")  # see the docstring

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a dev extra; the fuzz tests importorskip it
    pass
else:
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", deadline=None)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _required() -> bool:
    return os.environ.get(REQUIRE_ALL, "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (file, line, "Skipped: reason"); anything else, as text.
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _as_failure(report: pytest.CollectReport | pytest.TestReport) -> None:
    report.outcome = "failed"
    report.longrepr = (f"{REQUIRE_ALL}=1 makes skips failures, and this was skipped: "
                       f"{_skip_reason(report.longrepr)}")


class _RequireAll:
    """The switch's hooks, registered as a plugin rather than kept in this conftest: a
    conftest's hooks are not called for a directory whose own conftest failed to import
    (or skipped), which is exactly the case ``tests/parity/conftest.py`` is."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector):
        """Module- and conftest-level skips (``importorskip`` at import time)."""
        outcome = yield
        report = outcome.get_result()
        if report.skipped:
            _as_failure(report)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        """Skips inside fixtures and tests (``pytest.skip``, ``importorskip``, skip marks)."""
        outcome = yield
        report = outcome.get_result()
        if report.skipped and not hasattr(report, "wasxfail"):
            _as_failure(report)


def pytest_configure(config: pytest.Config) -> None:
    if _required():
        config.pluginmanager.register(_RequireAll(), "metalearn-require-all")
        # A skipped module is reported as a collection error; run the rest regardless.
        config.option.continue_on_collection_errors = True


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (the README runs ``-n 2 --dist loadgroup``), the tests that share a
    module- or session-scoped fixture of their own file (a benchmark run, a trained
    checkpoint) run on one worker, so the fixture is made once."""
    for item in items:
        info, module = getattr(item, "_fixtureinfo", None), getattr(item, "module", None)
        if info is None or module is None:
            continue
        shared = sorted(name for name, defs in info.name2fixturedefs.items()
                        if any(d.scope in ("module", "package", "session")
                               and getattr(d.func, "__module__", None) == module.__name__
                               for d in defs))
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{module.__name__}::{shared[0]}"))
