"""The transport address type the protocol core passes through without looking inside."""

from __future__ import annotations

from typing import TypeAlias

#: Where a datagram came from or goes: ``(host, port)`` for IPv4 and the fake network,
#: the 4-tuple ``recvfrom`` returns for IPv6. Hashable and comparable; the core only
#: compares and stores it.
Address: TypeAlias = tuple[str, int] | tuple[str, int, int, int]
