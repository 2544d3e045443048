"""``tcpstack up`` with a scripted fault rule, for the interop tests (run inside a namespace).

    python rulestack.py NTH ARGS...     drop our NTH outbound data segment and its first
                                        retransmission, then run ``tcpstack up ARGS``

The configuration (given in ARGS) must have a ``fault`` layer; the rule is added to it when the
stack is built (:meth:`layers.middleware.fault.FaultInjector.add_rule`), so which segments are
dropped does not depend on timing: the NTH IPv4/TCP datagram we send with a payload, and the next
one carrying the same sequence number.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tcpstack.cli as cli
import tcpstack.embed as embed
from layers.middleware.fault import FaultInjector


def lost_twice(nth: int) -> Any:
    """A match for the NTH data segment and then for its first retransmission."""
    state = {"seen": 0, "seq": -1, "hits": 0}

    def match(datagram: bytes) -> bool:
        ihl = (datagram[0] & 15) * 4
        if len(datagram) < ihl + 20 or datagram[9] != 6:
            return False
        thl = (datagram[ihl + 12] >> 4) * 4
        if len(datagram) <= ihl + thl:
            return False  # no payload
        seq = int.from_bytes(datagram[ihl + 4 : ihl + 8], "big")
        if state["hits"] == 0:
            state["seen"] += 1
            if state["seen"] == nth:
                state["seq"], state["hits"] = seq, 1
                return True
            return False
        if state["hits"] == 1 and seq == state["seq"]:
            state["hits"] = 2
            return True
        return False

    return match


def main() -> int:
    nth = int(sys.argv[1])
    build = embed.build_stack

    def build_with_rule(config: Any) -> Any:
        stack = build(config)
        fault = stack.layer("fault")
        assert isinstance(fault, FaultInjector)
        fault.add_rule("drop", direction="out", match=lost_twice(nth), count=2)
        return stack

    embed.build_stack = build_with_rule  # type: ignore[assignment]
    return cli.main(["up", *sys.argv[2:]])


if __name__ == "__main__":
    sys.exit(main())
