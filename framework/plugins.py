"""The plugin host: one pluggy ``PluginManager`` per stack, never per connection.

Built-in plugins are registered by module name (pytest's ``default_plugins``), third-party
plugins come from the entry-point group ``tcpstack``, and any plugin can be disabled by name
(``[plugins] disable = ["<module name>"]``, like ``-p no:NAME`` in pytest).

Hooks of the stack as a whole are declared in :mod:`framework.hookspecs`. A layer declares its
own hooks in a hookspec module of its package and adds them from its ``stack_addhooks``
implementation (pytest's ``pytest_addhooks``): the call is historic, so a plugin registered at
any time adds its hookspecs as it registers, before implementations are checked against them.

Set ``TCPSTACK_TRACE_PLUGINS=1`` to log every hook call (pluggy's hook-call monitoring).
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import pluggy
import structlog

from framework import hookspecs
from framework._moved import module_getattr as _moved_getattr
from framework.errors import ConfigError, PluginError
from framework.registry import Registry

if TYPE_CHECKING:
    from framework.stack import Stack

PROJECT: Final = hookspecs.PROJECT
hookimpl = pluggy.HookimplMarker(PROJECT)
"""The marker plugin authors decorate their hook implementations with."""


logger = structlog.get_logger("tcpstack.plugins")


class PluginHost:
    """Typed facade over one pluggy PluginManager.

    :param builtin: module names of the application's built-in plugins, registered first and
        by module name (pytest's ``default_plugins``); the framework itself ships none.
    :param disabled: plugin names (built-in module names or entry-point names) to block.
    :param entry_points: load third-party plugins from the ``tcpstack`` entry-point group.
        Tests pass ``False`` so installed plugins cannot leak into the suite.
    :param extra: additional plugin objects to register (modules or instances), for tests and
        programs that compose a stack in Python.
    :raises ConfigError: if a disabled name matches no known plugin.
    """

    def __init__(
        self,
        *,
        builtin: Iterable[str] = (),
        disabled: Iterable[str] = (),
        entry_points: bool = True,
        extra: Iterable[object] = (),
    ) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.hookspec_modules: list[ModuleType] = []
        """Every module that declared hooks on this host, the stack's own first."""
        self.add_hookspecs(hookspecs)
        # Historic: each plugin that implements it is called as it registers, so its hookspecs
        # exist before check_pending() below looks for implementations without a spec.
        self.pm.hook.stack_addhooks.call_historic(kwargs={"host": self})
        disabled = list(disabled)
        for name in disabled:
            self.pm.set_blocked(name)
        self.builtin: tuple[str, ...] = tuple(builtin)
        for modname in self.builtin:
            if not self.pm.is_blocked(modname):
                self.pm.register(importlib.import_module(modname), name=modname)
        if entry_points:
            self.pm.load_setuptools_entrypoints(PROJECT)
        extra = list(extra)
        for plugin in extra:
            self.pm.register(plugin)
        # set_blocked() records a blocked name with plugin None: those names are not evidence.
        known = set(self.builtin) | {name for name, p in self.pm.list_name_plugin() if p is not None}
        known |= {self.pm.get_canonical_name(plugin) for plugin in extra}
        known |= {dist_name for _, dist in self.pm.list_plugin_distinfo() for dist_name in [dist.project_name]}
        if entry_points:
            known |= _entry_point_names()
        unknown = [n for n in disabled if n not in known]
        if unknown:
            try:  # what the plugins registered tells what a misplaced name probably meant
                registry: Registry | None = self._build_registry()
            except Exception:
                registry = None
            raise ConfigError(
                [
                    f"plugins.disable: no plugin named {n!r}{_disable_hint(n, known, self.builtin, registry)}"
                    for n in unknown
                ]
            )
        try:
            self.pm.check_pending()  # a hookimpl without a spec is an error, not a silent no-op
        except pluggy.PluginValidationError as exc:
            if not disabled:
                raise
            # A layer's hooks exist only while the layer's plugin is registered.
            names = ", ".join(disabled)
            raise ConfigError(
                [
                    f"plugins.disable: {exc}: the plugin that declares that hook may be disabled ({names}); "
                    "disable the plugins that implement it too"
                ]
            ) from None
        if os.environ.get("TCPSTACK_TRACE_PLUGINS"):
            self.pm.add_hookcall_monitoring(_before_hook, _after_hook)
        self.registry = self._build_registry()
        self.registry.disabled = disabled

    def _build_registry(self) -> Registry:
        registry = Registry()
        # Call each implementation on its own so a clash names the plugin responsible.
        for impl in reversed(self.pm.hook.stack_register.get_hookimpls()):
            registry._current_plugin = _plugin_label(impl.plugin_name, impl.plugin)
            try:
                impl.function(registry=registry)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"plugin {registry._current_plugin!r} failed in stack_register: {exc}") from exc
        registry._current_plugin = "?"
        return registry

    def add_hookspecs(self, module: ModuleType) -> None:
        """Declare the hooks of *module* (functions marked with ``hookspec``); a layer calls
        this from its ``stack_addhooks`` implementation. Adding a module twice is harmless."""
        if module in self.hookspec_modules:
            return
        self.pm.add_hookspecs(module)
        self.hookspec_modules.append(module)

    def hook_names(self) -> dict[str, ModuleType]:
        """Every declared hook, by name, with the module that declares it (for docs and tests)."""
        out: dict[str, ModuleType] = {}
        for module in self.hookspec_modules:
            for name in dir(module):
                if getattr(getattr(module, name), f"{PROJECT}_spec", None) is not None:
                    out.setdefault(name, module)
        return out

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register one more plugin object (e.g. a class instance defined in a test).

        :raises pluggy.PluginValidationError: for a hookimpl that matches no hook.
        :raises PluginError: if its registrations clash with another plugin's.

        A plugin that fails is unregistered again, so the host stays usable.
        """
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
            registry = self._build_registry()
        except BaseException:
            self.pm.unregister(plugin)
            raise
        self.registry = registry

    def plugin_names(self) -> list[str]:
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is not None)

    def stack_configured(self, stack: Stack) -> None:
        self.pm.hook.stack_configured.call_historic(kwargs={"stack": stack})

    def stack_closed(self, stack: Stack) -> None:
        self.pm.hook.stack_closed(stack=stack)


def _plugin_label(name: str, plugin: object) -> str:
    """A name for messages: pluggy names an unnamed plugin object by its ``id()``, so use its
    class instead."""
    if name == str(id(plugin)):
        cls = type(plugin)
        return f"{cls.__module__}.{cls.__qualname__}"
    return name


def _entry_point_names() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group=PROJECT)}


def _before_hook(hook_name: str, hook_impls: Any, kwargs: Any) -> None:
    logger.debug("plugin.hook_call", hook=hook_name, impls=[i.plugin_name for i in hook_impls])


def _after_hook(outcome: Any, hook_name: str, hook_impls: Any, kwargs: Any) -> None:
    logger.debug("plugin.hook_done", hook=hook_name)


def _disable_hint(name: str, known: set[str], builtin: tuple[str, ...], registry: Registry | None) -> str:
    """Why a name in ``[plugins] disable`` matched nothing, and what was probably meant."""
    for module in builtin:
        if module.rsplit(".", 1)[-1] == name:
            hint = f" (built-in plugins are named by module: {module!r}"
            for table in registry.kinds.values() if registry is not None else ():
                if table.kind.turn_off and name in table:
                    hint += "; " + table.kind.turn_off.format(name=name)
                    break
            return hint + ")"
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


if not TYPE_CHECKING:  # (so that mypy still reports unknown names)
    # Names that moved to the application package fail with an ImportError naming their new module.
    __getattr__ = _moved_getattr("framework.plugins")
