"""HTTP/3 under a supervisor: every datagram of a connection reaches the worker that holds
it while workers die, are replaced, drain, and while the client changes address
(heron.quic_steering). Real worker processes, aioquic's client over real UDP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from .test_cli import free_port, heron_server
from .test_http3 import Certs, Client, certs, h3_client, run_client

__all__ = ["certs"]  # (the fixture, imported for its tests)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the steering program is Linux's")

#: answers "PID SIZE": the worker's pid and the request body's size
PID_APP = """\
import os
async def app(scope, receive, send):
    if scope['type'] != 'http':
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get('body', b''))
        if not message.get('more_body'):
            break
    await send({'type': 'http.response.start', 'status': 200, 'headers': []})
    await send({'type': 'http.response.body', 'body': b'%d %d' % (os.getpid(), size)})
"""


def start(certs: Certs, tmp_path: Path, workers: int = 2) -> tuple[Any, int]:
    """heron with ``workers`` workers, HTTP/3 on a free UDP port: (the running heron, that port)."""
    (tmp_path / "pidapp.py").write_text(PID_APP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp = probe.getsockname()[1]
    tcp = free_port()
    args = ["pidapp:app", "--workers", str(workers), "--port", str(tcp), "--quic-bind", f"127.0.0.1:{udp}"]
    args += ["--ssl-certfile", certs.certfile, "--ssl-keyfile", certs.keyfile, "--timeout-graceful-shutdown", "10"]
    return heron_server(args, tmp_path, port=tcp), udp


async def pid_of(client: Client, timeout: float = 3.0) -> int:
    response = await client.response(client.request("GET", "/"), timeout)
    assert response.status == 200
    return int(response.body.split()[0])


async def ask_new_connection(
    attempt: AsyncExitStack, certs: Certs, port: int, timeout: float
) -> tuple[Client, int] | None:
    """A new connection (closed with ``attempt``) and the pid of the worker that
    holds it, or None when the handshake or the answer did not come in time."""
    try:
        client = await asyncio.wait_for(attempt.enter_async_context(h3_client(certs, port)), 2)
        return client, await pid_of(client, timeout)
    except (asyncio.TimeoutError, ConnectionError):
        return None


async def connections_on_every_worker(
    stack: AsyncExitStack, certs: Certs, port: int, workers: int, each: int
) -> list[tuple[Client, int]]:
    """Open connections (each asks once which worker holds it) until every one of
    ``workers`` workers holds ``each`` (new connections land at random, and only on
    the workers that are ready: those still starting get theirs later)."""
    kept: list[tuple[Client, int]] = []
    counts: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 25
    while loop.time() < deadline:
        async with AsyncExitStack() as attempt:
            answer = await ask_new_connection(attempt, certs, port, 3)
            if answer is None:
                await asyncio.sleep(0.1)  # (no worker is ready yet)
                continue
            client, pid = answer
            if counts.get(pid, 0) < each:
                counts[pid] = counts.get(pid, 0) + 1
                kept.append((client, pid))
                stack.push_async_exit(attempt.pop_all())  # (kept open until the test ends)
            else:
                await asyncio.sleep(0.05)  # (the others may still be starting)
        if len(counts) == workers and min(counts.values()) >= each:
            return kept
    raise AssertionError(f"could not reach {workers} workers: {counts}")


async def wait_for_new_workers(certs: Certs, port: int, known: set[int], count: int = 1) -> set[int]:
    """The pids of ``count`` workers not in ``known``, once each has served a new connection."""
    new: set[int] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 25
    while loop.time() < deadline:
        async with AsyncExitStack() as attempt:
            answer = await ask_new_connection(attempt, certs, port, 1)
        if answer is not None and answer[1] not in known:
            new.add(answer[1])
            if len(new) >= count:
                return new
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(new)} of {count} new workers served")


def test_a_dead_worker_and_its_replacement_cost_the_other_worker_none_of_its_connections(
    certs: Certs, tmp_path: Path
) -> None:
    server, port = start(certs, tmp_path)

    async def main() -> tuple[list[int], int]:
        async with AsyncExitStack() as stack:
            opened = await connections_on_every_worker(stack, certs, port, 2, 3)
            victim = opened[0][1]
            os.kill(victim, signal.SIGKILL)
            await wait_for_new_workers(certs, port, {pid for _, pid in opened})
            # the survivor's connections, after its peer died and a new worker joined the port
            survivors = [client for client, pid in opened if pid != victim]
            return [await pid_of(client) for client in survivors], next(p for _, p in opened if p != victim)

    with server:
        pids, survivor = run_client(main(), 40)
    assert pids and set(pids) == {survivor}


def test_a_rolling_restart_lets_uploads_in_flight_finish_on_their_workers(certs: Certs, tmp_path: Path) -> None:
    server, port = start(certs, tmp_path)
    chunk = b"x" * 1000

    async def upload(client: Client, replaced: asyncio.Event) -> tuple[int, bytes]:
        # The body goes on until a new worker serves, and a second longer: the
        # old worker it replaces drains while the bodies still arrive (the next
        # one is replaced only once that one has left). At most 25 s, 10 chunks a second.
        sid = client.request("POST", "/", body=b"", end=False)
        sent = 0
        loop = asyncio.get_running_loop()
        ends = loop.time() + 25
        while loop.time() < ends:
            await asyncio.sleep(0.1)
            client.h3.send_data(sid, chunk, end_stream=False)
            client.transmit()
            sent += len(chunk)
            if replaced.is_set() and ends - loop.time() > 1.0:
                ends = loop.time() + 1.0
        client.h3.send_data(sid, b"", end_stream=True)
        client.transmit()
        response = await client.response(sid, 15)
        assert response.status == 200, response
        return sent, response.body

    async def main(proc: Any) -> tuple[list[tuple[int, int, bytes]], set[int], set[int]]:
        async with AsyncExitStack() as stack:
            opened = await connections_on_every_worker(stack, certs, port, 2, 3)
            replaced = asyncio.Event()
            uploads = [asyncio.ensure_future(upload(client, replaced)) for client, _ in opened]
            await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGHUP)  # a new worker first, then each old one drains
            old = {pid for _, pid in opened}
            new = await wait_for_new_workers(certs, port, old)
            replaced.set()
            results = await asyncio.gather(*uploads)
            return [(pid, sent, body) for (_, pid), (sent, body) in zip(opened, results)], old, new

    with server as running:
        results, old, new = run_client(main(running.proc), 90)
    for pid, sent, body in results:  # each finished, whole, on the worker that held it
        assert body == b"%d %d" % (pid, sent)
    assert not new & old


class RebindingRelay(asyncio.DatagramProtocol):
    """A NAT in front of the server: the client's datagrams go on from a source port
    that :meth:`rebind` changes (as a NAT's mapping does), and the server's answers,
    to whichever port, come back to the client."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: Any = None
        self.transport: Any = None
        self.upstream: Any = None
        self.upstreams: list[Any] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client = addr
        if self.upstream is not None:
            self.upstream.sendto(data, self.server)

    async def rebind(self) -> None:
        relay = self

        class Upstream(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if relay.client is not None:
                    relay.transport.sendto(data, relay.client)

        loop = asyncio.get_running_loop()
        self.upstream, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        self.upstreams.append(self.upstream)

    def close(self) -> None:
        for upstream in self.upstreams:
            upstream.close()
        if self.transport is not None:
            self.transport.close()


def test_a_client_that_changes_address_stays_with_its_worker(certs: Certs, tmp_path: Path) -> None:
    server, port = start(certs, tmp_path, workers=3)

    async def main() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            await connections_on_every_worker(stack, certs, port, 3, 1)  # (all three are up)
            seen = []
            for _ in range(3):
                transport, relay = await loop.create_datagram_endpoint(
                    lambda: RebindingRelay(("127.0.0.1", port)), local_addr=("127.0.0.1", 0)
                )
                stack.callback(relay.close)
                await relay.rebind()
                client = await stack.enter_async_context(h3_client(certs, transport.get_extra_info("sockname")[1]))
                pids = [await pid_of(client)]
                for _ in range(4):  # four new source ports: each a new 4-tuple for the kernel
                    await relay.rebind()
                    pids.append(await pid_of(client))
                seen.append(pids)
            return seen

    with server:
        seen = run_client(main(), 60)
    for pids in seen:
        assert len(set(pids)) == 1, seen
