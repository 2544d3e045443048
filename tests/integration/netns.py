"""Re-export of :mod:`tcpstack.netns` for the integration tests."""

from tcpstack.netns import KERNEL_ADDR, PREFIX, STACK_ADDR, Netns, missing_capability

__all__ = ["KERNEL_ADDR", "PREFIX", "STACK_ADDR", "Netns", "missing_capability"]
