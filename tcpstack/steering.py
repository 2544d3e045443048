"""Which worker gets a frame: an eBPF steering program on the multi-queue TUN device.

Without one, the kernel picks a queue by the flow table it learns from our writes (entries age
out after 3 s) and otherwise by a hash over the queues in their current order, which a worker's
restart changes. With ``TUNSETSTEERINGEBPF`` a small socket-filter program picks the queue of
every frame the kernel sends us, the same way every time:

- a TCP or UDP datagram to one of our ephemeral ports goes to the worker whose slice holds the
  port (its own active open: ``ephemeral_low`` + slice size x worker);
- any other TCP or UDP datagram (to a listener) goes to worker ``hash(source address, source
  port) mod N``: all of one flow to one worker, SYN included;
- an ICMP error (RFC 792: unreachable, source quench, time exceeded, parameter problem) goes
  where the datagram of ours it quotes came from, by the same two rules;
- a fragment (MF set or an offset), and anything else (ICMP echo), goes to worker
  ``hash(source address, destination address) mod N``: every fragment of a datagram to one worker;

then through a map from worker to queue index, which the parent rewrites when a worker dies
(the kernel moves the last queue into the dead one's place) and when it is attached again.
Network byte order is read with ``LD_ABS``/``LD_IND``, which stop the program (queue 0) on a
datagram too short to hold what they read.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import struct

BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM, BPF_PROG_LOAD, BPF_PROG_TEST_RUN = 0, 2, 5, 10
BPF_MAP_TYPE_ARRAY = 2
BPF_PROG_TYPE_SOCKET_FILTER = 1
TUNSETSTEERINGEBPF = 0x800454E0  # _IOR('T', 224, int)
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_MIX = -1640531535  # 0x9E3779B1 (Knuth's multiplicative hash) as a signed 32-bit immediate

_libc = ctypes.CDLL(None, use_errno=True)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _bpf(cmd: int, attr: bytes) -> int:
    return _bpf_buffer(cmd, ctypes.create_string_buffer(attr, len(attr)))


def _bpf_buffer(cmd: int, buf: ctypes.Array[ctypes.c_char]) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(f"no bpf() system call number known for {platform.machine()}")
    result: int = _libc.syscall(number, cmd, buf, len(buf))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"bpf({cmd}): {os.strerror(code)}")
    return result


ICMP_ERRORS = (3, 4, 11, 12)
"""ICMP types that quote a datagram of ours: destination unreachable, source quench, time
exceeded, parameter problem (RFC 792); steered by the quoted datagram's flow."""

Asm = list[tuple[int, int, int, "int | str", int] | str]


def _assemble(code: Asm) -> bytes:
    """Strings in *code* are labels; an instruction's offset may name one (a jump to it)."""
    labels: dict[str, int] = {}
    pc = 0
    for item in code:
        if isinstance(item, str):
            labels[item] = pc
        else:
            pc += 2 if item[0] == 0x18 else 1  # ld_imm64 takes two slots
    out: list[bytes] = []
    pc = 0
    for item in code:
        if isinstance(item, str):
            continue
        op, dst, src, off, imm = item
        if isinstance(off, str):
            off = labels[off] - pc - 1
        out.append(_insn(op, dst, src, off, imm))
        pc += 1
        if op == 0x18:
            out.append(_insn(0))
            pc += 1
    return b"".join(out)


def program(map_fd: int, workers: int, low: int, high: int, size: int) -> bytes:
    """The steering program (see the module's docstring); *size*: ports per worker slice."""
    r0, r1, r2, r6, r7, r8, r9, r10 = 0, 1, 2, 6, 7, 8, 9, 10
    icmp_errors: Asm = [(0x15, r0, 0, "icmp_error", t) for t in ICMP_ERRORS]
    code: Asm = [
        (0xBF, r6, r1, 0, 0),  # r6 = ctx (LD_ABS needs it there)
        (0x30, 0, 0, 0, 0),  # r0 = version/IHL byte
        (0xBF, r7, r0, 0, 0),
        (0x57, r7, 0, 0, 0x0F),
        (0x67, r7, 0, 0, 2),  # r7 = header length
        (0x28, 0, 0, 0, 6),  # r0 = flags + fragment offset
        (0x57, r0, 0, 0, 0x3FFF),  # MF or an offset: a fragment
        (0x55, r0, 0, "addresses", 0),
        (0x30, 0, 0, 0, 9),  # r0 = protocol
        (0x15, r0, 0, "ports", 6),
        (0x15, r0, 0, "ports", 17),
        (0x55, r0, 0, "addresses", 1),
        (0x50, 0, r7, 0, 0),  # ICMP: r0 = type
        *icmp_errors,
        (0x05, 0, 0, "addresses", 0),
        "icmp_error",  # the quoted datagram (ours: source us, destination the peer) at r7 + 8
        (0x50, 0, r7, 0, 8),
        (0xBF, r9, r0, 0, 0),
        (0x57, r9, 0, 0, 0x0F),
        (0x67, r9, 0, 0, 2),
        (0x0F, r9, r7, 0, 0),  # r9 + 8 = the quoted transport header
        (0x48, 0, r7, 0, 14),  # quoted flags + fragment offset
        (0x57, r0, 0, 0, 0x3FFF),
        (0x55, r0, 0, "addresses", 0),
        (0x50, 0, r7, 0, 17),  # quoted protocol
        (0x15, r0, 0, "quoted", 6),
        (0x55, r0, 0, "addresses", 17),
        "quoted",
        (0x48, 0, r9, 0, 8),  # r0 = quoted source port (ours)
        (0xA5, r0, 0, "quoted_peer", low),
        (0x25, r0, 0, "quoted_peer", high),
        (0x05, 0, 0, "slice", 0),
        "quoted_peer",
        (0x48, 0, r9, 0, 10),  # quoted destination port (the peer's)
        (0xBF, r8, r0, 0, 0),
        (0x40, 0, r7, 0, 24),  # quoted destination address (the peer's)
        (0x05, 0, 0, "key", 0),
        "ports",
        (0x48, 0, r7, 0, 2),  # r0 = destination port (ours)
        (0xA5, r0, 0, "peer", low),  # below our ephemeral range: a listener's
        (0x25, r0, 0, "peer", high),
        "slice",
        (0x17, r0, 0, 0, low),
        (0x37, r0, 0, 0, size),  # r0 = the slice's worker
        (0xA5, r0, 0, "lookup", workers),
        (0xB7, r0, 0, 0, workers - 1),  # the last slice takes the remainder
        (0x05, 0, 0, "lookup", 0),
        "peer",
        (0x48, 0, r7, 0, 0),  # r0 = source port (the peer's)
        (0xBF, r8, r0, 0, 0),
        (0x20, 0, 0, 0, 12),  # r0 = source address (the peer's)
        "key",
        (0xAF, r0, r8, 0, 0),
        (0x05, 0, 0, "mix", 0),
        "addresses",
        (0x20, 0, 0, 0, 16),
        (0xBF, r8, r0, 0, 0),
        (0x20, 0, 0, 0, 12),
        (0xAF, r0, r8, 0, 0),
        "mix",
        (0x24, r0, 0, 0, _MIX),  # 32-bit multiply
        (0x74, r0, 0, 0, 16),
        (0x94, r0, 0, 0, workers),  # r0 = worker
        "lookup",
        (0x63, r10, r0, -4, 0),  # the key on the stack
        (0x18, r1, 1, 0, map_fd),  # r1 = the map (BPF_PSEUDO_MAP_FD)
        (0xBF, r2, r10, 0, 0),
        (0x07, r2, 0, 0, -4),
        (0x85, 0, 0, 0, 1),  # bpf_map_lookup_elem
        (0x15, r0, 0, "none", 0),
        (0x61, r0, r0, 0, 0),  # r0 = the worker's queue
        (0x95, 0, 0, 0, 0),
        "none",
        (0xB7, r0, 0, 0, 0),
        (0x95, 0, 0, 0, 0),
    ]
    return _assemble(code)


def _slice(port: int, workers: int, low: int, high: int) -> int:
    return min((port - low) // ((high - low + 1) // workers), workers - 1)


def _hash(key: int, workers: int) -> int:
    return (((key * 0x9E3779B1) & 0xFFFFFFFF) >> 16) % workers


def expected_worker(datagram: bytes, workers: int, low: int, high: int) -> int:
    """The worker :func:`program` picks for an IPv4 *datagram*, in Python (the tests compare)."""
    ihl = (datagram[0] & 0x0F) * 4
    fragment = int.from_bytes(datagram[6:8], "big") & 0x3FFF
    src = int.from_bytes(datagram[12:16], "big")
    addresses = _hash(src ^ int.from_bytes(datagram[16:20], "big"), workers)
    if fragment:
        return addresses
    proto = datagram[9]
    if proto in (6, 17):
        dport = int.from_bytes(datagram[ihl + 2 : ihl + 4], "big")
        if low <= dport <= high:
            return _slice(dport, workers, low, high)
        return _hash(src ^ int.from_bytes(datagram[ihl : ihl + 2], "big"), workers)
    if proto != 1 or datagram[ihl] not in ICMP_ERRORS:
        return addresses
    quoted = datagram[ihl + 8 :]  # the datagram we sent, quoted by the error
    if int.from_bytes(quoted[6:8], "big") & 0x3FFF or quoted[9] not in (6, 17):
        return addresses
    qihl = (quoted[0] & 0x0F) * 4
    sport = int.from_bytes(quoted[qihl : qihl + 2], "big")
    if low <= sport <= high:
        return _slice(sport, workers, low, high)
    peer = int.from_bytes(quoted[16:20], "big") ^ int.from_bytes(quoted[qihl + 2 : qihl + 4], "big")
    return _hash(peer, workers)


class Steering:
    """The program attached to a multi-queue TUN device, and its worker -> queue map.

    :raises OSError: eBPF is not available (no permission, an old kernel, an unknown machine).
    """

    def __init__(self, tun_fd: int | None, workers: int, low: int, high: int) -> None:
        self.workers = workers
        self.order: list[int] = []  # the workers in the kernel's queue order
        self._map = _bpf(BPF_MAP_CREATE, struct.pack("IIIII", BPF_MAP_TYPE_ARRAY, 4, 4, workers, 0) + bytes(52))
        size = (high - low + 1) // workers
        try:
            insns = program(self._map, workers, low, high, size)
            self._license = ctypes.create_string_buffer(b"GPL")
            log = ctypes.create_string_buffer(65536)
            code = ctypes.create_string_buffer(insns, len(insns))
            attr = struct.pack(
                "IIQQIIQ",
                BPF_PROG_TYPE_SOCKET_FILTER,
                len(insns) // 8,
                ctypes.addressof(code),
                ctypes.addressof(self._license),
                1,
                len(log),
                ctypes.addressof(log),
            ) + bytes(80)
            try:
                self._prog = _bpf(BPF_PROG_LOAD, attr)
            except OSError as exc:
                detail = log.value.decode(errors="replace").strip().splitlines()
                raise OSError(exc.errno, f"{exc.strerror}: {detail[-1] if detail else ''}") from None
            try:
                if tun_fd is not None:  # (None: loaded only, for test_run)
                    fcntl.ioctl(tun_fd, TUNSETSTEERINGEBPF, struct.pack("i", self._prog))
            except OSError:
                os.close(self._prog)
                raise
        except OSError:
            os.close(self._map)
            raise
        self.update()

    def test_run(self, datagram: bytes) -> int:
        """What the program returns for *datagram* (``BPF_PROG_TEST_RUN``, behind an Ethernet
        header the kernel strips, as the TUN device's frames reach it: at the IPv4 header)."""
        frame = ctypes.create_string_buffer(bytes(12) + b"\x08\x00" + datagram, 14 + len(datagram))
        attr = ctypes.create_string_buffer(
            struct.pack("IIIIQQII", self._prog, 0, len(frame), 0, ctypes.addressof(frame), 0, 1, 0) + bytes(48)
        )
        _bpf_buffer(BPF_PROG_TEST_RUN, attr)
        retval: int = struct.unpack_from("I", attr, 4)[0]
        return retval

    def _set(self, worker: int, queue: int) -> None:
        key, value = ctypes.c_uint32(worker), ctypes.c_uint32(queue)
        attr = struct.pack("IIQQQ", self._map, 0, ctypes.addressof(key), ctypes.addressof(value), 0) + bytes(40)
        _bpf(BPF_MAP_UPDATE_ELEM, attr)

    def update(self) -> None:
        """Write the map from :attr:`order`; a worker without a queue (not started, or dead)
        borrows a live one's, so its share of new flows is served meanwhile."""
        for worker in range(self.workers):
            if worker in self.order:
                queue = self.order.index(worker)
            else:
                queue = worker % len(self.order) if self.order else 0
            self._set(worker, queue)

    def attached(self, worker: int) -> None:
        """*worker* opened its queue: the kernel put it last."""
        self.order.append(worker)
        self.update()

    def detached(self, worker: int) -> None:
        """*worker* closed its queue (it died): the kernel moved the last queue into its place."""
        if worker in self.order:
            index = self.order.index(worker)
            last = self.order.pop()
            if index < len(self.order):
                self.order[index] = last
        self.update()

    def close(self, tun_fd: int | None = None) -> None:
        """Close the program and map; with *tun_fd*, take the program off the device first (a
        persistent device would keep it)."""
        if tun_fd is not None:
            try:
                fcntl.ioctl(tun_fd, TUNSETSTEERINGEBPF, struct.pack("i", -1))
            except OSError:
                pass
        os.close(self._prog)
        os.close(self._map)
