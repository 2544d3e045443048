"""Re-export of :mod:`framework.netns` for the integration tests."""

from framework.netns import KERNEL_ADDR, PREFIX, STACK_ADDR, Netns, missing_capability

__all__ = ["KERNEL_ADDR", "PREFIX", "STACK_ADDR", "Netns", "missing_capability"]
