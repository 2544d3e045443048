"""Link layers: raw-IP framing over a TUN device or an in-memory link."""
