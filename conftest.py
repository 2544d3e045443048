"""Both builds in one test command (docs/architecture.md "Two builds: compiled and pure Python").

When this run uses the compiled modules (framework/_compiled.py) and runs the whole suite (no
paths on the command line, as the README's and CI's ``.venv/bin/python -m pytest`` does), the
same pytest command runs again at the end of the session against the pure-Python modules
(``TCPSTACK_PURE_PYTHON=1``, in a child process), and the exit status is that of the two runs
together. ``--builds=current`` runs only the build in use; ``--builds=both`` asks for both even
for a selection of tests. A run that is pure Python already (no compiler, or the switch set) is
not repeated. tests/test_both_builds.py proves which build each run used. The pure run has
``CI`` unset: the same tests with the developer's example counts (the compiled run has CI's).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time

import pytest

#: Set in the child process that runs the pure-Python build: it must not start another.
CHILD_ENV = "TCPSTACK_TEST_PURE_RUN"

_result = pytest.StashKey[tuple[int, float]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--builds",
        choices=("auto", "both", "current"),
        default="auto",
        help="auto: run the whole suite against the compiled and then the pure-Python build, a selection "
        "against the build in use; both: always both; current: only the build in use",
    )


def _second_run_wanted(config: pytest.Config) -> bool:
    if os.environ.get(CHILD_ENV) or config.option.collectonly:
        return False
    choice = config.getoption("--builds")
    if choice == "current":
        return False
    from framework import _compiled

    if not _compiled.active():  # pure already: a second run would be the same run
        return False
    return choice == "both" or config.args_source == pytest.Config.ArgsSource.TESTPATHS


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR):
        return
    if not _second_run_wanted(config):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("=", "the same tests against the pure-Python build (TCPSTACK_PURE_PYTHON=1)")
    env = {**os.environ, "TCPSTACK_PURE_PYTHON": "1", CHILD_ENV: "1"}
    # The compiled run is the thorough one (CI's example counts: hypothesis's ``ci`` profile, the
    # long fuzz runs); the pure run repeats every test with the developer's counts, so that both
    # fit CI's 20 minutes. The pure build is the one the suite always ran; the compiled one is new.
    env.pop("CI", None)
    # TCPSTACK_PURE_RUN_ARGS: extra arguments for the pure run only (e.g. -m "not integration").
    extra = shlex.split(os.environ.get("TCPSTACK_PURE_RUN_ARGS", ""))
    argv = [sys.executable, "-m", "pytest", *config.invocation_params.args, *extra]
    started = time.monotonic()
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        sys.stdout.flush()
        child = subprocess.run(argv, env=env, cwd=config.invocation_params.dir, check=False)
    config.stash[_result] = (child.returncode, time.monotonic() - started)
    if child.returncode != 0 and session.exitstatus == 0:
        session.exitstatus = child.returncode


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from framework import _compiled

    result = terminalreporter.config.stash.get(_result, None)
    this = "compiled" if _compiled.active() else "pure Python"
    if result is None:
        if not os.environ.get(CHILD_ENV):
            terminalreporter.write_line(f"builds: this run only ({this}: {_compiled.describe()})")
        return
    code, seconds = result
    outcome = "passed" if code == 0 else f"FAILED (exit status {code})"
    terminalreporter.write_line(
        f"builds: compiled run (this summary) and pure-Python run ({outcome}, {seconds:.0f} s, output above)"
    )
