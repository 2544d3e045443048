"""Names that moved out of ``framework/`` fail with an error that says where they went.

The application edge (command line, streams API, I/O, control socket, test kit, the built-in
defaults) lives in the ``tcpstack`` package now. The core imports none of it: this module only
*names* the new places, as text, in the :class:`ImportError` that an old import raises.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Final

#: Old module -> where it went (and what to use there).
MOVED_MODULES: Final[dict[str, str]] = {
    "framework.cli": "tcpstack.cli",
    "framework.demo": "tcpstack.demo",
    "framework.control": "tcpstack.control",
    "framework.services": "tcpstack.services",
    "framework.configcmd": "tcpstack.configcmd",
    "framework.netns": "tcpstack.netns",
    "framework.docgen": "tcpstack.docgen",
    "framework.logging": "tcpstack.logging (tcpstack.configure_logging() for applications)",
    "framework.io": "tcpstack.io (tcpstack.io.tun, tcpstack.io.memory, tcpstack.io.driver, tcpstack.io.link)",
    "framework.api": "tcpstack.streams (framework.api.streams is tcpstack.streams; open a stack with "
    "tcpstack.open_stack)",
    "framework.testing": "tcpstack.testing (tcpstack.testing.pair, tcpstack.testing.sansio)",
}

#: (old module, name) -> the module that has it now.
MOVED_NAMES: Final[dict[tuple[str, str], str]] = {
    ("framework.config", "DEFAULT_CONFIG"): "tcpstack.config",
    ("framework.config", "default_config_dict"): "tcpstack.config",
    ("framework.plugins", "BUILTIN_PLUGINS"): "tcpstack.plugins",
}


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Consulted last, so only for a module that no longer exists: say where it went."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        raise ModuleNotFoundError(f"{fullname} moved to {new}", name=fullname)


def install() -> None:
    """Put the finder at the end of ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())


def module_getattr(module: str) -> Callable[[str], object]:
    """A module ``__getattr__`` that raises :class:`ImportError` naming the new home of a moved name."""

    def __getattr__(name: str) -> object:
        new = MOVED_NAMES.get((module, name))
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        raise ImportError(f"{module}.{name} moved to {new}: import {name} from {new}", name=module)

    return __getattr__
