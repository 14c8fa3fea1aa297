"""What the client data a connection holds for its app costs, and when reading stops.

One mechanism for every protocol. Each carrier of requests (an HTTP/1.1
connection, an HTTP/2 connection, a WebSocket session) owns one
:class:`ReadBudget`; every buffer that keeps client data for the app (request
bodies not yet taken by ``receive()``, WebSocket messages in the app's queue,
a message being inflated) charges it what the data really costs in memory and
releases the charge when the app takes the data. When the charge reaches the
limit the carrier stops reading (``pause``); once the app has taken half of it
reading resumes (``resume``).

"What it really costs" is the bytes plus the objects that hold them. A
million one-byte chunks are not a megabyte: as a list of ``bytes`` they would
be about 50 MB. So buffers coalesce: a small piece is copied into the tail
``bytearray`` of the buffer (its cost: its bytes), and only a big piece is
kept as an object of its own (its cost: its bytes plus :data:`PIECE_OVERHEAD`).
:class:`BodyBuffer` is that buffer for request bodies.

How the carriers wire it (see the transports): HTTP/1.1 pauses the socket;
HTTP/2 needs no pause, because a stream's credit is returned only as its app
consumes (the windows bound the payload, the budget accounts for it and
pauses the socket only if that bound is ever exceeded); a WebSocket session
pauses its link (the socket, or the HTTP/2 stream's credit) and also passes
:attr:`ReadBudget.room` to the frame parser, so a compressed message is not
inflated beyond what the app has room for.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ReadBudget", "BodyBuffer", "PIECE_OVERHEAD", "COALESCE_BELOW", "MESSAGE_OVERHEAD"]

#: What a buffered piece costs beyond its bytes: a ``bytes`` object's header
#: (33 bytes on 64-bit CPython) and its list slot, rounded up to the allocator's
#: granularity.
PIECE_OVERHEAD = 64
#: A received piece smaller than this is copied into the buffer's tail
#: ``bytearray`` rather than kept as an object of its own: its overhead would
#: be a noticeable part of its cost, and the copy is cheap.
COALESCE_BELOW = 4096
#: What a queued ASGI message costs beyond its payload (the message dict and
#: the payload object's header).
MESSAGE_OVERHEAD = 256


def _nothing() -> None:
    pass


class ReadBudget:
    """The memory one carrier holds for its app, and the switch that stops reading.

    ``pause`` is called once when :attr:`held` reaches ``limit``; ``resume``
    once it falls back to half the limit (hysteresis: a reader that takes
    small pieces does not flip the socket on every call).
    """

    __slots__ = ("limit", "held", "paused", "_pause", "_resume")

    def __init__(self, limit: int, pause: Callable[[], None] = _nothing, resume: Callable[[], None] = _nothing) -> None:
        self.limit = limit
        #: bytes charged and not yet released
        self.held = 0
        #: reading is paused because of this budget
        self.paused = False
        self._pause = pause
        self._resume = resume

    @property
    def room(self) -> int:
        """Bytes that can still be charged before reading pauses (may be negative)."""
        return self.limit - self.held

    def charge(self, cost: int) -> None:
        held = self.held = self.held + cost
        if held >= self.limit and not self.paused:
            self.paused = True
            self._pause()

    def stall(self) -> None:
        """Pause now, whatever is charged (a message can't go on without more
        room); reading resumes as for a full budget, once the app has taken
        enough that half the limit is free."""
        if not self.paused:
            self.paused = True
            self._pause()

    def release(self, cost: int) -> None:
        held = self.held = self.held - cost
        if self.paused and held <= self.limit >> 1:
            self.paused = False
            self._resume()

    def __repr__(self) -> str:
        return f"<ReadBudget {self.held}/{self.limit}{' paused' if self.paused else ''}>"


class BodyBuffer:
    """Request body bytes waiting for the app, charged to a :class:`ReadBudget`.

    Big pieces are kept by reference (no copy); small ones are appended to a
    tail ``bytearray``, so the number of objects stays small whatever the
    client's chunking. :meth:`take` hands everything over as one ``bytes``, :meth:`take_next`
    the oldest piece.
    """

    __slots__ = ("budget", "pieces", "size", "cost")

    def __init__(self, budget: ReadBudget) -> None:
        self.budget = budget
        self.pieces: list[bytes | bytearray] = []
        #: payload bytes held
        self.size = 0
        #: what they cost (charged to the budget)
        self.cost = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes) -> None:
        n = len(data)
        if not n:
            return
        pieces = self.pieces
        tail = pieces[-1] if pieces else None
        if n >= COALESCE_BELOW:
            pieces.append(data)
            cost = n + PIECE_OVERHEAD
        elif isinstance(tail, bytearray):
            tail += data
            cost = n
        else:
            pieces.append(bytearray(data))
            cost = n + PIECE_OVERHEAD
        self.size += n
        self.cost += cost
        self.budget.charge(cost)

    def take(self) -> bytes:
        """Everything buffered, as one ``bytes`` (the budget is released)."""
        pieces = self.pieces
        first = pieces[0] if len(pieces) == 1 else None
        body = first if type(first) is bytes else b"".join(pieces)
        pieces.clear()
        self.size = 0
        cost, self.cost = self.cost, 0
        self.budget.release(cost)
        return body

    def take_next(self) -> bytes:
        """The oldest piece (the buffer must not be empty), released from the budget.

        A big piece is handed over as the object it arrived as: reads that
        piled up while the app was busy reach it one by one, never copied
        into a join. (Every piece, coalesced tail or big, cost its bytes plus
        :data:`PIECE_OVERHEAD`.)
        """
        pieces = self.pieces
        if len(pieces) == 1:
            return self.take()
        first = pieces.pop(0)
        n = len(first)
        self.size -= n
        self.cost -= n + PIECE_OVERHEAD
        self.budget.release(n + PIECE_OVERHEAD)
        return first if type(first) is bytes else bytes(first)

    def clear(self) -> None:
        """Drop everything (the request is over); the budget is released."""
        if self.pieces:
            self.pieces.clear()
            self.size = 0
            cost, self.cost = self.cost, 0
            self.budget.release(cost)
