"""Parallel kernel-side flows for bench/run.py's 1 vs 2 workers figure; runs inside a namespace.

    flows.py send HOST PORT FLOWS SECONDS   FLOWS connections (one process each) send to a
                                            discard server for SECONDS
    flows.py recv HOST PORT FLOWS SECONDS   FLOWS connections each ask "GET /bytes/N" (N larger
                                            than can move) and read for SECONDS

Every flow connects first; then all start together and count the bytes moved in the same
SECONDS: for ``send`` what the peer acknowledged (bytes handed to the kernel minus what is still
in the socket's send queue, ``SIOCOUTQ``), for ``recv`` what arrived. A receiving flow sets
``SO_RCVLOWAT`` to half a read (32 KiB), so it wakes once per 32 KiB instead of once per
segment or two: on a 2-core machine the measuring processes share the cores with the workers
they measure, and this cut their CPU per MB received from about 2.3 to 0.6-1.0 ms (the sending
flows spend 0.6-0.9). Prints one JSON object:
``{"bytes": total, "per_flow": [...], "seconds": SECONDS}``. The connections are then reset
(SO_LINGER 0), so the servers see the end at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import sys
import termios
import time

CHUNK = 1 << 16
PAYLOAD = bytes(range(256)) * (CHUNK // 256)
ENDLESS = 1 << 40  # "GET /bytes/N": more than any run moves


def _unacked(s: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def flow(kind: str, host: str, port: int, start: float, seconds: float) -> int:
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if kind == "recv":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, CHUNK // 2)  # poll() honours it too
        s.sendall(f"GET /bytes/{ENDLESS} HTTP/1.0\r\n\r\n".encode())
    time.sleep(max(0.0, start - time.time()))
    end = start + seconds
    moved = 0
    s.settimeout(0.2)
    buf = bytearray(CHUNK)
    while time.time() < end:
        try:
            if kind == "send":
                moved += s.send(PAYLOAD)
            else:
                n = s.recv_into(buf)
                if not n:
                    break
                moved += n
        except TimeoutError:
            continue
    if kind == "send":
        moved -= _unacked(s)
    s.close()
    return moved


def main() -> int:
    kind, host, port, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    if kind not in ("send", "recv"):
        print(__doc__, file=sys.stderr)
        return 2
    start = time.time() + 1.0  # every flow connected by then
    children: list[tuple[int, int]] = []
    for _ in range(count):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                n = flow(kind, host, port, start, seconds)
            except OSError:
                n = -1
            os.write(w, str(n).encode())
            os._exit(0)
        os.close(w)
        children.append((pid, r))
    per_flow = []
    for pid, r in children:
        with os.fdopen(r, "rb") as f:
            per_flow.append(int(f.read() or b"-1"))
        os.waitpid(pid, 0)
    print(json.dumps({"bytes": sum(n for n in per_flow if n > 0), "per_flow": per_flow, "seconds": seconds}))
    return 0 if all(n > 0 for n in per_flow) else 1


if __name__ == "__main__":
    sys.exit(main())
