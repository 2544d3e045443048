"""The I/O edge: TUN device, in-memory links and the asyncio driver."""
