"""The supervisor's QUIC sockets and the kernel program that steers datagrams to workers
(heron.quic_steering): the program's decisions, and the kernel's, through real UDP sockets."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

import heron.quic_steering as steering
from heron.config import Listener
from heron.quic_steering import QuicClaim, QuicSocketGroup, run_program, steering_program

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="SO_ATTACH_REUSEPORT_CBPF is Linux's")


def short(cid: bytes) -> bytes:
    """A short-header (1-RTT) packet to ``cid``."""
    return b"\x40" + cid + os.urandom(30)


def long(cid: bytes) -> bytes:
    """A long-header (Initial) packet to ``cid``."""
    return b"\xc0\x00\x00\x00\x01" + bytes([len(cid)]) + cid + b"\x08" + os.urandom(8) + os.urandom(30)


def fresh_id() -> bytes:
    """A client's random id, kept clear of the test's tags (small numbers)."""
    return b"\xff" + os.urandom(7)


def test_a_tag_goes_to_its_worker_and_other_ids_to_the_accepting_ones() -> None:
    program = steering_program({0x0102: 5, 0x0304: 7}, [7, 9])
    assert run_program(program, short(b"\x01\x02" + os.urandom(6))) == 5
    assert run_program(program, long(b"\x03\x04" + os.urandom(6))) == 7  # (draining or not: its own)
    for value in range(40):  # anything else: by its value modulo the accepting workers
        cid = (0x5000 + value).to_bytes(2, "big") + os.urandom(6)
        assert run_program(program, long(cid)) == [7, 9][(0x5000 + value) % 2]
        assert run_program(program, short(cid)) == [7, 9][(0x5000 + value) % 2]
    for size in range(8):  # too short to hold a tag where a long header has it: an accepting worker
        assert run_program(program, b"\x40\x01\x02\x03\x04\x05\x06"[:size]) == [7, 9][size % 2]
    # no worker accepts: the kernel's own hash (a value past the last socket)
    assert run_program(steering_program({1: 0}, []), short(b"\x00\x02" + os.urandom(6))) == 0xFFFFFFFF


@pytest.fixture
def group() -> QuicSocketGroup:
    group = QuicSocketGroup([Listener("udp", host="127.0.0.1", port=0)])
    group.bind()
    yield group  # type: ignore[misc]
    group.close()


def received_by(group: QuicSocketGroup, packet: bytes, source: socket.socket) -> list[int]:
    """The indexes of the sockets of ``group`` that ``packet`` (sent from ``source``) reached."""
    source.sendto(packet, ("127.0.0.1", group.listeners[0].port))
    deadline = time.monotonic() + 2
    while True:
        hits = []
        for index, sock in enumerate(group.sockets[0]):
            try:
                sock.recv(4096)
                hits.append(index)
            except BlockingIOError:
                pass
        if hits or time.monotonic() > deadline:
            return hits
        time.sleep(0.002)


@linux_only
def test_the_kernel_steers_as_the_program_says_from_any_client_address(group: QuicSocketGroup) -> None:
    claims = [group.claim() for _ in range(3)]
    for sock in group.all_sockets():
        sock.setblocking(False)
    group.accepting(claims[0])
    group.accepting(claims[2])
    assert [c.slot for c in claims] == [0, 1, 2] and len({c.tag for c in claims}) == 3
    sources = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        for claim in claims:  # a worker's ids reach it, from every source port (a client that moved)
            cid = claim.cid_tag + os.urandom(6)
            for source in sources:
                assert received_by(group, short(cid), source) == [claim.slot]
                assert received_by(group, long(cid), source) == [claim.slot]
        landed = set()
        for _ in range(30):  # a new client's random id: an accepting worker, as the program computes
            packet = long(fresh_id())
            expected = run_program(group.program(), packet)
            assert expected in (0, 2)
            assert received_by(group, packet, sources[0]) == [expected]
            landed.add(expected)
        assert landed == {0, 2}
    finally:
        for source in sources:
            source.close()


@linux_only
def test_a_draining_worker_keeps_its_connections_and_a_gone_one_frees_its_socket(group: QuicSocketGroup) -> None:
    first, second = group.claim(), group.claim()
    for claim in (first, second):
        group.accepting(claim)
    group.draining(first)
    group.accepting(first)  # (a late "ready": it drains still)
    third = group.claim()  # its replacement: a socket of its own, the group grows
    group.accepting(third)
    for sock in group.all_sockets():
        sock.setblocking(False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as source:
        assert received_by(group, short(first.cid_tag + os.urandom(6)), source) == [first.slot]
        for _ in range(20):  # new clients: never the draining worker
            hits = received_by(group, long(fresh_id()), source)
            assert len(hits) == 1 and hits[0] != first.slot, hits
        group.release(first)
        # its ids now reach a worker that accepts (which drops them), and its socket waits for the next one
        assert received_by(group, short(first.cid_tag + os.urandom(6)), source)[0] in (second.slot, third.slot)
        fourth = group.claim()
        assert fourth.slot == first.slot and fourth.sockets == first.sockets and fourth.tag != first.tag
        assert len(group.sockets[0]) == 3
        assert received_by(group, short(second.cid_tag + os.urandom(6)), source) == [second.slot]
        assert received_by(group, short(third.cid_tag + os.urandom(6)), source) == [third.slot]
        assert received_by(group, short(fourth.cid_tag + os.urandom(6)), source) == [fourth.slot]


def test_new_clients_never_go_to_a_draining_worker_even_when_none_accepts() -> None:
    # (the program only: no sockets needed)
    draining, starting = QuicClaim(0, 10, [], "draining"), QuicClaim(1, 11, [], "starting")
    group = QuicSocketGroup([], claims=[draining, starting])
    program = group.program()
    for _ in range(20):
        assert run_program(program, long(fresh_id())) == starting.slot
    assert run_program(program, short(draining.cid_tag + os.urandom(6))) == draining.slot


def test_a_group_that_cannot_grow_is_left_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    group = QuicSocketGroup([Listener("udp", host="127.0.0.1", port=0), Listener("udp", host="127.0.0.1", port=0)])
    group.bind()
    try:
        group.claim()
        real, calls = steering.bind_udp, []

        def second_fails(listener: Listener, reuse_port: bool = False) -> socket.socket:
            calls.append(listener)
            if len(calls) == 2:
                raise OSError("Too many open files")
            return real(listener, reuse_port)

        monkeypatch.setattr(steering, "bind_udp", second_fails)
        with pytest.raises(OSError):
            group.claim()
        assert [len(sockets) for sockets in group.sockets] == [1, 1] and len(group.claims) == 1
        monkeypatch.setattr(steering, "bind_udp", real)
        assert group.claim().slot == 1 and [len(sockets) for sockets in group.sockets] == [2, 2]
    finally:
        group.close()
