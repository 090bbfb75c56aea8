"""Timers and limits of a session. Defaults are the Go peers' (SPEC §4); all configurable."""

from __future__ import annotations

import math
from typing import Any

import attrs

from .constants import Version
from .errors import ConfigError

#: Handshake resends (seconds after the first send) and give-up time of the Go peers.
GO_RETRY_SCHEDULE = {
    Version.V2: ((2.5, 4.5, 7.0), 9.0),
    Version.V3: ((2.0, 4.5, 7.0, 9.0), 11.5),
}


def _positive(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{attr.name} must be a positive number of seconds, not {value!r}")


def _optional_positive(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(_inst, attr, value)


def _schedule(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if any(not (isinstance(v, int | float) and math.isfinite(v) and v > 0) for v in value) or list(
        value
    ) != sorted(value):
        raise ConfigError(f"{attr.name} must be increasing positive numbers, not {value!r}")


def _count(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attr.name} must be a positive integer, not {value!r}")


@attrs.frozen(kw_only=True)
class SessionSettings:
    """Per-session timers and limits.

    ``handshake_retries``/``handshake_timeout`` left as ``None`` take the Go schedule of
    the peer's version: v2 resends at 2.5, 4.5, 7 s and gives up at 9 s; v3 at 2, 4.5,
    7, 9 s and gives up at 11.5 s. Every resend is re-stamped and re-signed.
    """

    #: Client KeepAlive period once connected.
    keepalive_interval: float = attrs.field(default=0.5, validator=_positive)
    #: Skip a KeepAlive when data was sent within the last interval (data is life too).
    keepalive_skip_after_data: bool = True
    #: Client-driven rekey period (``None``: never rekey).
    rekey_interval: float | None = attrs.field(default=30.0, validator=_optional_positive)
    handshake_retries: tuple[float, ...] | None = attrs.field(default=None, validator=_schedule)
    handshake_timeout: float | None = attrs.field(default=None, validator=_optional_positive)
    #: Server: forget a peer with no accepted message for this long.
    idle_expiry: float = attrs.field(default=5.0, validator=_positive)
    #: The first authenticated message may differ from our clock by at most this much.
    max_clock_skew: float = attrs.field(default=10.0, validator=_positive)
    #: Later messages older than this (after the offset) are dropped as stale.
    freshness: float = attrs.field(default=5.0, validator=_positive)
    #: Messages this far in the future are dropped (Go has no bound; v2 CRC forgeries).
    max_future: float = attrs.field(default=5.0, validator=_positive)
    #: Client: rekey early when data was sent this long with nothing but KeepAliveAcks
    #: coming back (SPEC §7 silence rule). ``None`` disables it.
    silence_rekey_after: float | None = attrs.field(default=2.0, validator=_optional_positive)
    #: Client: rekey when nothing at all came from the server for this long.
    dead_server_after: float | None = attrs.field(default=5.0, validator=_optional_positive)
    #: After a rekey, keep the previous epoch's key this long: data sent under it is
    #: still crossing, and after freshness + max_future it would be refused anyway.
    previous_key_lifetime: float = attrs.field(default=10.0, validator=_positive)
    #: Client: after a failed handshake, start again (a VPN never gives up).
    reconnect: bool = True
    #: Replay defence: counter window for trio-sudp peers' nonces ...
    replay_window: int = attrs.field(default=8192, validator=_count)
    #: ... and how many random (Go) nonces are remembered per epoch key.
    replay_memory: int = attrs.field(default=8192, validator=_count)
    #: Accept the Go v2 signer's left-aligned short r/s fields (v2 only, SPEC §6).
    tolerate_v2_left_aligned: bool = True

    def retry_schedule(self, version: Version) -> tuple[tuple[float, ...], float]:
        """Resend times and give-up time of a handshake for ``version``."""
        go_retries, go_timeout = GO_RETRY_SCHEDULE[version]
        retries = go_retries if self.handshake_retries is None else self.handshake_retries
        timeout = go_timeout if self.handshake_timeout is None else self.handshake_timeout
        if retries and retries[-1] >= timeout:
            raise ConfigError("handshake_timeout must come after the last handshake retry")
        return retries, timeout
