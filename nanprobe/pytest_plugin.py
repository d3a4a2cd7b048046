"""nanprobe's pytest plugin: the ``nan_guard`` fixture, the ``nanprobe`` marker and ``pytest --nanprobe``.

It is loaded in every pytest session through the ``pytest11`` entry point, so importing it is cheap: torch and
the guard (:mod:`nanprobe.testing.guard`) are imported only when a test requests ``nan_guard`` or the
session runs with ``--nanprobe``; otherwise no torch hook is ever installed.

A failure is raised in the test's call phase (at the forward or ``backward()`` that produced the NaN, or at
the end of the call), so the test is reported FAILED, never ERROR."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nanprobe._version import __version__

if TYPE_CHECKING:
    from nanprobe.testing.failures import GuardSettings
    from nanprobe.testing.guard import NanGuard

__all__ = ["nan_guard"]

_GUARD = pytest.StashKey["NanGuard"]()
_MARKER_HELP = (
    "nanprobe(enabled=True, allow_inf=False, allow_modules=(), backward=True, parameters=True, diagnose=True): "
    "adjust nanprobe's NaN guard (the nan_guard fixture and --nanprobe) for this test; allow_modules takes "
    "fnmatch patterns of origin module names/types or watched model names"
)


# -- options, marker, header ----------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nanprobe", "nanprobe: fail tests whose PyTorch models produce NaN/Inf")
    group.addoption("--nanprobe", action="store_true", dest="nanprobe", default=False,
                    help="guard every top-level nn.Module call in every test: a NaN/Inf reaching an output or "
                         "a gradient fails the test, with the origin module localized")
    group.addoption("--nanprobe-allow-inf", action="store_true", dest="nanprobe_allow_inf", default=False,
                    help="tolerate Inf (not NaN) in outputs and gradients")
    group.addoption("--nanprobe-no-backward", action="store_false", dest="nanprobe_backward", default=True,
                    help="do not check gradients after backward")
    group.addoption("--nanprobe-no-diagnose", action="store_false", dest="nanprobe_diagnose", default=True,
                    help="do not localize failures (faster; the message then lacks the origin module)")
    group.addoption("--nanprobe-report", metavar="DIR", dest="nanprobe_report", default=None,
                    help="write a post-mortem bundle for each test the guard failed into DIR/<test id>/")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


def pytest_report_header(config: pytest.Config) -> str:
    state = "on (every top-level nn.Module call is guarded)" if config.getoption("nanprobe") else "off"
    line = f"nanprobe {__version__}: nan_guard fixture available; --nanprobe {state}"
    report = config.getoption("nanprobe_report")
    if report:
        line += f"; post-mortem bundles to {report}"
    return line


# -- building the guard -----------------------------------------------------------------------------
def settings_for(item: pytest.Item) -> GuardSettings:
    """The command-line defaults, overridden by the test's ``@pytest.mark.nanprobe(...)``."""
    from nanprobe.testing.failures import GuardSettings

    config = item.config
    settings = GuardSettings(allow_inf=bool(config.getoption("nanprobe_allow_inf")),
                             backward=bool(config.getoption("nanprobe_backward")),
                             diagnose=bool(config.getoption("nanprobe_diagnose")))
    marker = item.get_closest_marker("nanprobe")
    if marker is None:
        return settings
    if marker.args:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.nanprobe takes keyword arguments only "
                                f"({_MARKER_HELP.split(':')[0]})")
    try:
        return GuardSettings.from_options(settings, **marker.kwargs)
    except TypeError as exc:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.nanprobe: {exc}") from None


def _new_guard(item: pytest.Item) -> NanGuard:
    from nanprobe.testing.guard import NanGuard

    guard = NanGuard(settings_for(item))
    item.stash[_GUARD] = guard
    return guard


@pytest.fixture
def nan_guard(request: pytest.FixtureRequest) -> Iterator[NanGuard]:
    """``nan_guard.watch(model, name=None)``: fail the test when a NaN/Inf reaches the model's output or its
    gradients; ``nan_guard.check(obj, name=...)`` checks any tensor structure. Leaves no hook behind."""
    item = request.node
    guard = item.stash.get(_GUARD, None) or _new_guard(item)
    try:
        yield guard
    finally:
        guard.armed = False
        guard.remove()
        if _GUARD in item.stash:
            del item.stash[_GUARD]


# -- the call phase ------------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[Any]:
    guard = item.stash.get(_GUARD, None)
    session = bool(item.config.getoption("nanprobe"))
    if guard is None and not session:
        return (yield)
    __tracebackhide__ = True
    owned = guard is None
    if guard is None:
        guard = _new_guard(item)
    if session and guard.settings.enabled:
        guard.auto = True
        guard.install()
    try:
        result = yield
        guard.finish()  # raises the end-of-test findings (a swallowed failure, NaN gradients or parameters)
        return result
    finally:
        guard.armed = False
        guard.auto = False
        if owned:
            guard.remove()  # the stash entry stays until the call's report is made (for --nanprobe-report)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    if call.when == "call" and call.excinfo is not None and not item.config.getoption("fulltrace", False):
        _trim_traceback(call.excinfo)
    report = yield
    if call.when != "call":
        return report
    guard = item.stash.get(_GUARD, None)
    if guard is None:
        return report
    del item.stash[_GUARD]  # the fixture keeps its own reference for its teardown
    directory = item.config.getoption("nanprobe_report")
    if report.failed and guard.failures and directory:
        path = _write_bundle(item, guard, Path(directory))
        if path is not None:
            report.sections.append(("nanprobe post-mortem", f"bundle: {path}\n(nanprobe report {path})"))
    return report


def _trim_traceback(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Show the test's own frames for a guard failure, not torch's ``Module.__call__``/autograd engine
    frames and the guard's hooks between them (``--fulltrace`` shows everything). The traceback chain is
    relinked (``tb_next`` is writable) because pytest re-reads it when it cuts at the test function."""
    if getattr(excinfo.value, "guard_failure", None) is None:
        return
    import nanprobe

    hidden = (str(Path(nanprobe.__file__).parent) + os.sep, f"{os.sep}torch{os.sep}")
    chain = []
    tb = excinfo.tb
    while tb is not None:
        chain.append(tb)
        tb = tb.tb_next
    kept = [t for t in chain if not any(h in t.tb_frame.f_code.co_filename for h in hidden)]
    if not kept or kept[0] is not chain[0]:
        return
    for before, after in zip(kept, [*kept[1:], None]):
        before.tb_next = after
    excinfo.traceback = type(excinfo.traceback)(kept[0])


def _write_bundle(item: pytest.Item, guard: NanGuard, directory: Path) -> Path | None:
    """One post-mortem bundle (the monitor's format: ``nanprobe replay`` / ``nanprobe report`` read it) for the
    test's first guard failure, named after the test id. A failing writer must not hide the test's failure:
    its error goes into the test report as a warning instead."""
    from nanprobe.testing.bundle import write_failure_bundle

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid).strip("_")
    try:
        path = write_failure_bundle(guard.failures[0], directory, name, test_id=item.nodeid)
    except Exception as exc:
        item.warn(pytest.PytestWarning(f"nanprobe: could not write the post-mortem bundle: {exc}"))
        return None
    item.user_properties.append(("nanprobe_bundle", str(path)))
    return path
