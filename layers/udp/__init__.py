"""UDP (RFC 768, RFC 1122 §4.1): the wire format, endpoints and the layer's plugin."""
