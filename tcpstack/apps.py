"""``tcpstack up --app [HOST:]PORT=MODULE:CALLABLE`` and ``--app-protocol [HOST:]PORT=MODULE:FACTORY``:
serve a user's code, found by import path (as ``uvicorn module:app`` finds an application).

``--app`` names a streams handler, called as ``await handler(reader, writer)`` per connection
(what :meth:`~tcpstack.streams.StackApi.start_server` takes); ``--app-protocol`` names an
asyncio protocol factory, called once per connection (what
:meth:`~tcpstack.streams.StackApi.create_server` takes). ``CALLABLE`` may be a dotted path into the
module (``module:App.handler``). The current directory is searched first, as ``python -m`` does.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class AppError(ValueError):
    """A bad ``--app`` specification, or code that cannot be loaded from it (one line, with why)."""

    def __init__(self, message: str, *, usage: bool = True) -> None:
        super().__init__(message)
        self.usage = usage
        """True for a mistake in the command line; False when importing the module raised."""


@dataclass(frozen=True)
class AppSpec:
    option: str  # "--app" or "--app-protocol"
    spec: str
    host: str | None
    port: int
    module: str
    attribute: str

    @property
    def label(self) -> str:
        return f"{self.module}:{self.attribute}@{self.port}"


def parse_app(spec: str, option: str = "--app") -> AppSpec:
    """``"8080=myapp:handle"`` or ``"10.0.0.2:8080=pkg.mod:Factory"`` to an :class:`AppSpec`.

    :raises AppError: saying what is wrong and what was expected.
    """
    where, eq, target = spec.partition("=")
    expected = "[HOST:]PORT=MODULE:CALLABLE"
    if not eq:
        raise AppError(f"{option} {spec!r}: expected {expected}, e.g. 8080=myapp:handle")
    host: str | None = None
    port_s = where
    if ":" in where:
        host, _, port_s = where.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise AppError(f"{option} {spec!r}: HOST {host!r} is not an IPv4 address") from None
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise AppError(f"{option} {spec!r}: PORT must be 1-65535, got {port_s!r}")
    module, colon, attribute = target.partition(":")
    if not colon or not _DOTTED.match(module) or not _DOTTED.match(attribute):
        raise AppError(f"{option} {spec!r}: expected MODULE:CALLABLE after '=', like myapp:handle or pkg.mod:App.make")
    return AppSpec(option, spec, host, int(port_s), module, attribute)


def load_app(app: AppSpec) -> Callable[..., Any]:
    """Import the module and return the callable the specification names.

    :raises AppError: the module cannot be found or fails to import, the attribute is missing,
        or it is not callable.
    """
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the current directory first, as `python -m` has it
    try:
        module = importlib.import_module(app.module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (app.module == exc.name or app.module.startswith(exc.name + ".")):
            raise AppError(f"{app.option} {app.spec!r}: no module named {exc.name!r}") from None
        raise AppError(_import_failure(app, exc), usage=False) from None
    except Exception as exc:
        raise AppError(_import_failure(app, exc), usage=False) from None
    obj: Any = module
    for part in app.attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            missing = f"module {app.module!r} has no attribute {app.attribute!r}"
            raise AppError(f"{app.option} {app.spec!r}: {missing}") from None
    if not callable(obj):
        kind = type(obj).__name__
        raise AppError(f"{app.option} {app.spec!r}: {app.module}:{app.attribute} is a {kind}, not callable")
    return obj  # type: ignore[no-any-return]


def _import_failure(app: AppSpec, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{app.option} {app.spec!r}: importing {app.module!r} failed: {type(exc).__name__}: {exc}{where}"
