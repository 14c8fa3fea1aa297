"""The timing wheel (heron.transport.deadlines): it fires exactly what a scan of
every owner would fire, tick by tick, and touches only what comes due."""

from __future__ import annotations

import gc
import weakref

from hypothesis import given, settings
from hypothesis import strategies as st

from heron.transport.deadlines import NO_DEADLINE, TICK, Deadlines


class Owner:
    def __init__(self, name: int, fired: list[tuple[int, int]] | None = None) -> None:
        self.name = name
        self.deadline = 0.0
        self.deadline_kind = NO_DEADLINE
        self.deadline_slot = 0
        self.fired = fired if fired is not None else []

    def on_deadline(self, kind: int) -> None:
        self.fired.append((self.name, kind))


class CountingOwner(Owner):
    """Counts how often the wheel reads its deadline."""

    reads = 0

    @property  # type: ignore[override]  # (a property over Owner's plain attribute, to count reads)
    def deadline(self) -> float:
        CountingOwner.reads += 1
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = value


def tick(wheel: Deadlines, due: float) -> None:
    for owner in wheel.expire(due):
        wheel.fire(owner, due)


def test_fires_what_is_due_and_nothing_early() -> None:
    wheel = Deadlines()
    fired: list[tuple[int, int]] = []
    owners = [Owner(i, fired) for i in range(20)]
    for i, owner in enumerate(owners):
        wheel.arm(owner, 1, 100.0 + i * 0.3)
    due = 100.0
    seen = 0
    while due < 107.0:
        tick(wheel, due)
        for name, kind in fired[seen:]:
            when = 100.0 + name * 0.3
            assert kind == 1
            assert when <= due < when + TICK  # never early, within one tick
        seen = len(fired)
        due += TICK
    assert sorted(name for name, _ in fired) == list(range(20))
    assert len(wheel) == 0
    assert all(o.deadline == 0.0 and o.deadline_kind == NO_DEADLINE and o.deadline_slot == 0 for o in owners)


def test_moving_later_stays_in_one_slot() -> None:
    # a keep-alive connection re-arms its deadline after every request: that
    # must not file it again each time (nor grow the wheel)
    wheel = Deadlines()
    owner = Owner(0)
    wheel.arm(owner, 1, 10.0)
    slot = owner.deadline_slot
    for request in range(1000):
        wheel.clear(owner)
        wheel.arm(owner, 2, 10.0 + request * 0.001)
    assert owner.deadline_slot == slot and len(wheel) == 1
    tick(wheel, 10.5)  # the slot opens: not due yet (11.0), filed again
    assert owner.fired == [] and len(wheel) == 1
    tick(wheel, 11.0)
    assert owner.fired == [(0, 2)]


def test_moving_earlier_files_again() -> None:
    wheel = Deadlines()
    owner = Owner(0)
    wheel.arm(owner, 1, 50.0)
    wheel.arm(owner, 3, 5.0)
    assert len(wheel) == 1
    tick(wheel, 5.0)
    assert owner.fired == [(0, 3)]
    tick(wheel, 50.0)
    assert owner.fired == [(0, 3)]  # the old deadline is gone
    assert len(wheel) == 0


def test_cleared_owner_does_not_fire_and_leaves_its_slot() -> None:
    wheel = Deadlines()
    owner = Owner(0)
    wheel.arm(owner, 1, 3.0)
    wheel.clear(owner)
    tick(wheel, 10.0)
    assert owner.fired == [] and len(wheel) == 0


def test_drop_releases_the_owner_at_once() -> None:
    wheel = Deadlines()
    owner = Owner(0)
    wheel.arm(owner, 1, 1e6)
    ref = weakref.ref(owner)
    wheel.drop(owner)
    del owner
    gc.collect()
    assert ref() is None and len(wheel) == 0


def test_an_owner_cleared_by_another_in_the_same_tick_is_not_fired() -> None:
    wheel = Deadlines()
    victim = Owner(1)

    class Clearing(Owner):
        def on_deadline(self, kind: int) -> None:
            super().on_deadline(kind)
            wheel.clear(victim)

    first = Clearing(0)
    wheel.arm(first, 1, 2.0)
    wheel.arm(victim, 1, 2.0)
    expired = wheel.expire(2.0)
    assert set(expired) == {first, victim}
    expired.sort(key=lambda o: o is victim)  # the clearing owner fires first
    for owner in expired:
        wheel.fire(owner, 2.0)
    assert first.fired == [(0, 1)] and victim.fired == []


def test_a_tick_touches_only_what_comes_due() -> None:
    # 10,000 idle owners far from their deadline cost a tick nothing (the old
    # scan read every one of them twice a second)
    wheel = Deadlines()
    idle = [CountingOwner(i) for i in range(10_000)]
    for owner in idle:
        wheel.arm(owner, 1, 1000.0 + (owner.name % 7))
    soon = Owner(-1)
    wheel.arm(soon, 1, 1.0)
    CountingOwner.reads = 0
    for step in range(100):
        tick(wheel, 1.0 + step * TICK)
    assert soon.fired == [(-1, 1)]
    assert CountingOwner.reads == 0


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("arm"), st.integers(0, 7), st.integers(1, 4), st.floats(-1.0, 20.0)),
        st.tuples(st.just("clear"), st.integers(0, 7)),
        st.tuples(st.just("drop"), st.integers(0, 7)),
        st.tuples(st.just("tick"), st.floats(0.0, 3.0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_same_as_scanning_every_owner(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """Against the obvious model: at each tick, fire every owner whose deadline
    (0: none) is at or before ``due``."""
    wheel = Deadlines()
    fired: list[tuple[int, int]] = []
    owners = [Owner(i, fired) for i in range(8)]
    model = dict.fromkeys(range(8), (0.0, NO_DEADLINE))
    now = 0.0
    for op in ops:
        if op[0] == "arm":
            _, i, kind, offset = op
            when = max(now + offset, 0.01)
            wheel.arm(owners[i], kind, when)
            model[i] = (when, kind)
        elif op[0] in ("clear", "drop"):
            getattr(wheel, op[0])(owners[op[1]])
            model[op[1]] = (0.0, NO_DEADLINE)
        else:
            now += op[1]
            expected = sorted((i, kind) for i, (when, kind) in model.items() if 0.0 < when <= now)
            for i, _ in expected:
                model[i] = (0.0, NO_DEADLINE)
            fired.clear()
            tick(wheel, now)
            assert sorted(fired) == expected
        for i, owner in enumerate(owners):
            assert (owner.deadline, owner.deadline_kind) == model[i]
    assert len(wheel) <= len(owners)
