"""The user-facing API: asyncio streams over the stack's TCP."""
