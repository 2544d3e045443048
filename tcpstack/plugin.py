"""The one import a third-party plugin needs: ``from tcpstack.plugin import ...``.

Everything a plugin package uses to extend tcpstack is re-exported here, and these names stay
stable whatever moves inside the stack's own packages (``framework``, ``layers``, ``plugins``):

- the hook marker :data:`hookimpl`, the :class:`Registry` that ``stack_register`` receives and
  the helpers that register into TCP's kinds of extension (:func:`add_feature`,
  :func:`add_congestion_control`) or read them (:func:`features`, :func:`congestion_controls`);
- what ``tcp_connection_setup`` fills in: :class:`TcpSetup` (with :class:`ConnInfo` and
  :class:`TcpOptions`), and the policy slots, each with a Protocol type and a base class:
  :class:`AckPolicy`, :class:`SendPolicy`, :class:`Extension`, :class:`CongestionControl`
  (plus the HyStart-style :class:`SlowStartProtocol`, and for an algorithm on a timer of its own
  :class:`TimerPolicy`, :class:`KeepAlivePolicy` and :class:`LossDetector`; the probe's
  :class:`ConnectionProbe`);
- what an extension sees of its connection: :class:`ConnectionView` (read-only fields and the
  verbs ``request_ack()``, ``set_send_mss()``, ``sample_rtt()``, ...), :class:`TcpState`, the
  segment :class:`TcpRepr` and its flag constants, sequence-number arithmetic;
- :func:`decision_log` for debug-level ``tcp.decision`` events, :class:`PluginError` for
  clashes, :class:`SynCookieCodec` for an option that must survive SYN cookies;
- the built-in :class:`DelayedAck` policy and its :class:`DelayedAckSettings`, meant to be
  extended (``examples/tcpstack-example-quickack`` subclasses them).

Feature settings are plain dataclasses (``dataclasses.field(metadata={"min": ..., "max": ...,
"check": ...})`` for bounds); read them typed in ``tcp_connection_setup`` with
:meth:`TcpSetup.feature`. docs/writing-plugins.md walks through a plugin package.
"""

from __future__ import annotations

from framework.errors import PluginError
from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.congestion import CongestionControl, CongestionControlProtocol, initial_window
from layers.tcp.extensions import add_congestion_control, add_feature, congestion_controls, features
from layers.tcp.policy import (
    AckPolicy,
    AckPolicyProtocol,
    ConnectionProbe,
    ConnInfo,
    DecisionLog,
    Extension,
    ExtensionProtocol,
    KeepAlivePolicy,
    LossDetector,
    SendPolicy,
    SendPolicyProtocol,
    SlowStartProtocol,
    TcpOptions,
    TcpSetup,
    TimerPolicy,
    decision_log,
)
from layers.tcp.seq import MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_in, seq_le, seq_lt
from layers.tcp.state import TcpState
from layers.tcp.syncookies import SynCookieCodec
from layers.tcp.view import ConnectionView, ReceiveQueueView, RttView
from layers.tcp.wire import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpRepr
from plugins.delayed_ack import DelayedAck, DelayedAckSettings

__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "FIN",
    "MASK",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "AckPolicy",
    "AckPolicyProtocol",
    "CongestionControl",
    "CongestionControlProtocol",
    "ConnInfo",
    "ConnectionProbe",
    "ConnectionView",
    "DecisionLog",
    "DelayedAck",
    "DelayedAckSettings",
    "Extension",
    "ExtensionProtocol",
    "KeepAlivePolicy",
    "LossDetector",
    "PluginError",
    "ReceiveQueueView",
    "Registry",
    "RttView",
    "SendPolicy",
    "SendPolicyProtocol",
    "SlowStartProtocol",
    "SynCookieCodec",
    "TcpOptions",
    "TcpRepr",
    "TcpSetup",
    "TcpState",
    "TimerPolicy",
    "add_congestion_control",
    "add_feature",
    "congestion_controls",
    "decision_log",
    "features",
    "hookimpl",
    "initial_window",
    "seq_add",
    "seq_diff",
    "seq_ge",
    "seq_gt",
    "seq_in",
    "seq_le",
    "seq_lt",
]
