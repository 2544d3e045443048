"""Kernel-side load generator for bench/run.py; runs inside a namespace with plain sockets.

    peer.py send HOST PORT BYTES [CC] connect, send BYTES, shut down, wait for the server to close
                                      (CC: the kernel's congestion control for it, e.g. cubic)
    peer.py recv HOST PORT BYTES      connect, send "GET /bytes/BYTES", read the whole response
    peer.py conns HOST PORT COUNT     COUNT sequential connect + close (waits for the server's FIN)
    peer.py post HOST PORT BYTES [CC] POST BYTES to an HTTP server that answers the body's SHA-256
    peer.py get HOST PORT BYTES       download "GET /bytes/BYTES" and hash it
    peer.py sendsha HOST PORT BYTES   as send, with random bytes; prints the seconds and their SHA-256
    peer.py sink PORT                 a kernel server: discard what arrives, close at EOF
    peer.py source PORT               a kernel HTTP-ish server answering "GET /bytes/N" with N bytes

Prints one number: seconds taken by the measured part (servers print nothing); ``post`` and
``get`` print the seconds and the SHA-256 of what the server received or of what arrived.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time

CHUNK = 1 << 16
PAYLOAD = bytes(range(256)) * (CHUNK // 256)


def send(host: str, port: int, total: int, cc: str | None = None) -> float:
    s = socket.socket()
    if cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    s.connect((host, port))
    t0 = time.perf_counter()
    left = total
    while left:
        n = s.send(PAYLOAD[: min(left, CHUNK)])
        left -= n
    s.shutdown(socket.SHUT_WR)
    while s.recv(CHUNK):
        pass
    dt = time.perf_counter() - t0
    s.close()
    return dt


def sendsha(host: str, port: int, total: int) -> tuple[float, str]:
    """Send *total* random bytes (then FIN, wait for the server's); the seconds and their SHA-256."""
    data = os.urandom(total)
    s = socket.create_connection((host, port))
    t0 = time.perf_counter()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    while s.recv(CHUNK):
        pass
    dt = time.perf_counter() - t0
    s.close()
    return dt, hashlib.sha256(data).hexdigest()


def recv(host: str, port: int, total: int) -> float:
    s = socket.create_connection((host, port))
    t0 = time.perf_counter()
    s.sendall(f"GET /bytes/{total} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    got = 0
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        got += len(data)
    dt = time.perf_counter() - t0
    s.close()
    if got < total:
        raise SystemExit(f"short read: {got} < {total}")
    return dt


def post(host: str, port: int, total: int, cc: str | None = None) -> tuple[float, str, str]:
    """POST *total* bytes; return the seconds, the SHA-256 sent and the one the server answered."""
    s = socket.socket()
    if cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    sent = hashlib.sha256()
    s.connect((host, port))
    t0 = time.perf_counter()
    s.sendall(f"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n".encode())
    left = total
    while left:
        chunk = PAYLOAD[: min(left, CHUNK)]
        n = s.send(chunk)
        sent.update(chunk[:n])
        left -= n
    reply = b""
    while True:
        data = s.recv(4096)
        if not data:
            break
        reply += data
    dt = time.perf_counter() - t0
    s.close()
    return dt, sent.hexdigest(), reply.rsplit(b"\r\n\r\n", 1)[-1].strip().decode()


def get(host: str, port: int, total: int) -> tuple[float, str]:
    """GET /bytes/*total*; return the seconds and the SHA-256 of the body."""
    s = socket.create_connection((host, port))
    t0 = time.perf_counter()
    s.sendall(f"GET /bytes/{total} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = s.recv(1 << 16)
        if not data:
            break
        head += data
    body = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
    h = hashlib.sha256(body)
    got = len(body)
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        h.update(data)
        got += len(data)
    dt = time.perf_counter() - t0
    s.close()
    return dt, h.hexdigest() if got == total else f"short:{got}"


def conns(host: str, port: int, count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        s = socket.create_connection((host, port))
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the server's FIN
        s.close()
    return time.perf_counter() - t0


def _serve(port: int, handler: object) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(128)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()  # type: ignore[arg-type]


def _sink(c: socket.socket) -> None:
    while c.recv(1 << 20):
        pass
    c.close()


def _source(c: socket.socket) -> None:
    req = b""
    while b"\r\n\r\n" not in req:
        data = c.recv(4096)
        if not data:
            c.close()
            return
        req += data
    n = int(req.split(b" ")[1].rsplit(b"/", 1)[1])
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
    while n:
        k = c.send(PAYLOAD[: min(n, CHUNK)])
        n -= k
    c.shutdown(socket.SHUT_WR)
    while c.recv(4096):
        pass
    c.close()


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "sink":
        _serve(int(sys.argv[2]), _sink)
    elif cmd == "source":
        _serve(int(sys.argv[2]), _source)
    else:
        host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        if cmd == "post":
            dt, mine, theirs = post(host, port, n, sys.argv[5] if len(sys.argv) > 5 else None)
            print(f"{dt:.6f} {mine} {theirs}")
            return
        if cmd == "sendsha":
            dt, digest = sendsha(host, port, n)
            print(f"{dt:.6f} {digest}")
            return
        if cmd == "get":
            dt, digest = get(host, port, n)
            print(f"{dt:.6f} {digest}")
            return
        if cmd == "send":
            print(f"{send(host, port, n, sys.argv[5] if len(sys.argv) > 5 else None):.6f}")
            return
        fn = {"recv": recv, "conns": conns}[cmd]
        print(f"{fn(host, port, n):.6f}")


if __name__ == "__main__":
    main()
