"""Errors of the tunnel device layer: opening devices and configuring interfaces."""

from __future__ import annotations

from trio_sudp.protocol.errors import SUDPError


class TunError(SUDPError):
    """A tunnel device could not be opened or used.

    ``reason`` is one human line saying what failed and what to do about it;
    ``errno`` is the underlying OS error number when there is one.
    """

    def __init__(self, reason: str, errno: int | None = None) -> None:
        self.reason = reason
        self.errno = errno
        super().__init__(reason)


class NetConfigError(TunError):
    """An address, MTU or route could not be set, looked up or removed."""
