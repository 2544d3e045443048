"""Built-in per-connection plugins (RFC 1122/7414 behaviours). Filled in by later work."""
