"""Flooding hosts banned for a while: the policy (pure), and the kernel filter it drives."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sudp.protocol.bans import BAN_SECONDS, MAX_BAN_SECONDS, MAX_BANNED, Bans
from trio_sudp.protocol.budget import VerifyBudget
from trio_sudp.runtime.prefilter import PrefilterRules, attach_filter, build_server_filter

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket filter")


def flood(bans: Bans, host: str, times: int) -> None:
    for _ in range(times):
        bans.refused(host)


def test_a_host_refused_often_enough_in_one_look_is_banned_for_a_while() -> None:
    bans = Bans(threshold=100)
    flood(bans, "198.51.100.1", 99)
    flood(bans, "198.51.100.2", 100)
    assert bans.update(1.0)
    assert bans.banned == {"198.51.100.2"}
    flood(bans, "198.51.100.1", 50)  # counts start again after each look
    assert not bans.update(2.0)
    assert not bans.update(1.0 + BAN_SECONDS - 0.1)
    assert bans.update(1.0 + BAN_SECONDS)
    assert bans.banned == frozenset()


def test_a_host_banned_again_soon_is_banned_twice_as_long_up_to_a_limit() -> None:
    bans = Bans(threshold=10)
    now, lengths = 0.0, []
    for _ in range(8):
        flood(bans, "203.0.113.9", 10)
        assert bans.update(now)
        start = now
        while bans.banned:
            now += 1.0
            bans.update(now)
        lengths.append(now - start)
    assert lengths == [10, 20, 40, 80, 160, 320, 320, 320]
    # Quiet for long enough: the next ban is a first one again.
    now += MAX_BAN_SECONDS + 320 + 1
    flood(bans, "203.0.113.9", 10)
    bans.update(now)
    start = now
    while bans.banned:
        now += 1.0
        bans.update(now)
    assert now - start == BAN_SECONDS


def test_bans_and_counting_are_bounded() -> None:
    bans = Bans(threshold=1)
    for i in range(10_000):
        bans.refused(f"2001:db8::{i:x}")
    assert bans.update(0.0)
    assert len(bans.banned) == MAX_BANNED


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3000)), max_size=40))
def test_never_more_than_the_limit_and_every_ban_ends(looks: list[tuple[int, int]]) -> None:
    bans = Bans(threshold=50)
    now = 0.0
    for host, times in looks:
        flood(bans, f"192.0.2.{host}", times)
        now += 1.0
        bans.update(now)
        assert len(bans.banned) <= MAX_BANNED
    bans.update(now + MAX_BAN_SECONDS)
    assert bans.banned == frozenset()


def test_the_door_tells_the_bans_of_every_refusal() -> None:
    bans = Bans(threshold=30)
    budget = VerifyBudget(per_source=1.0, per_source_burst=20, bans=bans)
    admitted = sum(budget.admit("198.51.100.7", 0.0) for _ in range(50))
    assert admitted == 20
    assert bans.update(0.5)
    assert bans.banned == {"198.51.100.7"}  # 30 refused: as many as make a flooder


RULES = PrefilterRules.for_clients((3,), [5])


def valid(n: int) -> bytes:
    """A Data datagram the rules pass, told apart by its body."""
    return struct.pack(">BBHHHIQ", 3, 4, 60, 5, 0, 1, 2) + n.to_bytes(60, "big")


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@contextlib.contextmanager
def bound(family: socket.AddressFamily, host: str) -> Iterator[socket.socket]:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        yield sock


def received(receiver: socket.socket) -> list[bytes]:
    got = []
    while select.select([receiver], [], [], 0.2)[0]:
        got.append(receiver.recv(4096))
    return got


@linux_only
@pytest.mark.parametrize(
    ("family", "bind", "flooder", "other", "banned"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.2"),
        # A dual-stack socket: the ban names the IPv4 address, or its mapped form.
        (socket.AF_INET6, "::", "127.0.0.2", "127.0.0.3", "::ffff:127.0.0.2"),
        (socket.AF_INET6, "::", "::1", "127.0.0.3", "::1"),
    ],
)
def test_the_kernel_drops_everything_from_a_banned_host(
    family: socket.AddressFamily, bind: str, flooder: str, other: str, banned: str
) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    with (
        bound(family, bind) as receiver,
        bound(family_of(flooder), flooder) as bad,
        bound(socket.AF_INET, other) as good,
    ):
        assert attach_filter(receiver, build_server_filter(RULES, banned=[banned]))
        port = receiver.getsockname()[1]
        target = ("127.0.0.1", port)
        for i in range(20):
            bad.sendto(valid(i), ("::1" if ":" in flooder else "127.0.0.1", port))
            good.sendto(valid(100 + i), target)
        assert sorted(received(receiver)) == [valid(100 + i) for i in range(20)]
        # The rules still hold for everyone else.
        good.sendto(b"\xff" * 40, target)
        good.sendto(valid(7), target)
        assert received(receiver) == [valid(7)]
