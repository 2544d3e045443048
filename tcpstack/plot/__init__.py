"""``tcpstack plot``: graphs of TCP connections from a capture and a probe file.

capture.py reads pcap/pcapng files into per-connection segment arrays, probe.py reads probe files,
analysis.py computes each graph's series, draw.py draws them with matplotlib, page.py writes the
HTML page and command.py is the command (docs/observability.md, "Graphs").
"""
