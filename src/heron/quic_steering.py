"""QUIC under a supervisor: every datagram of a connection reaches the worker that holds it.

A QUIC connection lives in one worker's memory, but its datagrams arrive on a
UDP port that all the workers share (SO_REUSEPORT). Left to itself the kernel
picks a socket by hashing the 4-tuple over the sockets of the group, so any
change of the group (a worker that dies, one started beside it, a rolling
restart) sends many live connections to a worker that has never heard of
them; and a client whose address changes (NAT rebinding, RFC 9000 9) lands
anywhere. So, with ``--workers`` (or ``--reload``, or recycling):

* The supervisor binds the UDP sockets and holds them for its whole life, so
  the kernel's group only ever grows and a socket keeps its place in it (a
  socket's index is the order it was bound in; the kernel reorders the group
  only when a member closes, which none does before the supervisor exits).
  It hands one socket per ``--quic-bind`` address to each worker it starts,
  reusing the sockets of workers that are gone.
* Each worker gets a 16-bit *tag* of its own, unique among the live workers,
  and begins every connection id it issues with it (the Retry source id too).
  A client sends its datagrams to those ids, from whatever address.
* A classic BPF program on the group (SO_ATTACH_REUSEPORT_CBPF; no privilege
  needed) reads the first two bytes of each datagram's destination connection
  id (byte 1 of a short header, byte 6 of a long one) and returns the socket
  index of the live worker with that tag; any other value (a client's random
  id in its first Initial, or the id of a worker that is gone) goes to one of
  the workers that *accept* new connections, by that value modulo their
  number (before any is ready: of the live ones), so the same id lands on
  the same worker while that set does not change. A worker accepts from the moment it is ready until it is asked to
  stop; one that drains keeps its tag's route until it exits, so its open
  connections finish there while a replacement takes the new ones.

What this does not cover: the connections of a worker that dies are lost
with its memory (their datagrams then reach another worker, which drops them:
the client's idle timeout ends them); a handshake in flight while the set of
accepting workers changes may be answered twice (the client's retransmitted
first Initial can reach another worker; the client keeps one, the other
half-open connection times out); a new client whose random first id happens
to begin with a draining worker's tag (one in 65,536) is dropped there until
that worker exits, and then gets in. A connection id's tag says which worker
holds it, in clear, as the unencrypted mode of QUIC load balancers does
(draft-ietf-quic-load-balancers): an observer who sees a connection's new
path can narrow its old one down to the connections of one worker (a
classic BPF program can't decrypt, so the tag can't be hidden). Linux only;
elsewhere (or where the kernel refuses the program: it is then detached)
the group keeps the kernel's hash and a warning says so.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import Listener
from .server import bind_udp

logger = logging.getLogger("heron.error")

#: setsockopt option (Linux, asm-generic/socket.h); the socket module does not name it
SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68

#: length of the tag at the start of each connection id heron issues
TAG_LENGTH = 2
#: tags are 16-bit values
TAG_SPACE = 1 << 16

# classic BPF opcodes (linux/filter.h)
_LD_LEN = 0x80  # A = the packet's length
_LDB_ABS = 0x30  # A = packet[k] (byte)
_LDH_ABS = 0x28  # A = packet[k:k+2] (big-endian halfword)
_JA = 0x05  # pc += k
_JEQ_K = 0x15  # pc += (A == k) ? jt : jf
_JGE_K = 0x35  # pc += (A >= k) ? jt : jf
_JSET_K = 0x45  # pc += (A & k) ? jt : jf
_MOD_K = 0x94  # A %= k
_RET_K = 0x06  # return k
#: a return value past the group's last socket: the kernel falls back to its hash
_KERNEL_HASH = 0xFFFFFFFF
#: the kernel's limit on a classic BPF program (BPF_MAXINSNS)
MAX_INSTRUCTIONS = 4096

#: where a destination connection id starts: after the first byte (short
#: header), or after first byte, version and id length (long header)
SHORT_HEADER_CID = 1
LONG_HEADER_CID = 6
#: shorter datagrams can't hold a tag where a long header puts it (a real QUIC
#: packet is longer): they go to an accepting worker, which drops them
MIN_STEERED = LONG_HEADER_CID + 2

Instruction = tuple[int, int, int, int]  # (code, jt, jf, k): struct sock_filter


def steering_program(routes: dict[int, int], accepting: list[int]) -> list[Instruction]:
    """The classic BPF program that picks a socket index for one datagram (its
    UDP payload: a QUIC packet). ``routes``: tag -> socket index of each live
    worker; ``accepting``: the socket indexes of the workers that take new
    connections (none: the kernel's own hash decides)."""
    program: list[Instruction] = [
        (_LD_LEN, 0, 0, 0),
        (_JGE_K, 1, 0, MIN_STEERED),
        (_JA, 0, 0, 0),  # too short: to the choice among accepting workers (k set below)
        (_LDB_ABS, 0, 0, 0),
        (_JSET_K, 0, 2, 0x80),  # the header form bit: long -> next, short -> +2
        (_LDH_ABS, 0, 0, LONG_HEADER_CID),
        (_JA, 0, 0, 1),
        (_LDH_ABS, 0, 0, SHORT_HEADER_CID),
    ]
    for tag, index in sorted(routes.items()):
        program.append((_JEQ_K, 0, 1, tag))
        program.append((_RET_K, 0, 0, index))
    program[2] = (_JA, 0, 0, len(program) - 3)
    if not accepting:
        program.append((_RET_K, 0, 0, _KERNEL_HASH))
        return program
    program.append((_MOD_K, 0, 0, len(accepting)))
    for position, index in enumerate(accepting[:-1]):
        program.append((_JEQ_K, 0, 1, position))
        program.append((_RET_K, 0, 0, index))
    program.append((_RET_K, 0, 0, accepting[-1]))
    return program


def run_program(program: list[Instruction], packet: bytes) -> int:
    """What the kernel computes for ``packet`` (the instructions above only): for
    the tests, and to explain a route. A load past the end returns 0, as in the kernel."""
    a, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == _LD_LEN:
            a = len(packet)
        elif code in (_LDB_ABS, _LDH_ABS):
            size = 1 if code == _LDB_ABS else 2
            if k + size > len(packet):
                return 0
            a = int.from_bytes(packet[k : k + size], "big")
        elif code == _JA:
            pc += k
        elif code == _JEQ_K:
            pc += jt if a == k else jf
        elif code == _JGE_K:
            pc += jt if a >= k else jf
        elif code == _JSET_K:
            pc += jt if a & k else jf
        elif code == _MOD_K:
            a %= k
        elif code == _RET_K:
            return k
        else:
            raise ValueError(f"unknown BPF instruction {code:#x}")


def attach_program(sock: socket.socket, program: list[Instruction]) -> None:
    """Attach ``program`` to the SO_REUSEPORT group of ``sock`` (replacing the one
    there). OSError when the kernel refuses it."""
    if len(program) > MAX_INSTRUCTIONS:
        raise OSError(f"the QUIC steering program has {len(program)} instructions (the kernel allows 4096)")
    filters = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *insn) for insn in program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native alignment)
    fprog = struct.pack("@HP", len(program), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


@dataclass(eq=False)
class QuicClaim:
    """What one worker serves QUIC with: its sockets (one per address) and its tag."""

    slot: int  # the index of its sockets in each group
    tag: int
    sockets: list[socket.socket]
    #: "starting", then "accepting" (ready), then "draining" (stopping: its own connections only)
    state: str = "starting"

    @property
    def cid_tag(self) -> bytes:
        return self.tag.to_bytes(TAG_LENGTH, "big")


@dataclass
class QuicSocketGroup:
    """The supervisor's UDP sockets for every ``--quic-bind`` address, one group per
    address, and which worker serves which (see the module docstring)."""

    listeners: list[Listener]
    #: per address: its sockets, in the order they were bound (= their index in the kernel's group)
    sockets: list[list[socket.socket]] = field(default_factory=list)
    claims: list[QuicClaim] = field(default_factory=list)
    #: False once the kernel refused a program: the kernel's hash decides (warned once)
    steering: bool = True
    _next_tag: int = 0

    def bind(self) -> None:
        """One socket per address (the first of each group); a port 0 is resolved
        here, so every socket after it joins the same port. OSError names the address."""
        try:
            for listener in self.listeners:
                sock = bind_udp(listener, reuse_port=True)
                self.sockets.append([sock])
        except OSError:
            self.close()
            raise
        self.listeners = [
            listener._replace(port=group[0].getsockname()[1]) for listener, group in zip(self.listeners, self.sockets)
        ]
        if sys.platform != "linux":
            self.steering = False
            logger.warning(
                "QUIC with several workers: this system has no SO_ATTACH_REUSEPORT_CBPF, so a change of the "
                "worker set (a restart) can move live QUIC connections to a worker that does not know them"
            )

    def claim(self) -> QuicClaim:
        """The sockets and the connection-id tag for a new worker; OSError (nothing
        changed) when the groups must grow and a socket can't be bound."""
        in_use = {claim.slot for claim in self.claims}
        bound = len(self.sockets[0])
        slot = next((i for i in range(bound) if i not in in_use), bound)
        if slot == bound:  # every socket has a worker: each group grows by one, or none does
            added: list[socket.socket] = []
            try:
                for listener in self.listeners:
                    added.append(bind_udp(listener, reuse_port=True))
            except OSError:
                for sock in added:
                    sock.close()
                raise
            for group, sock in zip(self.sockets, added):
                group.append(sock)
        tags = {claim.tag for claim in self.claims}
        tag = self._next_tag
        while tag in tags:  # (at most one per live worker: a free one is near)
            tag = (tag + 1) % TAG_SPACE
        self._next_tag = (tag + 1) % TAG_SPACE
        claim = QuicClaim(slot, tag, [group[slot] for group in self.sockets])
        self.claims.append(claim)
        self._steer()
        return claim

    def accepting(self, claim: QuicClaim) -> None:
        """``claim``'s worker is ready: it takes new connections (unless it drains already)."""
        if claim in self.claims and claim.state == "starting":
            claim.state = "accepting"
            self._steer()

    def draining(self, claim: QuicClaim) -> None:
        """``claim``'s worker stops: new connections go to the others, its own still reach it."""
        if claim in self.claims and claim.state != "draining":
            claim.state = "draining"
            self._steer()

    def release(self, claim: QuicClaim) -> None:
        """``claim``'s worker exited: its tag is routed no more, its sockets wait for the next worker."""
        if claim in self.claims:
            self.claims.remove(claim)
            self._steer()

    def program(self) -> list[Instruction]:
        """New connections go to the accepting workers; while none is, to those starting
        (their datagrams wait in their sockets), never to a draining one."""
        claims = sorted(self.claims, key=lambda claim: claim.slot)
        accepting = [claim.slot for claim in claims if claim.state == "accepting"]
        accepting = accepting or [claim.slot for claim in claims if claim.state == "starting"]
        return steering_program({claim.tag: claim.slot for claim in claims}, accepting)

    def _steer(self) -> None:
        if not self.steering or not self.sockets:
            return
        program = self.program()
        try:
            for group in self.sockets:
                attach_program(group[0], program)
        except OSError as exc:
            self.steering = False
            for group in self.sockets:  # (an older program left in place could route to a worker long gone)
                try:
                    group[0].setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
                except OSError:
                    pass  # none attached there, or a kernel before 5.8
            logger.warning(
                "QUIC with several workers: the kernel refused the steering program (%s), so a change of the "
                "worker set (a restart) can move live QUIC connections to a worker that does not know them",
                exc,
            )

    def all_sockets(self) -> Iterable[socket.socket]:
        for group in self.sockets:
            yield from group

    def close(self) -> None:
        for sock in self.all_sockets():
            sock.close()
        self.sockets = []


__all__ = [
    "QuicClaim",
    "QuicSocketGroup",
    "TAG_LENGTH",
    "attach_program",
    "run_program",
    "steering_program",
]
