"""The two builds (framework/_compiled.py, scripts/build_compiled.py, conftest.py at the root).

``test_this_run_uses_the_build_it_should`` runs in both runs of the test command: in the compiled
run it fails unless every compiled module really is loaded compiled (a silently pure "compiled"
run fails), in the pure run unless none is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import framework.checksum
from framework import _compiled
from framework._compiled import choose, inspect_build

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _expected_build() -> str:
    if _compiled.pure_requested():
        return "pure"
    required = os.environ.get("TCPSTACK_REQUIRE_COMPILED", "").lower() in ("1", "yes", "true", "on")
    build = inspect_build()
    return "compiled" if build.built or required else "pure"


def test_this_run_uses_the_build_it_should() -> None:
    """Compiled when a compiled build exists (or CI requires one) and the switch is not set; then
    every module the build compiled is an extension module here. Pure Python otherwise: none is."""
    expected = _expected_build()
    build = _compiled.build_in_use()
    assert build is not None
    loaded = _compiled.loaded_compiled()
    if expected == "compiled":
        assert _compiled.active(), f"a compiled build is expected, but this run is pure Python: {_compiled.describe()}"
        assert loaded == [name for name in build.requested if name in build.modules]
        assert loaded, "the compiled build holds no module"
        assert type(framework.checksum.internet_checksum).__name__ == "builtin_function_or_method"
    else:
        assert not _compiled.active()
        assert loaded == []
        assert type(framework.checksum.internet_checksum).__name__ == "function"
        assert framework.checksum.__file__ is not None and framework.checksum.__file__.endswith(".py")


def _fake_build(tmp_path: Path, *, digest: str | None = None, suffix: str | None = None) -> tuple[Path, Path]:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    source = root / "pkg" / "mod.py"
    source.write_text("X = 1\n")
    build = tmp_path / "build"
    lib = build / "lib"
    ext = _compiled.ext_suffix()
    (lib / "pkg").mkdir(parents=True)
    (lib / "pkg" / f"mod{ext}").write_bytes(b"")
    (lib / f"{_compiled.GROUP}__mypyc{ext}").write_bytes(b"")
    manifest = {
        "format": _compiled.MANIFEST_FORMAT,
        "requested": ["pkg.mod", "pkg.other"],
        "ext_suffix": suffix or ext,
        "modules": {"pkg.mod": f"pkg/mod{ext}"},
        "excluded": {"pkg.other": "mypyc: line 3: something"},
        "sources": {"pkg/mod.py": digest or _compiled.file_hash(source)},
    }
    (build / "manifest.json").write_text(json.dumps(manifest))
    return build, root


def test_a_current_build_is_usable(tmp_path: Path) -> None:
    build_dir, root = _fake_build(tmp_path)
    build = inspect_build(build_dir, root)
    assert build.usable and build.built, build.reason
    assert build.modules == {"pkg.mod": f"pkg/mod{_compiled.ext_suffix()}"}
    assert build.excluded == {"pkg.other": "mypyc: line 3: something"}
    assert build.requested == ("pkg.mod", "pkg.other")


def test_a_stale_build_is_refused_and_named(tmp_path: Path) -> None:
    """A source changed since the build: the build is refused whole, and the reason names the file."""
    build_dir, root = _fake_build(tmp_path)
    (root / "pkg" / "mod.py").write_text("X = 2\n")
    build = inspect_build(build_dir, root)
    assert not build.usable and build.built
    assert "stale" in build.reason and "pkg/mod.py" in build.reason
    active, reason, warn = choose(build, {}, set())
    assert (active, warn) == (False, True) and reason == build.reason


def test_a_build_for_another_python_or_incomplete_is_refused(tmp_path: Path) -> None:
    build_dir, root = _fake_build(tmp_path, suffix=".cpython-39-x86_64-linux-gnu.so")
    assert "another Python" in inspect_build(build_dir, root).reason
    build_dir, root = _fake_build(tmp_path / "2")
    (build_dir / "lib" / "pkg" / f"mod{_compiled.ext_suffix()}").unlink()
    assert "incomplete" in inspect_build(build_dir, root).reason


def test_no_build_is_no_warning(tmp_path: Path) -> None:
    build = inspect_build(tmp_path / "nothing", tmp_path)
    assert not build.usable and not build.built
    assert choose(build, {}, set()) == (False, build.reason, False)


def test_the_switch_and_early_imports_force_pure(tmp_path: Path) -> None:
    build_dir, root = _fake_build(tmp_path)
    build = inspect_build(build_dir, root)
    assert choose(build, {}, set()) == (True, "", False)
    for value in ("1", "yes", "true", "ON"):
        active, reason, warn = choose(build, {"TCPSTACK_PURE_PYTHON": value}, set())
        assert not active and not warn and "TCPSTACK_PURE_PYTHON" in reason
    assert choose(build, {"TCPSTACK_PURE_PYTHON": "0"}, set())[0]
    active, reason, warn = choose(build, {}, {"pkg.mod"})
    assert not active and warn and "pkg.mod imported before" in reason


def _version(env: dict[str, str]) -> str:
    done = subprocess.run(
        [PYTHON, "-m", "tcpstack.cli", "--version"], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_version_says_pure_python_and_why_when_the_switch_is_set() -> None:
    out = _version({"TCPSTACK_PURE_PYTHON": "1"})
    assert out.startswith("tcpstack ")
    assert "build: pure Python (TCPSTACK_PURE_PYTHON=1 is set)" in out


def test_version_names_the_compiled_modules_when_a_build_is_in_use() -> None:
    env = {key: value for key, value in os.environ.items() if key != "TCPSTACK_PURE_PYTHON"}
    done = subprocess.run([PYTHON, "-m", "tcpstack.cli", "--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    build = inspect_build()
    if build.usable:
        assert f"build: compiled with mypyc: {len(build.modules)} modules (" in done.stdout
        assert all(name in done.stdout for name in build.modules)
    else:
        assert f"build: pure Python ({build.reason})" in done.stdout


def test_the_build_script_without_a_compiler_leaves_pure_python(tmp_path: Path) -> None:
    """``CC=false``: the build records why and succeeds (setup must work without a compiler),
    unless a compiled build is required (CI), then it fails."""
    env = {**os.environ, "CC": "false"}
    env.pop("TCPSTACK_REQUIRE_COMPILED", None)
    script = str(ROOT / "scripts" / "build_compiled.py")
    done = subprocess.run([PYTHON, script, "--out", str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no compiled build: the C compiler `false`" in done.stdout
    build = inspect_build(tmp_path, ROOT)
    assert not build.usable and not build.built and "C compiler `false`" in build.reason
    done = subprocess.run(
        [PYTHON, script, "--out", str(tmp_path), "--require"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1


def _pure_checksum_module() -> object:
    spec = importlib.util.spec_from_file_location("_pure_checksum", ROOT / "framework" / "checksum.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PURE = _pure_checksum_module()


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=2**40))
def test_the_checksum_in_use_equals_the_pure_source(data: bytes, initial: int) -> None:
    """Whichever build runs, its checksum equals that of the pure source (loaded from the .py)."""
    for view in (data, bytearray(data), memoryview(data)):
        assert framework.checksum.internet_checksum(view, initial) == _PURE.internet_checksum(view, initial)  # type: ignore[attr-defined]
        assert framework.checksum.ones_sum(view) % 0xFFFF == _PURE.ones_sum(view) % 0xFFFF  # type: ignore[attr-defined]


@given(st.binary(max_size=3000))
def test_the_word_sum_of_the_compiled_checksum_is_the_buffer_mod_0xffff(data: bytes) -> None:
    """``_word_sum`` (the compiled build's ones' sum) is congruent to the buffer read as one
    big-endian integer, an odd byte padded (RFC 1071 §1): checked here in both builds."""
    padded = data + b"\0" if len(data) % 2 else data
    assert framework.checksum._word_sum(data) % 0xFFFF == int.from_bytes(padded, "big") % 0xFFFF
    assert (framework.checksum._word_sum(data) == 0) == (not any(data))


def _build_script() -> object:
    spec = importlib.util.spec_from_file_location("_build_compiled", ROOT / "scripts" / "build_compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_leaves_a_module_mypyc_rejects_pure_and_says_why() -> None:
    """mypyc's complaints are traced to the listed module (which the build then leaves pure);
    output it cannot trace (a C compiler error) names no module, and the build gives up whole."""
    script = _build_script()
    path = str(ROOT / "framework" / "pipeline.py")
    output = f"{path}:49: error: Inheriting from most builtin types is unimplemented\n{path}:49: note: ...\n"
    by_path = {path: "framework.pipeline"}
    assert script.rejected(output, by_path) == {  # type: ignore[attr-defined]
        "framework.pipeline": "mypyc: line 49: Inheriting from most builtin types is unimplemented"
    }
    assert script.rejected("build/__native.c:1: error: boom\n", by_path) == {}  # type: ignore[attr-defined]


def test_the_manifest_hashes_what_the_compiled_modules_import() -> None:
    """A change to a module the compiled ones import (mypyc inlines its Final constants) makes
    the build stale too: the hashed sources include the imports, transitively."""
    digests = _build_script().sources(["layers.tcp.seq", "layers.tcp.connection"])  # type: ignore[attr-defined]
    assert {"layers/tcp/seq.py", "layers/tcp/connection.py", "layers/tcp/policy.py", "framework/__init__.py"} <= set(
        digests
    )
    assert all(len(digest) == 64 for digest in digests.values())
