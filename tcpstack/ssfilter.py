"""The filters of ``tcpstack ss``, in the language of iproute2's ``ss`` (``ss(8)``, misc/ssfilter.y),
and the connection IDs that ``ss``, ``probe`` and ``plot`` share.

A filter is ``[ state STATE | exclude STATE ]... [ EXPRESSION ]``:

- ``state NAME`` keeps sockets in that state (repeatable: the states add up); ``exclude NAME``
  drops them. Names as ``ss`` takes them: ``established``, ``syn-sent``, ``syn-recv``
  (``syn-rcv``), ``fin-wait-1``, ``fin-wait-2``, ``time-wait``, ``closed`` (``close``,
  ``unconnected``), ``close-wait``, ``last-ack``, ``listening`` (``listen``), ``closing``, and
  the groups ``all``, ``connected`` (all but listening and closed), ``synchronized`` (connected
  but syn-sent), ``bucket`` (syn-recv and time-wait) and ``big`` (all but bucket).
- An expression of conditions: ``sport OP PORT``, ``dport OP PORT`` with ``OP`` one of ``=``
  (``==``, ``eq``, or nothing), ``!=`` (``ne``, ``neq``), ``<`` (``lt``), ``>`` (``gt``), ``<=``
  (``le``, ``leq``), ``>=`` (``ge``, ``geq``) and ``PORT`` as ``:80``, ``80`` or a service name
  (``:http``); ``src HOST`` and ``dst HOST`` (``=`` optional; ``!=`` negates) with ``HOST`` an
  address, a prefix, either with ``:PORT``, or ``*`` (``10.0.0.1``, ``10.0.0.0/24``,
  ``10.0.0.1:4000``, ``[fd00::1]:80``, ``*:80``). Conditions combine with ``and`` (``&``, ``&&``,
  or nothing between them), ``or`` (``|``, ``||``), ``not`` (``!``) and parentheses. As in
  ``ss``'s grammar, ``and`` and ``or`` have the same precedence and group from the left
  (``a or b and c`` is ``(a or b) and c``); ``not`` takes the condition or parenthesis after it.

A listener's local address is ``*`` (any), which compares as ``0.0.0.0`` the way ``ss`` sees a
socket bound to INADDR_ANY, and its remote end is ``0.0.0.0:0``. Host names are not resolved
(the stack has none to ask). Anything else is a :class:`FilterError` with the reason.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]


class FilterError(ValueError):
    """A filter or connection ID that cannot be parsed (the message says why)."""


# RFC 9293 state names (the rows' "state") by ss's name for them.
_STATES = {
    "established": "ESTABLISHED",
    "syn-sent": "SYN-SENT",
    "syn-recv": "SYN-RECEIVED",
    "syn-rcv": "SYN-RECEIVED",
    "fin-wait-1": "FIN-WAIT-1",
    "fin-wait-2": "FIN-WAIT-2",
    "time-wait": "TIME-WAIT",
    "closed": "CLOSED",
    "close": "CLOSED",
    "unconnected": "CLOSED",
    "close-wait": "CLOSE-WAIT",
    "last-ack": "LAST-ACK",
    "listening": "LISTEN",
    "listen": "LISTEN",
    "closing": "CLOSING",
}
ALL_STATES = frozenset(_STATES.values())
_GROUPS = {
    "all": ALL_STATES,
    "connected": ALL_STATES - {"CLOSED", "LISTEN"},
    "synchronized": ALL_STATES - {"CLOSED", "LISTEN", "SYN-SENT"},
    "bucket": frozenset({"SYN-RECEIVED", "TIME-WAIT"}),
    "big": ALL_STATES - {"SYN-RECEIVED", "TIME-WAIT"},
}

_EQ = {"=", "==", "eq"}
_NE = {"!=", "ne", "neq"}
_OPS: dict[str, Callable[[int, int], bool]] = {
    **dict.fromkeys(_EQ, lambda a, b: a == b),
    **dict.fromkeys(_NE, lambda a, b: a != b),
    **dict.fromkeys(("<", "lt"), lambda a, b: a < b),
    **dict.fromkeys((">", "gt"), lambda a, b: a > b),
    **dict.fromkeys(("<=", "le", "leq"), lambda a, b: a <= b),
    **dict.fromkeys((">=", "ge", "geq"), lambda a, b: a >= b),
}
_AND = {"and", "&", "&&"}
_OR = {"or", "|", "||"}
_NOT = {"not", "!"}
_KEYWORDS = {"src", "dst", "sport", "dport", "(", ")", *_AND, *_OR, *_NOT, *_OPS}
_ANY4 = ipaddress.IPv4Address(0)


def state_set(name: str) -> frozenset[str]:
    """The RFC 9293 state names an ``ss`` state name or group stands for."""
    key = name.lower()
    if key in _GROUPS:
        return _GROUPS[key]
    if key in _STATES:
        return frozenset({_STATES[key]})
    known = ", ".join([*_GROUPS, *sorted(set(_STATES) - {"syn-rcv", "close", "unconnected", "listen"})])
    raise FilterError(f"unknown state {name!r} (known: {known})")


def parse_port(text: str) -> int:
    """``:80``, ``80``, ``:http`` or ``http`` (a service name from the local services database)."""
    body = text[1:] if text.startswith(":") else text
    if body.isdigit():
        port = int(body)
        if port > 65535:
            raise FilterError(f"port {text!r} is out of range (0-65535)")
        return port
    if body == "*":
        return 0
    if body and body.replace("-", "").isalnum():
        try:
            return socket.getservbyname(body, "tcp")
        except OSError:
            pass
    raise FilterError(f"bad port {text!r}: want :PORT, a number or a service name")


def parse_host(text: str) -> tuple[Network | None, int | None]:
    """``ADDR[/LEN][:PORT]``, ``[ADDR6[/LEN]][:PORT]``, ``*[:PORT]`` or ``:PORT`` -> (network or
    ``None`` for any address, port or ``None`` for any port)."""
    host, port = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise FilterError(f"bad address {text!r}: '[' without ']'")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise FilterError(f"bad address {text!r}: want [ADDRESS]:PORT")
            port = parse_port(rest)
    elif text.count(":") == 1:  # IPv4 (or *) with a port; a bare IPv6 address has several colons
        host, _, rest = text.partition(":")
        port = parse_port(":" + rest) if rest != "*" else None
    if host in ("", "*"):
        return None, port
    try:
        return ipaddress.ip_network(host, strict=False), port
    except ValueError:
        raise FilterError(
            f"bad address {text!r}: want ADDRESS[/PREFIX][:PORT] (no host names: the stack has no resolver)"
        ) from None


def parse_endpoint(text: str) -> tuple[Address, int]:
    """A row's ``local`` or ``remote`` (``10.0.0.2:80``, ``[fd00::2]:80``, ``*:80``, ``*:*``) as
    (address, port), ``*`` as ``0.0.0.0`` and port 0, as ``ss`` sees an unbound end."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    addr: Address = _ANY4 if host in ("*", "") else ipaddress.ip_address(host)
    return addr, int(port) if port.isdigit() else 0


@dataclass(frozen=True, slots=True)
class SsFilter:
    """A parsed filter: the states to keep (``None``: all) and the expression (``None``: all)."""

    states: frozenset[str] | None = None
    expression: Predicate | None = None
    text: str = ""

    def __call__(self, row: Row) -> bool:
        if self.states is not None and row.get("state") not in self.states:
            return False
        if self.expression is None:
            return True
        try:
            return self.expression(row)
        except (ValueError, KeyError):  # a row without addresses (a worker that did not answer)
            return False

    def apply(self, rows: Sequence[Row]) -> list[Row]:
        return [row for row in rows if self(row)]


def tokens_of(args: Sequence[str]) -> list[str]:
    """The words of the filter: its arguments split at blanks (``'sport = :80'`` may be one
    argument, as ``ss`` takes it), parentheses split off the words they touch."""
    out: list[str] = []
    for word in " ".join(args).split():
        while word.startswith("(") and len(word) > 1:
            out.append("(")
            word = word[1:]
        tail = 0
        while word.endswith(")") and len(word) > 1:
            tail += 1
            word = word[:-1]
        out.append(word)
        out.extend(")" * tail)
    return out


def parse_filter(args: Sequence[str]) -> SsFilter:
    """Parse ``[state|exclude NAME]... [EXPRESSION]`` (the module docstring has the language)."""
    toks = tokens_of(args)
    states: set[str] | None = None
    i = 0
    while i < len(toks) and toks[i] in ("state", "exclude", "excl"):
        if i + 1 >= len(toks):
            raise FilterError(f"{toks[i]!r} needs a state name")
        chosen = state_set(toks[i + 1])
        if toks[i] == "state":
            states = (set() if states is None else states) | chosen
        else:
            states = (set(ALL_STATES) if states is None else states) - chosen
        i += 2
    expression = _Parser(toks[i:]).parse() if i < len(toks) else None
    return SsFilter(frozenset(states) if states is not None else None, expression, " ".join(args))


class _Parser:
    """Recursive descent over ss's grammar (misc/ssfilter.y): ``exprlist := expr ((and|or)? expr)*``,
    left to right; ``expr := ( exprlist ) | not expr | src/dst [=] HOST | sport/dport [OP] PORT``."""

    def __init__(self, toks: list[str]) -> None:
        self.toks = toks
        self.pos = 0

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self, what: str) -> str:
        tok = self.peek()
        if tok is None:
            raise FilterError(f"the filter ends where {what} should follow")
        self.pos += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.exprlist()
        tok = self.peek()
        if tok is not None:
            raise FilterError("')' without '('" if tok == ")" else f"unexpected {tok!r} in the filter")
        return pred

    def exprlist(self) -> Predicate:
        pred = self.expr()
        while (tok := self.peek()) is not None and tok != ")":
            if tok in _OR:
                self.pos += 1
                left, right = pred, self.expr()
                pred = _or(left, right)
            else:
                if tok in _AND:
                    self.pos += 1
                left, right = pred, self.expr()
                pred = _and(left, right)
        return pred

    def expr(self) -> Predicate:
        tok = self.take("a condition")
        if tok == "(":
            inner = self.exprlist()
            if self.take("')'") != ")":  # (exprlist stops only at ')' or the end)
                raise FilterError("'(' without ')'")
            return inner
        if tok in _NOT:
            return _not(self.expr())
        if tok in ("src", "dst"):
            side = "local" if tok == "src" else "remote"
            negate = False
            if self.peek() in _EQ:
                self.pos += 1
            elif self.peek() in _NE:
                self.pos += 1
                negate = True
            arg = self.take(f"an address after {tok!r}")
            if arg in _KEYWORDS:
                raise FilterError(f"{tok!r} needs an address, not {arg!r}")
            net, port = parse_host(arg)
            pred = _host(side, net, port)
            return _not(pred) if negate else pred
        if tok in ("sport", "dport"):
            side = "local" if tok == "sport" else "remote"
            op = "="
            if self.peek() in _OPS:
                op = self.take("an operator")
            arg = self.take(f"a port after {tok!r}")
            if arg in _KEYWORDS:
                raise FilterError(f"{tok!r} needs a port, not {arg!r}")
            return _port(side, _OPS[op], parse_port(arg))
        if tok == ")":
            raise FilterError("')' without '('")
        raise FilterError(
            f"unexpected {tok!r} in the filter (conditions: src, dst, sport, dport; with and, or, not, parentheses)"
        )


def _and(a: Predicate, b: Predicate) -> Predicate:
    return lambda row: a(row) and b(row)


def _or(a: Predicate, b: Predicate) -> Predicate:
    return lambda row: a(row) or b(row)


def _not(a: Predicate) -> Predicate:
    return lambda row: not a(row)


def _host(side: str, net: Network | None, port: int | None) -> Predicate:
    def match(row: Row) -> bool:
        addr, p = parse_endpoint(row[side])
        if net is not None and (addr.version != net.version or addr not in net):
            return False
        return port is None or p == port

    return match


def _port(side: str, op: Callable[[int, int], bool], port: int) -> Predicate:
    return lambda row: op(parse_endpoint(row[side])[1], port)


# ---------------------------------------------------------------------------------- connection IDs


@dataclass(frozen=True, slots=True)
class ConnId:
    """A connection ID as ``ss``, ``probe`` and ``plot`` take it: the connection's number
    (``ConnInfo.number``, shown by ``ss`` as ``id:N``), or the socket pair ``LOCAL-REMOTE``
    (``10.0.0.2:80-10.0.0.1:4000``, IPv6 in brackets: ``[fd00::2]:80-[fd00::1]:4000``)."""

    number: int | None = None
    local: tuple[Address, int] | None = None
    remote: tuple[Address, int] | None = None

    def matches(self, row: Row) -> bool:
        if self.number is not None:
            return row.get("id") == self.number
        try:
            return parse_endpoint(row["local"]) == self.local and parse_endpoint(row["remote"]) == self.remote
        except (KeyError, ValueError):
            return False


def parse_conn_id(text: str) -> ConnId:
    """``N`` or ``LOCAL-REMOTE``; :class:`FilterError` with the reason otherwise."""
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise FilterError(f"connection ID {text!r}: numbers start at 1")
        return ConnId(number=int(text))
    ends = text.split("-")
    if len(ends) != 2:
        raise FilterError(f"connection ID {text!r}: want a number or LOCAL-REMOTE, like 10.0.0.2:80-10.0.0.1:4000")
    parsed: list[tuple[Address, int]] = []
    for end in ends:
        host, sep, port = end.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        if bracketed:
            host = host[1:-1]
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise FilterError(f"connection ID {text!r}: {end!r} is not ADDRESS:PORT") from None
        if addr.version == 6 and not bracketed:
            raise FilterError(f"connection ID {text!r}: write an IPv6 address in brackets, [{host}]:{port}")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise FilterError(f"connection ID {text!r}: {end!r} needs a port 1-65535")
        parsed.append((addr, int(port)))
    return ConnId(local=parsed[0], remote=parsed[1])
