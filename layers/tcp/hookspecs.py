"""Hook specifications of the TCP layer, added to a plugin host by the layer itself
(``stack_addhooks`` in :mod:`layers.tcp.handler`, as pytest plugins add theirs with
``pytest_addhooks``).

Like the stack's hooks (:mod:`framework.hookspecs`), these fire per connection at most, never
per segment. Every hook here has a section in ``docs/hooks.md``;
``tests/framework/test_hooks_documented.py`` fails otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.hookspecs import hookspec

if TYPE_CHECKING:
    from layers.tcp.policy import TcpSetup


# -------------------------------------------------------------------- connection hooks


@hookspec
def tcp_connection_setup(setup: TcpSetup) -> None:
    """Install per-connection policies before the connection's first segment is built.

    :param setup: ``setup.features`` maps each feature enabled on this connection to its
        validated settings object (stack defaults merged with listener and connection
        overrides). Install plain policy objects: assign ``setup.ack_policy``,
        ``setup.send_policy`` or ``setup.congestion``, or append to ``setup.extensions``.
        Call ``setup.claim(slot, by=NAME)`` first so two plugins cannot silently fight over
        one slot (a second claimant raises :class:`~framework.errors.PluginError`).

    Called once for every active open and for every SYN a listener accepts. Never per
    segment: the objects installed here are what the segment path calls. Also called on a
    *trial* setup (``setup.trial`` true, port 0 on both ends) when a configuration is checked
    and when an API call names features or an algorithm, so that clashing plugins
    (``PluginError``) are reported before any connection exists; keep no state for a trial.
    """
