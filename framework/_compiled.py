"""The two builds: compiled hot modules (mypyc) when a build exists and is current, pure Python otherwise.

``scripts/build_compiled.py`` (run by ``scripts/setup`` when it finds a C compiler and the Python
headers) compiles the modules listed in ``pyproject.toml`` (``[tool.tcpstack.compiled]``) with
mypyc into ``.compiled/`` at the repository root, *not* next to their sources: with an editable
install an extension module beside its ``.py`` would shadow the source for good. It writes
``.compiled/manifest.json``: which modules were compiled, which were left pure and why, and the
SHA-256 of every source file the build read.

:func:`install` (called when this module is imported, which ``framework/__init__.py`` does
first, so before any of these modules is imported) puts a finder at the front of
``sys.meta_path`` that loads the compiled modules, but only when all of this holds; otherwise
every module stays pure Python and a :class:`RuntimeWarning` says why, once:

- ``TCPSTACK_PURE_PYTHON`` is not set to a true value (``1``, ``yes``, ``true``, ``on``);
- the manifest exists, lists compiled modules, and was built for this interpreter;
- no source file the build read has changed since (a stale build is refused whole: the compiled
  modules call each other natively, so half of a build cannot be mixed with newer sources);
- none of the modules was imported before the finder was installed.

This module imports only the standard library: it runs before the rest of ``framework``.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TypeVar

_T = TypeVar("_T")

if TYPE_CHECKING:  # mypyc reads the real one (mypy_extensions comes with mypy, a dev dependency)
    from mypy_extensions import mypyc_attr as mypyc_attr
else:

    def mypyc_attr(*attrs: str, **kwattrs: Any) -> Any:
        """mypy_extensions.mypyc_attr for the interpreted build, which has no use for it: a no-op
        decorator, so the sources need no runtime dependency. ``@mypyc_attr(allow_interpreted_subclasses=True)``
        on a compiled class lets plugins (interpreted) subclass it."""

        def decorate(cls: _T) -> _T:
            return cls

        return decorate


#: The environment variable that forces the pure-Python modules.
PURE_ENV: Final = "TCPSTACK_PURE_PYTHON"
#: The name of mypyc's shared library for the group (``<GROUP>__mypyc``): every compiled module's
#: code is in it; each module's own extension is a small shim that imports it.
GROUP: Final = "tcpstack_hot"
MANIFEST_FORMAT: Final = 1

ROOT: Final = Path(__file__).resolve().parent.parent
BUILD_DIR: Final = ROOT / ".compiled"


def ext_suffix() -> str:
    """The file name ending of an extension module for this interpreter."""
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def pure_requested(environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    """Whether :data:`PURE_ENV` asks for the pure-Python modules."""
    value = (os.environ if environ is None else environ).get(PURE_ENV, "")
    return value.strip().lower() in ("1", "yes", "true", "on")


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Build:
    """What a build directory holds and whether it may be used (see :func:`inspect_build`)."""

    usable: bool
    """True: the finder may load :attr:`modules` compiled."""
    reason: str
    """Why not (empty when usable)."""
    modules: dict[str, str] = field(default_factory=dict)
    """Compiled module -> its extension file, relative to ``lib/``."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Listed module the build left pure -> why."""
    requested: tuple[str, ...] = ()
    """The modules the build was asked to compile (the list in ``pyproject.toml`` then)."""
    built: bool = False
    """True: the manifest lists compiled modules (a compiled build was made, current or not)."""


def inspect_build(build_dir: Path = BUILD_DIR, root: Path = ROOT) -> Build:
    """Read ``manifest.json`` in *build_dir* and check it against the sources under *root*."""
    try:
        manifest = json.loads((build_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    requested = tuple(manifest.get("requested", ())) if isinstance(manifest, dict) else ()
    try:
        return replace(_inspect_build(build_dir, root), requested=requested)
    except OSError as exc:  # e.g. a build another user made, unreadable to this one
        return Build(False, f"the compiled build in {build_dir} cannot be read: {exc}")


def _inspect_build(build_dir: Path, root: Path) -> Build:
    path = build_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return Build(False, "no compiled build (run scripts/build_compiled.py, or scripts/setup)")
    except (OSError, ValueError) as exc:
        return Build(False, f"unreadable {path}: {exc}")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return Build(False, f"{path} has an unknown format (rebuild with scripts/build_compiled.py)")
    modules: dict[str, str] = dict(manifest.get("modules", {}))
    excluded: dict[str, str] = dict(manifest.get("excluded", {}))
    if not modules:
        return Build(False, str(manifest.get("reason") or "the build compiled no module"), excluded=excluded)
    if manifest.get("ext_suffix") != ext_suffix():
        return Build(
            False,
            f"the compiled build is for another Python ({manifest.get('ext_suffix')}, this is {ext_suffix()}): "
            "rebuild with scripts/build_compiled.py",
            modules,
            excluded,
            built=True,
        )
    changed = []
    for rel, digest in dict(manifest.get("sources", {})).items():
        src = root / rel
        try:
            if file_hash(src) != digest:
                changed.append(rel)
        except OSError:
            changed.append(rel)
    if changed:
        names = ", ".join(sorted(changed)[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return Build(
            False,
            f"the compiled build is stale ({names} changed since it was built): rebuild with scripts/build_compiled.py",
            modules,
            excluded,
            built=True,
        )
    lib = build_dir / "lib"
    missing = [name for name, rel in modules.items() if not (lib / rel).is_file()]
    if missing or not (lib / f"{GROUP}__mypyc{ext_suffix()}").is_file():
        return Build(False, f"the compiled build in {lib} is incomplete: rebuild", modules, excluded, built=True)
    return Build(True, "", modules, excluded, built=True)


class CompiledFinder(importlib.abc.MetaPathFinder):
    """Loads the listed modules (and mypyc's shared library) from the build's ``lib/``."""

    def __init__(self, lib: Path, modules: dict[str, str]) -> None:
        self.lib = lib
        self.files = {name: lib / rel for name, rel in modules.items()}
        self.files[f"{GROUP}__mypyc"] = lib / f"{GROUP}__mypyc{ext_suffix()}"

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


@dataclass
class _State:
    installed: bool = False
    active: bool = False
    reason: str = "not decided yet (framework not imported)"
    build: Build | None = None


_state = _State()


def choose(build: Build, environ: dict[str, str] | os._Environ[str], imported: set[str]) -> tuple[bool, str, bool]:
    """Whether to load *build* compiled, why not, and whether that deserves a warning.

    *imported*: the names already in ``sys.modules`` (a listed module among them was loaded pure,
    and compiled modules cannot be mixed with it)."""
    if pure_requested(environ):
        return False, f"{PURE_ENV}={environ.get(PURE_ENV)} is set", False
    if not build.usable:
        # A build that exists but may not be used is news; no build at all (no compiler) is not.
        return False, build.reason, build.built
    early = sorted(name for name in build.modules if name in imported)
    if early:
        return False, f"{', '.join(early)} imported before framework (the compiled-module finder)", True
    return True, "", False


def install() -> None:
    """Decide once per process which build is used; install the finder for the compiled one."""
    if _state.installed:
        return
    _state.installed = True
    build = inspect_build()
    _state.build = build
    active, reason, warn = choose(build, os.environ, set(sys.modules))
    _state.reason = reason
    if warn:
        warnings.warn(f"tcpstack: using the pure-Python modules: {reason}", RuntimeWarning, stacklevel=2)
    if active:
        sys.meta_path.insert(0, CompiledFinder(BUILD_DIR / "lib", build.modules))
        _state.active = True


def active() -> bool:
    """Whether this process loads the compiled modules."""
    return _state.active


def build_in_use() -> Build | None:
    """The build this process inspected (None before :func:`install`)."""
    return _state.build


def is_compiled(module: ModuleType) -> bool:
    """Whether *module* was loaded from an extension file (the compiled build)."""
    spec = module.__spec__
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


def loaded_compiled() -> list[str]:
    """Import every module the build was asked for and return those running compiled."""
    return [name for name in requested() if is_compiled(importlib.import_module(name))]


def requested() -> tuple[str, ...]:
    """The modules the build in use (or refused) was asked to compile."""
    return _state.build.requested if _state.build is not None else ()


def describe() -> str:
    """One paragraph for ``tcpstack --version``: which build is in use and why."""
    build = _state.build
    compiled = loaded_compiled()
    if compiled:
        text = f"compiled with mypyc: {len(compiled)} modules ({', '.join(compiled)})"
        pure = [name for name in requested() if name not in compiled]
        if pure:
            notes = {**(build.excluded if build else {})}
            text += "; left pure: " + ", ".join(f"{n} ({notes[n]})" if n in notes else n for n in pure)
        return text + f"; {PURE_ENV}=1 forces pure Python"
    return f"pure Python ({_state.reason})"


install()
