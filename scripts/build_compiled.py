"""Build the compiled hot modules with mypyc into .compiled/ (run by scripts/setup; safe to run again).

    .venv/bin/python scripts/build_compiled.py [--require] [--force] [--out DIR]

Compiles the modules listed in pyproject.toml (``[tool.tcpstack.compiled] modules``) when a C compiler (``$CC``
or the one Python was built with) and the Python headers are there; otherwise it records why in
``.compiled/manifest.json`` and exits 0: the pure-Python modules are used, everything still works.
A listed module that mypyc rejects is left pure and named (manifest ``excluded``, and
``tcpstack --version``); the rest are compiled. ``--require`` (or ``TCPSTACK_REQUIRE_COMPILED=1``,
which CI sets) makes either case an error: CI must test the compiled build it claims to test.

The modules, the shared library and the manifest go to ``.compiled/`` (``lib/`` for the extension
files), never beside the sources. The manifest records the SHA-256 of every source file the
compiled modules import (within this repository), so that framework/_compiled.py refuses a build
whose sources changed since. Nothing is rebuilt when the build is current (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("framework", "layers", "plugins", "tcpstack")

# Runs in a child process (setuptools' build_ext is easiest to drive as a setup.py would).
_SETUP = """
import json, sys
from setuptools import setup
from mypyc.build import mypycify
cfg = json.loads(sys.argv[1])
setup(
    name="tcpstack-compiled",
    ext_modules=mypycify(["--config-file", cfg["config"], *cfg["paths"]], opt_level="3", debug_level="0",
                         group_name=cfg["group"]),
    script_args=["build_ext", "--build-lib", cfg["lib"], "--build-temp", cfg["temp"]],
)
"""


def load_list() -> ModuleType:
    """framework/_compiled.py, loaded from its file (importing ``framework`` would load a build)."""
    spec = importlib.util.spec_from_file_location("_tcpstack_compiled_list", ROOT / "framework" / "_compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    os.environ["TCPSTACK_PURE_PYTHON"] = "1"  # its install() must not touch this process's imports
    spec.loader.exec_module(module)
    return module


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def sources(modules: list[str]) -> dict[str, str]:
    """Every first-party source file *modules* import, transitively, with the packages' __init__
    files: relative path -> SHA-256. mypyc bakes in what it learned of them (Final constants,
    native classes), so a change to any of them makes the build stale."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                todo.append(base)
                todo += [f"{base}.{alias.name}" for alias in node.names]
    from hashlib import sha256

    return {
        str(path.relative_to(ROOT)): sha256(path.read_bytes()).hexdigest()
        for name, path in sorted(seen.items())
        if name.split(".")[0] in FIRST_PARTY
    }


def preflight(work: Path) -> str | None:
    """Why no extension can be built here (no mypyc, compiler or headers), or None if one can."""
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed (it comes with mypy: pip install -e '.[dev]')"
    cc = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc")
    cc_argv = cc.split()
    if not cc_argv or shutil.which(cc_argv[0]) is None:
        return f"no C compiler (`{cc}` not found; install gcc)"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        return f"no Python headers ({include}/Python.h missing; install python3-dev)"
    src = work / "probe.c"
    src.write_text("#include <Python.h>\nint probe(void) { return PY_MAJOR_VERSION; }\n")
    try:
        result = subprocess.run(
            [*cc_argv, f"-I{include}", "-c", str(src), "-o", str(work / "probe.o")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except OSError as exc:
        return f"the C compiler `{cc}` cannot run: {exc}"
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
        return f"the C compiler `{cc}` fails on a test program: {first}"
    return None


_ERROR = re.compile(r"^(?P<path>/[^:\n]+\.py):(?P<line>\d+): error: (?P<msg>.*)$", re.MULTILINE)


def rejected(output: str, by_path: dict[str, str]) -> dict[str, str]:
    """Listed module -> mypyc's first complaint about it, from a failed build's output."""
    found: dict[str, str] = {}
    for match in _ERROR.finditer(output):
        name = by_path.get(str(Path(match["path"]).resolve()))
        if name is not None and name not in found:
            found[name] = f"mypyc: line {match['line']}: {match['msg']}"
    return found


def write_manifest(out: Path, manifest: dict[str, object]) -> None:
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / "manifest.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".compiled", help="build directory (default .compiled)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the build is current")
    parser.add_argument(
        "--require",
        action="store_true",
        default=os.environ.get("TCPSTACK_REQUIRE_COMPILED", "").lower() in ("1", "yes", "true", "on"),
        help="fail unless every listed module compiles (default: TCPSTACK_REQUIRE_COMPILED)",
    )
    args = parser.parse_args(argv)
    listing = load_list()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted: list[str] = list(pyproject["tool"]["tcpstack"]["compiled"]["modules"])
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = lambda text: print(f"scripts/build_compiled: {text}", flush=True)  # noqa: E731

    base: dict[str, object] = {
        "format": listing.MANIFEST_FORMAT,
        "requested": wanted,
        "ext_suffix": listing.ext_suffix(),
        "python": sys.version.split()[0],
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    previous = listing.inspect_build(out, ROOT)
    try:
        old_requested = json.loads((out / "manifest.json").read_text()).get("requested")
    except (OSError, ValueError):
        old_requested = None
    if previous.usable and old_requested == wanted and not args.force and not (args.require and previous.excluded):
        say(f"up to date ({len(previous.modules)} modules compiled in {out})")
        return 0

    work = out / "work"
    work.mkdir(exist_ok=True)
    why = preflight(work)
    if why is not None:
        write_manifest(out, {**base, "modules": {}, "excluded": {}, "sources": {}, "reason": why})
        shutil.rmtree(out / "lib", ignore_errors=True)
        say(f"no compiled build: {why}; the pure-Python modules are used")
        return 1 if args.require else 0

    by_path = {str(p.resolve()): name for name in wanted if (p := module_file(name)) is not None}
    excluded: dict[str, str] = {name: "no source file" for name in wanted if module_file(name) is None}
    digests = sources(wanted)  # hashed before the build: a source edited meanwhile makes it stale
    staging = Path(tempfile.mkdtemp(prefix="lib.", dir=out))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the build from other users (tests run some as nobody)
    log = out / "build.log"
    started = time.monotonic()
    with log.open("w") as log_file:
        while True:
            modules = [name for name in wanted if name not in excluded]
            if not modules:
                break
            paths = [str(module_file(name)) for name in modules]
            cfg = {
                "config": str(ROOT / "pyproject.toml"),
                "paths": paths,
                "group": listing.GROUP,
                "lib": str(staging),
                "temp": str(work / "temp"),
            }
            say(f"compiling {len(modules)} modules with mypyc (output in {log})")
            result = subprocess.run(
                [sys.executable, "-c", _SETUP, json.dumps(cfg)], cwd=work, capture_output=True, text=True
            )
            log_file.write(result.stdout + result.stderr)
            log_file.flush()
            if result.returncode == 0:
                break
            refused = rejected(result.stdout + result.stderr, by_path)
            if not refused:
                tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
                why = "the build failed: " + " / ".join(tail)
                write_manifest(out, {**base, "modules": {}, "excluded": excluded, "sources": {}, "reason": why})
                shutil.rmtree(staging, ignore_errors=True)
                shutil.rmtree(out / "lib", ignore_errors=True)
                say(f"no compiled build: {why} (see {log}); the pure-Python modules are used")
                return 1 if args.require else 0
            for name, msg in refused.items():
                say(f"left pure: {name}: {msg}")
            excluded.update(refused)

    compiled = {name: f"{name.replace('.', '/')}{listing.ext_suffix()}" for name in wanted if name not in excluded}
    missing = [name for name, rel in compiled.items() if not (staging / rel).is_file()]
    if missing:
        why = f"the build did not produce {', '.join(missing)}"
        write_manifest(out, {**base, "modules": {}, "excluded": excluded, "sources": {}, "reason": why})
        shutil.rmtree(staging, ignore_errors=True)
        say(f"no compiled build: {why}")
        return 1 if args.require else 0
    shutil.rmtree(out / "lib", ignore_errors=True)
    staging.replace(out / "lib")
    reason = "" if compiled else "mypyc rejected every listed module"
    write_manifest(out, {**base, "modules": compiled, "excluded": excluded, "sources": digests, "reason": reason})
    say(f"compiled {len(compiled)} of {len(wanted)} modules in {time.monotonic() - started:.0f} s into {out / 'lib'}")
    if excluded and args.require:
        say(f"error: left pure although compiled modules are required: {', '.join(excluded)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
