"""The server's cheapest checks on a datagram's header, before any session sees it.

A datagram a correct client sends to the server always passes the header checks of
:class:`PrefilterRules` (SPEC §1-§2): its size is 20..2048 bytes, its version is one
the server speaks, its kind is ClientHandshake, Control or Data, its dst is the
server (0), its src lies in the range of configured client addresses, and its ``len``
fits the datagram and is the exact body size of a handshake or control of that
version (a data body is at least its overhead). Anything else is garbage.

:func:`prefilter_reason` applies them in Python; ``runtime/prefilter.py`` compiles the
same rules into a kernel socket filter.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

import attrs

from .constants import (
    HEADER_SIZE,
    MAX_CLIENT_VADDR,
    MAX_DATAGRAM,
    SERVER_VADDR,
    Kind,
    Version,
    control_body_size,
    data_overhead,
    handshake_body_size,
)
from .errors import DropReason

__all__ = ["MAX_LEN", "PrefilterRules", "prefilter_reason"]

#: The largest value of the header's u16 ``len``.
MAX_LEN: Final = 0xFFFF


def _version_set(versions: Iterable[int]) -> frozenset[Version]:
    return frozenset(Version(v) for v in versions)


def _check_vaddr(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= MAX_CLIENT_VADDR:
        raise ValueError(f"{attribute.name} must be a client address 1..{MAX_CLIENT_VADDR}")


@attrs.frozen(slots=True)
class PrefilterRules:
    """The header checks every datagram from a correct client to this server passes.

    ``versions``: the wire versions the server's clients speak; ``vaddr_min`` ..
    ``vaddr_max``: the range of their virtual addresses (an empty range, min > max,
    refuses everything). Build them with :meth:`for_clients`.
    """

    versions: frozenset[Version] = attrs.field(converter=_version_set)
    vaddr_min: int = attrs.field(validator=_check_vaddr)
    vaddr_max: int = attrs.field(validator=_check_vaddr)
    # rows[ver][kind] -> (lowest, highest) body length, or None: the lookup
    # prefilter_reason makes instead of testing version and kind one by one.
    _rows: tuple[tuple[tuple[int, int] | None, ...] | None, ...] = attrs.field(
        init=False, repr=False, eq=False
    )

    @_rows.default
    def _make_rows(self) -> tuple[tuple[tuple[int, int] | None, ...] | None, ...]:
        bodies = self.body_lengths()
        rows: list[tuple[tuple[int, int] | None, ...] | None] = [None] * 256
        for version in self.versions:
            by_kind = {int(kind): b for (v, kind), b in bodies.items() if v == version}
            rows[version] = tuple(by_kind.get(kind) for kind in range(256))
        return tuple(rows)

    @classmethod
    def for_clients(cls, versions: Iterable[int], vaddrs: Iterable[int]) -> PrefilterRules:
        """Rules for a server whose clients speak ``versions`` and have addresses ``vaddrs``.

        With no client configured, every datagram is refused.
        """
        addresses = sorted(vaddrs)
        if not addresses:
            return cls(versions, MAX_CLIENT_VADDR, 1)
        return cls(versions, addresses[0], addresses[-1])

    def body_lengths(self) -> dict[tuple[Version, Kind], tuple[int, int]]:
        """``(version, kind) -> (lowest, highest)`` ``len`` a correct client sends.

        A client never sends a ServerHandshake: that kind is not among them. A Data
        body holds at least the nonce, the inner header tag and the GCM tag (32 / 52
        bytes): a shorter one could only fail authentication later.
        """
        bounds: dict[tuple[Version, Kind], tuple[int, int]] = {}
        for version in self.versions:
            handshake = handshake_body_size(version)
            control = control_body_size(version)
            bounds[version, Kind.CLIENT_HANDSHAKE] = (handshake, handshake)
            bounds[version, Kind.CONTROL] = (control, control)
            bounds[version, Kind.DATA] = (data_overhead(version), MAX_LEN)
        return bounds


_LEN_SRC_DST = struct.Struct(">HHH").unpack_from
_TOO_SHORT = DropReason.DATAGRAM_TOO_SHORT
_TOO_LONG = DropReason.DATAGRAM_TOO_LONG
_BAD_VERSION = DropReason.BAD_VERSION
_BAD_KIND = DropReason.BAD_KIND
_UNEXPECTED_KIND = DropReason.UNEXPECTED_KIND
_LEN_EXCEEDS = DropReason.LEN_EXCEEDS_DATAGRAM
_BODY_TOO_SHORT = DropReason.BODY_TOO_SHORT
_BODY_TOO_LONG = DropReason.BODY_TOO_LONG
_WRONG_VADDR = DropReason.WRONG_VADDR
_UNKNOWN_PEER = DropReason.UNKNOWN_PEER


def prefilter_reason(datagram: bytes, rules: PrefilterRules) -> DropReason | None:
    """Why ``datagram`` fails ``rules``, or ``None`` when it passes. Builds nothing.

    The checks, in this order: size, version, kind, ``len`` against the size and the
    kind's body size, dst, src. The same as the kernel filter of
    :func:`build_server_filter` (without ``coalesced``) accepts.
    """
    size = len(datagram)
    if size < HEADER_SIZE:
        return _TOO_SHORT
    if size > MAX_DATAGRAM:
        return _TOO_LONG
    row = rules._rows[datagram[0]]
    if row is None:
        return _BAD_VERSION
    bounds = row[datagram[1]]
    if bounds is None:
        return _UNEXPECTED_KIND if 1 <= datagram[1] <= 4 else _BAD_KIND
    length, src, dst = _LEN_SRC_DST(datagram, 2)
    if length > size - HEADER_SIZE:
        return _LEN_EXCEEDS
    lowest, highest = bounds
    if length < lowest:
        return _BODY_TOO_SHORT
    if length > highest:
        return _BODY_TOO_LONG
    if dst != SERVER_VADDR:
        return _WRONG_VADDR
    if not rules.vaddr_min <= src <= rules.vaddr_max:
        return _UNKNOWN_PEER
    return None
