"""Deadlines: one timing wheel for every connection, stream and WebSocket session.

Anything with a timeout (a request head, a keep-alive wait, a stalled write, a
request body, an HTTP/2 window, a WebSocket ping or closing handshake) is a
:class:`Timed` owner: it holds its ``deadline`` (loop time, 0: none) and a
``deadline_kind`` saying what the deadline means, and it is armed through
:meth:`Deadlines.arm`. The server's housekeeping tick (every :data:`TICK`
seconds, see :mod:`heron.transport.context`) asks :meth:`Deadlines.expire` for
what is due and calls ``on_deadline(kind)`` on each.

Why a wheel: scanning every connection each tick costs time in proportion to the
open connections, most of which are idle and far from their deadline. Here
owners sit in slots of one TICK each, keyed by when they fall due; a tick opens
only the slots that have come due, so its cost is proportional to what expires.

Why arming is nearly free: an owner stays in the slot it was filed in when its
deadline moves *later* (each keep-alive request does that). Only the attribute
changes; when the old slot comes due, the owner is found not yet due and filed
again, once per timeout period rather than once per request. An owner moves to
an earlier slot only when its deadline moves earlier. Clearing a deadline is
a store of 0; the owner leaves its slot when the slot comes due, or at once
with :meth:`Deadlines.drop` (at the end of its life, so a closed connection is
not kept alive by the wheel).

Precision is that of the tick: a deadline never fires early and fires up to one
TICK late (deadlines are set from the cached clock, which lags up to a TICK).
"""

from __future__ import annotations

from typing import Protocol

#: seconds between two housekeeping ticks, and the width of one wheel slot
TICK = 0.5
#: ``deadline_kind`` of an owner without a deadline
NO_DEADLINE = 0


class Timed(Protocol):
    """What the wheel needs of an owner (all attributes, for ``__slots__`` classes)."""

    #: loop time the owner falls due (0.0: no deadline)
    deadline: float
    #: what the deadline means to the owner (NO_DEADLINE: none)
    deadline_kind: int
    #: the wheel slot holding the owner (0: none); only the wheel writes it
    deadline_slot: int

    def on_deadline(self, kind: int) -> None:
        """The deadline of ``kind`` passed (it is cleared before the call)."""


class Deadlines:
    """The timing wheel of one server (``ServerContext.deadlines``)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        #: slot number (deadline // TICK, plus one so 0 means "none") -> owners
        self._slots: dict[int, set[Timed]] = {}

    def __len__(self) -> int:
        """Owners filed (some may have moved on or cleared: they leave at their slot)."""
        return sum(len(owners) for owners in self._slots.values())

    def arm(self, owner: Timed, kind: int, when: float) -> None:
        """Give ``owner`` the deadline ``when`` (loop time) of ``kind``."""
        owner.deadline = when
        owner.deadline_kind = kind
        filed = owner.deadline_slot
        # Filed in a slot opened no later than ``when``: the owner is looked at in
        # time and filed again then (see the module docstring).
        if filed and (filed - 1) * TICK <= when:
            return
        self._file(owner, when)

    def clear(self, owner: Timed) -> None:
        """No deadline for ``owner`` (it leaves its slot when the slot comes due)."""
        owner.deadline = 0.0
        owner.deadline_kind = NO_DEADLINE

    def drop(self, owner: Timed) -> None:
        """``owner`` is done for good: no deadline, and out of the wheel now."""
        owner.deadline = 0.0
        owner.deadline_kind = NO_DEADLINE
        filed = owner.deadline_slot
        if filed:
            owner.deadline_slot = 0
            owners = self._slots.get(filed)
            if owners is not None:
                owners.discard(owner)
                if not owners:
                    del self._slots[filed]

    def expire(self, due: float) -> list[Timed]:
        """The owners whose deadline is at or before ``due``, out of the wheel.

        The caller fires them (:meth:`fire`); owners of the opened slots that are
        not due yet are filed again.
        """
        slots = self._slots
        opened = [slot for slot in slots if (slot - 1) * TICK <= due]
        expired: list[Timed] = []
        for slot in opened:
            for owner in slots.pop(slot):
                owner.deadline_slot = 0
                when = owner.deadline
                if when <= 0.0:
                    continue  # cleared since it was filed
                if when <= due:
                    expired.append(owner)
                else:
                    self._file(owner, when)  # moved later since it was filed
        return expired

    @staticmethod
    def fire(owner: Timed, due: float) -> None:
        """Call ``owner.on_deadline`` if it is still due (an earlier owner fired
        in the same tick may have cleared or moved it)."""
        when = owner.deadline
        if 0.0 < when <= due:
            kind = owner.deadline_kind
            owner.deadline = 0.0
            owner.deadline_kind = NO_DEADLINE
            owner.on_deadline(kind)

    def _file(self, owner: Timed, when: float) -> None:
        slot = int(when / TICK) + 1
        filed = owner.deadline_slot
        if filed:
            owners = self._slots.get(filed)
            if owners is not None:
                owners.discard(owner)
                if not owners:
                    del self._slots[filed]
        owner.deadline_slot = slot
        owners = self._slots.get(slot)
        if owners is None:
            self._slots[slot] = {owner}
        else:
            owners.add(owner)


__all__ = ["Deadlines", "Timed", "TICK", "NO_DEADLINE"]
