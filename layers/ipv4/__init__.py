"""IPv4 (RFC 791, RFC 1122 §3.2-3.3) with ICMP (RFC 792) and reassembly."""
