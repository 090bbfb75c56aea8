"""Tunnel MTU: defaults, limits, and the ICMP answer to an inner packet that is too big.

An inner packet travels as the payload of one SUDP Data message, so the tunnel MTU
is what is left of the outer link MTU (1500) after the outer IP and UDP headers, the
SUDP header and the Data overhead: 1420 for v2 and 1400 for v3 over IPv4 (SPEC §2, §5).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ..protocol.constants import HEADER_SIZE, Version, data_overhead, max_payload
from ..protocol.errors import ConfigError
from .packet import icmpv4_frag_needed, icmpv6_packet_too_big

__all__ = [
    "IPV6_MIN_MTU",
    "LINK_MTU",
    "MIN_TUNNEL_MTU",
    "check_mtu",
    "default_tunnel_mtu",
    "max_tunnel_mtu",
    "too_big_reply",
    "tunnel_mtu",
    "validate_tunnel_mtu",
]

#: The outer link MTU the defaults assume (Ethernet).
LINK_MTU: Final = 1500
#: Every IPv4 host must accept 576-byte datagrams (RFC 791); we go no lower.
MIN_TUNNEL_MTU: Final = 576
#: IPv6 needs every link to carry 1280 bytes (RFC 8200 §5).
IPV6_MIN_MTU: Final = 1280
_UDP_HEADER: Final = 8

_FITS: Final[tuple[bool, bytes | None]] = (True, None)


def default_tunnel_mtu(version: Version, outer_ipv6: bool = False) -> int:
    """1500 − outer IP (20, or 40 over IPv6) − UDP (8) − SUDP header − Data overhead.

    1420 (v2) / 1400 (v3) over IPv4; 1400 / 1380 over IPv6.
    """
    outer_ip = 40 if outer_ipv6 else 20
    return LINK_MTU - outer_ip - _UDP_HEADER - HEADER_SIZE - data_overhead(Version(version))


def tunnel_mtu(configured: int | None, versions: Iterable[Version]) -> int:
    """The tunnel MTU: ``configured``, else the smallest default of the versions in use.

    The one rule ``check``, ``show`` and ``serve`` share: a server passes its clients'
    versions (or its default version when it has none), a client its server's.
    """
    if configured is not None:
        return configured
    return min(default_tunnel_mtu(v) for v in versions)


def max_tunnel_mtu(version: Version) -> int:
    """The largest inner packet a Go peer can read in one datagram: 1996 (v2) / 1976 (v3)."""
    return max_payload(Version(version))


def validate_tunnel_mtu(mtu: int, version: Version, *, ipv6: bool = True) -> int:
    """Return ``mtu`` if it is usable for ``version``; raise :class:`ConfigError` if not.

    The floor is 1280 when the tunnel carries IPv6, 576 otherwise; the ceiling is
    :func:`max_tunnel_mtu` (a larger packet would crash a Go peer).
    """
    floor = IPV6_MIN_MTU if ipv6 else MIN_TUNNEL_MTU
    ceiling = max_tunnel_mtu(version)
    if not isinstance(mtu, int) or isinstance(mtu, bool):
        raise ConfigError(f"tunnel MTU must be an integer, not {mtu!r}")
    if mtu < floor:
        why = "IPv6 needs at least 1280" if ipv6 else "IPv4 hosts must accept 576"
        raise ConfigError(f"tunnel MTU {mtu} is too small: {why}")
    if mtu > ceiling:
        raise ConfigError(
            f"tunnel MTU {mtu} is too large for SUDP v{int(version)}: a Go peer reads at "
            f"most {ceiling} bytes of payload per datagram"
        )
    return mtu


def too_big_reply(
    packet: bytes, mtu: int, *, source_v4: bytes | None = None, source_v6: bytes | None = None
) -> bytes | None:
    """The ICMP error to send back for ``packet``, too big for a tunnel of ``mtu`` bytes.

    ICMPv4 Fragmentation Needed from ``source_v4`` or ICMPv6 Packet Too Big from
    ``source_v6`` (raw 4 / 16 bytes: the router's tunnel address), addressed to the
    packet's source. None when no reply is due (see :mod:`trio_sudp.vpn.packet`) or
    no source address of that family is known.
    """
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        return None if source_v4 is None else icmpv4_frag_needed(packet, mtu, source_v4)
    if version == 6:
        return None if source_v6 is None else icmpv6_packet_too_big(packet, mtu, source_v6)
    return None


def check_mtu(
    packet: bytes, mtu: int, *, source_v4: bytes | None = None, source_v6: bytes | None = None
) -> tuple[bool, bytes | None]:
    """Check an inner packet against the tunnel MTU: ``(fits, icmp_reply)``.

    ``(True, None)`` if it fits. Otherwise ``(False, reply)``: drop the packet and
    count it, and send ``reply`` (if not None) back towards the packet's source.
    """
    if len(packet) <= mtu:
        return _FITS
    return False, too_big_reply(packet, mtu, source_v4=source_v4, source_v6=source_v6)
