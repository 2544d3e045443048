"""The kernel's side of the TCP interop tests: a small socket program run *inside* the test's
network namespace (``python kpeer.py client|many|server ...``), standard library only.

It prints exactly one JSON object (the outcome) on the last line of stdout; a ``server`` first
prints ``ready`` once it listens. Data is the deterministic stream :func:`stream` (seeded), so
the test can compute the SHA-256 it expects without shipping the bytes around.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

KERNEL_ADDR = "10.0.0.1"
STACK_ADDR = "10.0.0.2"
CHUNK = 1 << 20


def chunks(n: int, seed: int) -> Iterator[bytes]:
    """The first *n* bytes of stream *seed*, in 1 MiB chunks."""
    rng = random.Random(seed)
    left = n
    while left > 0:
        size = min(CHUNK, left)
        yield rng.randbytes(size)
        left -= size


def stream(n: int, seed: int) -> bytes:
    """The first *n* bytes of the pseudo-random stream *seed* (the same on both sides)."""
    return b"".join(chunks(n, seed))


def stream_sha256(n: int, seed: int) -> str:
    h = hashlib.sha256()
    for c in chunks(n, seed):
        h.update(c)
    return h.hexdigest()


TCP_FIN_WAIT2 = 5  # linux/tcp_states.h


def _tcp_state(sock: socket.socket) -> int:
    """The socket's state (tcpi_state, the first byte of struct tcp_info)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll *condition* every 10 ms for at most *timeout* seconds; whether it came true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _linger_abort(sock: socket.socket) -> None:
    """Close with SO_LINGER {on, 0}: the kernel sends RST instead of FIN (RFC 9293 §3.10.4 ABORT)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _send_all(sock: socket.socket, n: int, seed: int, shutdown: bool, result: dict[str, object]) -> None:
    h = hashlib.sha256()
    sent = 0
    try:
        for c in chunks(n, seed):
            sock.sendall(c)
            h.update(c)
            sent += len(c)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
            result["fin_sent_at"] = time.monotonic()
    except OSError as exc:
        result["send_error"] = _errname(exc)
    result["sent"] = sent
    result["sent_sha"] = h.hexdigest()


def _recv_all(
    sock: socket.socket,
    limit: int | None = None,
    *,
    save: BinaryIO | None = None,
    shutdown_after: int | None = None,
    result: dict[str, object] | None = None,
    notify_after: int | None = None,
) -> tuple[int, str, str | None, bytes]:
    """Read until EOF (or *limit* bytes); return count, SHA-256, error name, first 64 KiB.

    *save* receives every byte; after *shutdown_after* bytes the sending side is shut down.
    """
    h = hashlib.sha256()
    count = 0
    head = bytearray()
    try:
        while limit is None or count < limit:
            want = 1 << 16 if limit is None else min(1 << 16, limit - count)
            data = sock.recv(want)
            if not data:
                return count, h.hexdigest(), None, bytes(head)
            h.update(data)
            count += len(data)
            if save is not None:
                save.write(data)
            if notify_after is not None and count >= notify_after:
                notify_after = None
                print(f"received {count}", file=sys.stderr, flush=True)
            if shutdown_after is not None and count >= shutdown_after:
                shutdown_after = None
                sock.shutdown(socket.SHUT_WR)
                if result is not None:
                    result["fin_sent_after"] = count
            if len(head) < 1 << 16:
                head += data[: (1 << 16) - len(head)]
    except OSError as exc:
        return count, h.hexdigest(), _errname(exc), bytes(head)
    return count, h.hexdigest(), "limit", bytes(head)


# ---------------------------------------------------------------------- client


def cmd_client(a: argparse.Namespace) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(a.timeout)
    if a.bind_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((KERNEL_ADDR, a.bind_port))
    if a.at_ns:
        # Sleep until shortly before the wall-clock instant, then spin to it.
        while (left := a.at_ns - time.time_ns()) > 2_000_000:
            time.sleep((left - 1_000_000) / 1e9)
        while time.time_ns() < a.at_ns:
            pass
    out: dict[str, object] = {}
    out["connect_ns"] = time.time_ns()
    t0 = time.monotonic()
    try:
        sock.connect((a.host, a.port))
    except OSError as exc:
        out["error"] = _errname(exc)
        out["elapsed"] = time.monotonic() - t0
        sock.close()
        return out
    out["connected_in"] = time.monotonic() - t0
    out["local_port"] = sock.getsockname()[1]
    sender = threading.Thread(target=_send_all, args=(sock, a.send, a.seed, not a.no_shutdown, out))
    sender.start()
    if a.delay_read:
        sender.join()
        time.sleep(a.delay_read)
    if a.read_after_fin_acked:
        # Read nothing until the peer has acknowledged our FIN (and so every byte before it).
        sender.join()
        out["fin_acked"] = _wait(lambda: _tcp_state(sock) == TCP_FIN_WAIT2, a.timeout)
    if a.read_when:
        # Read nothing until the test says so (by creating the file).
        out["read_when"] = _wait(lambda: os.path.exists(a.read_when), a.timeout)
    if a.abort_after is not None:
        count, sha, err, head = _recv_all(sock, a.abort_after)
        sender.join()
        _linger_abort(sock)
        out.update(recv=count, recv_sha=sha, recv_error=None if err == "limit" else err, aborted=True)
        out["elapsed"] = time.monotonic() - t0
        return out
    save = open(a.save, "wb") if a.save else None
    try:
        count, sha, err, head = _recv_all(
            sock, save=save, shutdown_after=a.shutdown_after_recv, result=out, notify_after=a.notify_after
        )
    finally:
        if save is not None:
            save.close()
    out["eof_at"] = time.monotonic()
    sender.join()
    sock.close()
    out.update(recv=count, recv_sha=sha, recv_error=err, head=head.decode("latin-1"))
    out["elapsed"] = time.monotonic() - t0
    return out


# ---------------------------------------------------------------------- many


def _one_echo(i: int, a: argparse.Namespace, barrier: threading.Barrier | None, results: list[object]) -> None:
    seed = a.seed + i
    try:
        sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
    except OSError as exc:
        results[i] = f"connect: {_errname(exc)}"
        if barrier is not None:
            barrier.abort()
        return
    if a.abort_after is not None:
        # Read that much of what the server sends, then reset the connection.
        count, _, err, _ = _recv_all(sock, a.abort_after)
        _linger_abort(sock)
        results[i] = True if count == a.abort_after else f"read {count} bytes ({err})"
        return
    try:
        if barrier is not None:
            barrier.wait()  # every connection is established before any sends
        out: dict[str, object] = {}
        sender = threading.Thread(target=_send_all, args=(sock, a.size, seed, True, out))
        sender.start()
        count, sha, err, _ = _recv_all(sock)
        sender.join()
        expected = stream_sha256(a.size, seed)
        if err or out.get("send_error"):
            results[i] = f"error: recv {err} send {out.get('send_error')}"
        elif count != a.size or sha != expected:
            results[i] = f"mismatch: got {count} bytes"
        else:
            results[i] = True
    except (OSError, threading.BrokenBarrierError) as exc:
        results[i] = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()


def cmd_many(a: argparse.Namespace) -> dict[str, object]:
    results: list[object] = [None] * a.count
    t0 = time.monotonic()
    if a.concurrent:
        barrier = threading.Barrier(a.count, timeout=a.timeout)
        threads = [threading.Thread(target=_one_echo, args=(i, a, barrier, results)) for i in range(a.count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for i in range(a.count):
            _one_echo(i, a, None, results)
    failures = {i: r for i, r in enumerate(results) if r is not True}
    return {"ok": a.count - len(failures), "failures": failures, "elapsed": time.monotonic() - t0}


# ---------------------------------------------------------------------- server


def cmd_server(a: argparse.Namespace) -> dict[str, object]:
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((KERNEL_ADDR, a.port))
    lsock.listen(0 if a.mode == "full" else 8)
    lsock.settimeout(a.timeout)
    if a.mode == "full":
        # Fill the accept queue (backlog 0 holds one) and never accept: Linux then drops
        # every further SYN (LISTENOVERFLOWS), so a connecting peer hears nothing.
        filler = socket.create_connection((KERNEL_ADDR, a.port), timeout=5)
        print("ready", flush=True)
        time.sleep(a.timeout)
        filler.close()
        return {"mode": "full"}
    print("ready", flush=True)
    out: dict[str, object] = {}
    try:
        sock, peer = lsock.accept()
    except OSError as exc:
        return {"error": f"accept: {_errname(exc)}"}
    lsock.close()
    sock.settimeout(a.timeout)
    out["peer"] = list(peer)
    if a.mode == "echo":
        count = 0
        h = hashlib.sha256()
        try:
            while data := sock.recv(1 << 16):
                h.update(data)
                count += len(data)
                sock.sendall(data)
            out["eof"] = True
        except OSError as exc:
            out["error"] = _errname(exc)
        out.update(recv=count, recv_sha=h.hexdigest())
        sock.close()
    elif a.mode == "sha":
        # Read to EOF (the client's FIN), then answer with the digest and close.
        count, sha, err, _ = _recv_all(sock)
        out.update(recv=count, recv_sha=sha, recv_error=err, eof=err is None)
        if err is None:
            try:
                sock.sendall(f"{count} {sha}\n".encode())
            except OSError as exc:
                out["error"] = _errname(exc)
        sock.close()
    elif a.mode == "send":
        # Send the stream and shut down; meanwhile read until the client's FIN.
        sender = threading.Thread(target=_send_all, args=(sock, a.send, a.seed, True, out))
        sender.start()
        count, sha, err, _ = _recv_all(sock)
        sender.join()
        out.update(recv=count, recv_sha=sha, recv_error=err, eof=err is None)
        sock.close()
    elif a.mode == "abort":
        count, sha, err, _ = _recv_all(sock, a.abort_after)
        out.update(recv=count, recv_error=None if err == "limit" else err)
        _linger_abort(sock)
        out["aborted"] = True
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kpeer")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("--host", default=STACK_ADDR)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--send", type=int, default=0, help="bytes of the stream to send")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--no-shutdown", action="store_true", help="do not shut down the sending side after sending")
    c.add_argument("--delay-read", type=float, default=0.0, help="finish sending, wait, then start reading")
    c.add_argument("--read-after-fin-acked", action="store_true", help="finish sending, read once our FIN is ACKed")
    c.add_argument("--read-when", default=None, help="start reading once this file exists")
    c.add_argument("--abort-after", type=int, default=None, help="read this many bytes, then abort (RST)")
    c.add_argument("--shutdown-after-recv", type=int, default=None, help="shut down sending after this many bytes")
    c.add_argument("--save", default=None, help="write what arrives to this file")
    c.add_argument("--notify-after", type=int, default=None, help="say 'received N' on stderr after N bytes")
    c.add_argument("--bind-port", type=int, default=0)
    c.add_argument("--at-ns", type=int, default=0, help="connect at this time.time_ns() instant")
    c.add_argument("--timeout", type=float, default=60.0)
    m = sub.add_parser("many")
    m.add_argument("--host", default=STACK_ADDR)
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--count", type=int, required=True)
    m.add_argument("--size", type=int, default=1000)
    m.add_argument("--seed", type=int, default=1000)
    m.add_argument("--concurrent", action="store_true")
    m.add_argument("--abort-after", type=int, default=None, help="send nothing; read this many bytes, then abort")
    m.add_argument("--timeout", type=float, default=60.0)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--mode", choices=("echo", "sha", "send", "abort", "full"), required=True)
    s.add_argument("--send", type=int, default=0)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--abort-after", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    result = {"client": cmd_client, "many": cmd_many, "server": cmd_server}[a.cmd](a)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
