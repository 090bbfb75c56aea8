"""One peer's SUDP state machine, sans-IO (SPEC §4, §6, §7).

A session is fed datagrams and time and answers with payloads, datagrams to send and
events; it never touches a socket or reads a clock by itself. Every method takes the
monotonic ``now`` (seconds) from its caller; message timestamps come from the one
:class:`~trio_sudp.protocol.clock.WallClock` it was built with.

- :class:`ClientSession` is the active side: it handshakes, sends KeepAlives, rekeys,
  and notices a server that lost its state (NoSession hint, silence rule).
- :class:`ServerPeerSession` is the passive side's view of one client: it answers
  handshakes and KeepAlives, promotes epochs, follows the client's endpoint and
  forgets it when idle. :class:`~trio_sudp.protocol.server.ServerCore` routes datagrams
  to these by the header's ``src``.

Datagrams to send are collected in ``Session.outbox`` and events in ``Session.events``
until the driver takes them (:meth:`Session.take_datagrams`,
:meth:`Session.take_events`). Data payloads are returned directly by
:meth:`Session.receive` (or :meth:`Session.receive_many`, for a burst) and encrypted
directly by :meth:`Session.send`, which are the per-packet fast paths.
"""

from __future__ import annotations

import enum
import math
import secrets
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs
from cryptography.exceptions import InvalidTag

from .clock import SystemClock, WallClock
from .constants import (
    GCM_TAG_SIZE,
    HEADER_SIZE,
    MAX_DATAGRAM,
    NONCE_SIZE,
    SERVER_VADDR,
    ControlFlag,
    Kind,
    Version,
    data_overhead,
    max_payload,
    tag_size,
    timestamp_unit_us,
)
from .crypto import EphemeralKey, PrivateKey, constant_time_equal
from .epochs import EpochKey, EpochSet
from .errors import BadPacket, DropReason, NotConnected, PayloadTooLarge
from .events import (
    Connected,
    Event,
    Expired,
    HandshakeFailed,
    HandshakeStarted,
    PacketDropped,
    Rekeyed,
    Roamed,
    SessionLost,
)
from .peers import LocalIdentity, Peer
from .settings import SessionSettings
from .wire import (
    HEADER_STRUCT,
    ControlMessage,
    DataMessage,
    HandshakeMessage,
    decode_untrusted,
    encode_control,
    encode_handshake,
    verify_control,
    verify_handshake,
)

__all__ = [
    "ClientSession",
    "RefusalCode",
    "ServerPeerSession",
    "Session",
    "SessionState",
    "SessionStats",
]

Address = Any
_INF: Final = math.inf
_EPOCH_MOD: Final = 1 << 32
_MIN_DATA_BODY: Final = NONCE_SIZE + GCM_TAG_SIZE
_DATA_START: Final = HEADER_SIZE + NONCE_SIZE
_unpack_header = HEADER_STRUCT.unpack_from
#: The header and the nonce of a Data datagram, as the data path reads and writes them:
#: (ver << 8 | kind, len, src << 16 | dst, epoch, time, nonce prefix, nonce counter).
_DATA_HEAD: Final = struct.Struct(">HHIIQIQ")
_unpack_data_head = _DATA_HEAD.unpack_from
_pack_data_head = _DATA_HEAD.pack
_MIN_DATA_DATAGRAM: Final = HEADER_SIZE + _MIN_DATA_BODY
_crc32 = zlib.crc32
_crc_tag = struct.Struct(">I").pack


def _ns_clock(clock: WallClock) -> Callable[[], int]:
    """``clock`` in nanoseconds; the system clock without a Python call in between."""
    if type(clock) is SystemClock:
        return time.time_ns
    now_us = clock.now_us
    return lambda: now_us() * 1000


class SessionState(enum.Enum):
    """Where a session stands."""

    IDLE = "idle"  #: not started (client) or no session with this client (server)
    HANDSHAKING = "handshaking"  #: no key yet; a handshake is under way or will be retried
    ESTABLISHED = "established"  #: a current key exists; data flows
    FAILED = "failed"  #: the client gave up (``reconnect=False``)
    CLOSED = "closed"  #: closed by the local side


class RefusalCode(enum.IntEnum):
    """Why a trio-sudp server refused a ClientHandshake (Control ``data`` with NoSession).

    A trio-sudp extension in the spirit of SPEC §7: the server answers a refused
    handshake with a signed Control carrying the NoSession flag and one of these codes
    in the epoch of the handshake. Go clients ignore it.
    """

    BAD_SIGNATURE = 1
    CLOCK_SKEW = 2
    HEADER_TAG_MISMATCH = 3


_REFUSAL_TEXT: Final = {
    RefusalCode.BAD_SIGNATURE: (
        "the server refused our handshake: it does not accept this client's key (key mismatch)"
    ),
    RefusalCode.CLOCK_SKEW: (
        "the server refused our handshake: our clocks differ by more than the allowed skew"
    ),
    RefusalCode.HEADER_TAG_MISMATCH: (
        "the server refused our handshake: header tag mismatch (wrong v3 shared key?)"
    ),
}


@attrs.define
class SessionStats:
    """Counters of one session. Bytes are whole datagrams as sent or received."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    handshakes: int = 0
    drops: Counter[DropReason] = attrs.field(factory=Counter)


class _SignatureMemory:
    """Signed messages already accepted, so that a replay cannot move an endpoint.

    Keyed by the signature's ``r`` without leading or trailing zero bytes, which is
    the same for its Go v2 left-aligned form and for the malleable ``(r, n - s)``.
    """

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = 64) -> None:
        self._entries: dict[bytes, float] = {}
        self._limit = limit

    def seen(self, signature: bytes, now: float, keep_for: float) -> bool:
        key = signature[:32].strip(b"\0")
        entries = self._entries
        if key in entries:
            return True
        # Every entry is kept equally long, so insertion order is expiry order: the
        # expired ones are at the front. A few live entries suffice (a keepalive
        # every 0.5 s), so the memory of an idle peer stays small.
        for old, until in list(entries.items()):
            if until >= now and len(entries) < self._limit:
                break
            del entries[old]
        entries[key] = now + keep_for
        return False

    def clear(self) -> None:
        self._entries.clear()


class Session:
    """What clients and server-side peer sessions share: keys, time checks, data path."""

    # Slots: a server holds one session per configured client (an instance dict
    # would cost ~1.2 KB each). The subclasses' attributes are here too.
    __slots__ = (
        "_attempt",
        "_blake",
        "_closed",
        "_connected",
        "_data_kind",
        "_ever_connected",
        "_failed",
        "_failures",
        "_first_epoch",
        "_fixed_source",
        "_fresh_us",
        "_future_limit",
        "_future_us",
        "_last_data_received_at",
        "_last_data_sent_at",
        "_last_detail",
        "_last_epoch",
        "_last_problem",
        "_last_reason",
        "_max_payload",
        "_max_skew_us",
        "_next_keepalive",
        "_ns_per_unit",
        "_overhead",
        "_own_vaddr",
        "_peer_vaddr",
        "_previous_until",
        "_private_key",
        "_reconnect_at",
        "_retries",
        "_rx_route",
        "_signatures",
        "_silence_watched",
        "_started",
        "_tag_len",
        "_tagger",
        "_time_ns",
        "_timeout",
        "_tolerant",
        "_tx_route",
        "_unanswered_since",
        "_unit",
        "_wall",
        "clock",
        "endpoint",
        "epochs",
        "events",
        "last_handshake_at",
        "last_received_at",
        "local",
        "offset_us",
        "outbox",
        "owner",
        "peer",
        "server_side",
        "settings",
        "stats",
        "timers_changed",
        "version",
    )

    def __init__(
        self,
        *,
        local: LocalIdentity,
        peer: Peer,
        settings: SessionSettings,
        clock: WallClock,
        server_side: bool,
    ) -> None:
        self.local = local
        self.peer = peer
        self.version: Version = peer.version
        self.settings = settings
        self.clock = clock
        self.server_side = server_side
        self.epochs = EpochSet()
        self.stats = SessionStats()
        #: Where the peer's datagrams come from and ours go (``None``: unknown yet).
        self.endpoint: Address = None
        #: local wall clock minus the peer's, fixed by its first authenticated message.
        self.offset_us: int | None = None
        #: Monotonic time of the last completed handshake.
        self.last_handshake_at: float | None = None
        #: Monotonic time of the last authenticated message from the peer.
        self.last_received_at: float | None = None
        #: Set when a timer deadline may have moved earlier; the driver clears it.
        self.timers_changed = False
        #: Free for the driver: the runtime keeps its per-peer object here.
        self.owner: Any = None
        #: When the previous epoch's key is dropped (set at each rekey).
        self._previous_until: float | None = None
        #: Events not yet taken by the driver (see :meth:`take_events`).
        self.events: list[Event] = []
        #: Datagrams to send, with their destination, not yet taken by the driver.
        self.outbox: list[tuple[bytes, Address]] = []
        self._signatures = _SignatureMemory()
        # Hot-path constants
        self._private_key: PrivateKey = local.private_key
        self._wall: Callable[[], int] = clock.now_us
        #: The same clock in ns, and how many ns a header ``time`` unit is.
        self._time_ns = _ns_clock(clock)
        self._ns_per_unit = 1000 * timestamp_unit_us(peer.version)
        #: Data header fields packed as ``_DATA_HEAD`` packs them.
        self._data_kind = peer.version << 8 | Kind.DATA
        self._rx_route = peer.vaddr << 16 | local.vaddr
        self._tx_route = local.vaddr << 16 | peer.vaddr
        #: v3: fresh keyed BLAKE2b states for the header tag; v2 (CRC-32): ``None``.
        self._blake = peer.tag_state
        self._unit = timestamp_unit_us(peer.version)
        self._tagger = peer.tagger
        self._tag_len = tag_size(peer.version)
        self._overhead = data_overhead(peer.version)
        self._max_payload = max_payload(peer.version)
        self._own_vaddr = local.vaddr
        self._peer_vaddr = peer.vaddr
        self._max_skew_us = round(settings.max_clock_skew * 1e6)
        self._fresh_us = round(settings.freshness * 1e6)
        self._future_us = round(settings.max_future * 1e6)
        self._future_limit = -self._future_us
        #: Clients accept datagrams from their server's address only.
        self._fixed_source: Address | None = None
        self._last_data_sent_at: float = -_INF
        self._last_data_received_at: float = -_INF
        #: First data sent since the peer last sent something other than a KeepAliveAck.
        self._unanswered_since: float | None = None
        #: Whether a timer waits on ``_unanswered_since`` (a client's silence rule).
        self._silence_watched = not server_side and settings.silence_rekey_after is not None
        self._tolerant = settings.tolerate_v2_left_aligned and peer.version == Version.V2
        #: The latest drop, for handshake failure messages.
        self._last_reason: DropReason | None = None
        self._last_detail = ""
        self._last_problem: str | None = None

    # ----------------------------------------------------------------- outputs

    def take_datagrams(self) -> list[tuple[bytes, Address]]:
        """Datagrams to send, with their destination, since the last call."""
        out = self.outbox
        self.outbox = []
        return out

    def take_events(self) -> list[Event]:
        """Events since the last call."""
        out = self.events
        self.events = []
        return out

    @property
    def state(self) -> SessionState:
        raise NotImplementedError

    # ----------------------------------------------------------------- data path

    def send(self, payload: bytes, now: float) -> bytes:
        """Encrypt ``payload`` under the current epoch; return the datagram for ``endpoint``.

        Raises :class:`NotConnected` without a key and :class:`PayloadTooLarge` above
        1996 (v2) / 1976 (v3) bytes.
        """
        key = self.epochs.current
        if key is None or self.endpoint is None:
            raise NotConnected("no session key with this peer yet")
        size = len(payload)
        if size > self._max_payload:
            raise PayloadTooLarge(
                f"payload of {size} bytes exceeds the SUDP v{self.version} limit "
                f"{self._max_payload}"
            )
        counter = key.nonce_counter = key.nonce_counter + 1
        head = _pack_data_head(
            self._data_kind,
            size + self._overhead,
            self._tx_route,
            key.epoch,
            self._time_ns() // self._ns_per_unit,
            key.nonce_prefix,
            counter,
        )
        header = head[:HEADER_SIZE]
        blake = self._blake
        if blake is None:
            tag = _crc_tag(_crc32(header))
        else:
            state = blake()
            state.update(header)
            tag = state.digest()
        datagram = head + key.aead.encrypt(head[HEADER_SIZE:], tag + payload, None)
        stats = self.stats
        stats.tx_packets += 1
        stats.tx_bytes += len(datagram)
        self._last_data_sent_at = now
        if self._unanswered_since is None:
            self._unanswered_since = now
            if self._silence_watched:
                self.timers_changed = True  # the silence deadline (SPEC §7) starts now
        return datagram

    def receive(self, datagram: bytes, address: Address, now: float) -> bytes | None:
        """Process one datagram from ``address``; return its payload if it is accepted data.

        Never raises for anything in the datagram: a rejected one is counted in
        ``stats.drops`` and reported as a :class:`PacketDropped` event.
        """
        # Data is the per-packet fast path; anything else, and Data that fails a
        # cheap check, leaves it through a helper that says why.
        size = len(datagram)
        if size < _MIN_DATA_DATAGRAM:
            self._receive_other(datagram, address, now)
            return None
        kind, length, route, epoch, stamp, prefix, counter = _unpack_data_head(datagram)
        if (
            kind != self._data_kind
            or route != self._rx_route
            or size > MAX_DATAGRAM
            or length > size - HEADER_SIZE
            or length < _MIN_DATA_BODY
            or (self._fixed_source is not None and address != self._fixed_source)
        ):
            self._receive_other(datagram, address, now)
            return None
        epochs = self.epochs
        key = epochs.by_epoch.get(epoch)
        if key is None:
            self._drop(DropReason.UNKNOWN_EPOCH, f"epoch {epoch}")
            return None
        try:
            plaintext = key.aead.decrypt(
                datagram[HEADER_SIZE:_DATA_START],
                datagram[_DATA_START : HEADER_SIZE + length],
                None,
            )
        except InvalidTag:
            self._drop(DropReason.GCM_AUTH_FAIL, f"epoch {epoch}")
            return None
        tlen = self._tag_len
        if len(plaintext) < tlen:
            self._drop(DropReason.PLAINTEXT_TOO_SHORT, f"{len(plaintext)} bytes")
            return None
        header = datagram[:HEADER_SIZE]
        blake = self._blake
        if blake is None:
            tag = _crc_tag(_crc32(header))
        else:
            state = blake()
            state.update(header)
            tag = state.digest()
        if not constant_time_equal(plaintext[:tlen], tag):
            self._drop(DropReason.INNER_TAG_MISMATCH)
            return None
        offset = self.offset_us
        if offset is None:
            if not self._fresh(stamp):
                return None
        else:
            age = self._time_ns() // 1000 - stamp * self._unit - offset
            if (age > self._fresh_us or age < self._future_limit) and not self._fresh(stamp):
                return None
        replay = key.replay
        if prefix == replay.prefix and counter == replay.next_counter:
            replay.next_counter = counter + 1
        elif not replay.check(prefix, counter):
            self._drop(DropReason.REPLAY, f"epoch {epoch}")
            return None
        if key is epochs.pending:
            self._promote(now)
        self.last_received_at = self._last_data_received_at = now
        self._unanswered_since = None
        if address != self.endpoint:
            self._endpoint_changed(address)
        stats = self.stats
        stats.rx_packets += 1
        stats.rx_bytes += size
        return plaintext[tlen:]

    def receive_many(self, datagrams: Iterable[tuple[bytes, Address]], now: float) -> list[bytes]:
        """:meth:`receive` for datagrams that arrived together; the accepted payloads, in order.

        The same as calling :meth:`receive` on each ``(datagram, address)`` in turn,
        except that the wall clock is read once for the whole batch, which arrived at
        ``now``; per-packet work that need not be repeated is done once.
        """
        payloads: list[bytes] = []
        append = payloads.append
        data_kind = self._data_kind
        rx_route = self._rx_route
        fixed = self._fixed_source
        blake = self._blake
        tlen = self._tag_len
        unit = self._unit
        wall_us = self._time_ns() // 1000
        accepted = received = 0
        reload = True
        for datagram, address in datagrams:
            if reload:
                # Anything but plain data may have changed these: read them again.
                reload = False
                epochs = self.epochs
                by_epoch = epochs.by_epoch
                pending = epochs.pending
                endpoint = self.endpoint
                offset = self.offset_us
                if offset is None:  # the first message fixes it: leave that to receive()
                    low, high = 1, 0
                else:  # the header times that receive() finds fresh (see _fresh)
                    low = -((offset + self._fresh_us - wall_us) // unit)
                    high = (wall_us - offset - self._future_limit) // unit
            size = len(datagram)
            key = None
            if _MIN_DATA_DATAGRAM <= size <= MAX_DATAGRAM:
                kind, length, route, epoch, stamp, prefix, counter = _unpack_data_head(datagram)
                if (
                    kind == data_kind
                    and route == rx_route
                    and _MIN_DATA_BODY <= length <= size - HEADER_SIZE
                    and (fixed is None or address == fixed)
                    and low <= stamp <= high
                ):
                    key = by_epoch.get(epoch)
            if key is None:
                # Not fresh data in a known epoch: receive() takes it, in order.
                if accepted:
                    self._data_received(accepted, received, now)
                    accepted = received = 0
                payload = self.receive(datagram, address, now)
                if payload is not None:
                    append(payload)
                reload = True
                continue
            try:
                plaintext = key.aead.decrypt(
                    datagram[HEADER_SIZE:_DATA_START],
                    datagram[_DATA_START : HEADER_SIZE + length],
                    None,
                )
            except InvalidTag:
                self._drop(DropReason.GCM_AUTH_FAIL, f"epoch {epoch}")
                continue
            if len(plaintext) < tlen:
                self._drop(DropReason.PLAINTEXT_TOO_SHORT, f"{len(plaintext)} bytes")
                continue
            header = datagram[:HEADER_SIZE]
            if blake is None:
                tag = _crc_tag(_crc32(header))
            else:
                state = blake()
                state.update(header)
                tag = state.digest()
            if not constant_time_equal(plaintext[:tlen], tag):
                self._drop(DropReason.INNER_TAG_MISMATCH)
                continue
            replay = key.replay
            if prefix == replay.prefix and counter == replay.next_counter:
                replay.next_counter = counter + 1
            elif not replay.check(prefix, counter):
                self._drop(DropReason.REPLAY, f"epoch {epoch}")
                continue
            if key is pending:
                self._promote(now)
                reload = True
            if address != endpoint:
                self._endpoint_changed(address)
                endpoint = address
            accepted += 1
            received += size
            append(plaintext[tlen:])
        if accepted:
            self._data_received(accepted, received, now)
        return payloads

    def _data_received(self, count: int, size: int, now: float) -> None:
        """Bookkeeping for ``count`` accepted Data datagrams of ``size`` bytes in all."""
        self.last_received_at = self._last_data_received_at = now
        self._unanswered_since = None
        stats = self.stats
        stats.rx_packets += count
        stats.rx_bytes += size

    def _receive_other(self, datagram: bytes, address: Address, now: float) -> None:
        """Everything the data fast path does not take, each drop with its reason."""
        size = len(datagram)
        if size < HEADER_SIZE or size > MAX_DATAGRAM:
            self._bad_size(size)
            return
        ver = datagram[0]
        if ver != self.version:
            self._drop(DropReason.BAD_VERSION, f"version {ver}, peer speaks {self.version}")
        elif datagram[1] == Kind.DATA:
            self._refuse_data(datagram, address)
        else:
            self._receive_signed(datagram, address, now)

    def _refuse_data(self, datagram: bytes, address: Address) -> None:
        """Why the fast path refused a Data datagram of the right version."""
        size = len(datagram)
        _, _, length, src, dst, _, _ = _unpack_header(datagram)
        if length > size - HEADER_SIZE:
            self._drop(DropReason.LEN_EXCEEDS_DATAGRAM, f"len {length}")
        elif length < _MIN_DATA_BODY:
            self._drop(DropReason.BODY_TOO_SHORT, f"data body of {length} bytes")
        elif dst != self._own_vaddr or src != self._peer_vaddr:
            self._drop(DropReason.WRONG_VADDR, f"{src}->{dst}")
        else:
            self._drop(DropReason.WRONG_SOURCE, f"from {address!r}")

    def _bad_size(self, size: int) -> None:
        if size < HEADER_SIZE:
            self._drop(DropReason.DATAGRAM_TOO_SHORT, f"{size} bytes")
        else:
            self._drop(DropReason.DATAGRAM_TOO_LONG, f"{size} bytes")

    def _endpoint_changed(self, address: Address) -> None:
        old = self.endpoint
        self.endpoint = address
        if old is not None:
            self.events.append(Roamed(old, address))

    # ----------------------------------------------------------------- helpers

    def _drop(self, reason: DropReason, detail: str = "") -> None:
        self.stats.drops[reason] += 1
        self.events.append(PacketDropped(reason, detail))
        self._last_reason = reason
        self._last_detail = detail
        self._last_problem = f"{reason.value}: {detail}" if detail else reason.value

    def _fresh(self, remote_time: int) -> bool:
        """Check a message's time against the peer's clock offset (SPEC §4)."""
        now_us = self._wall()
        remote_us = remote_time * self._unit
        offset = self.offset_us
        if offset is None:
            offset = now_us - remote_us
            if abs(offset) > self._max_skew_us:
                self._drop(
                    DropReason.CLOCK_SKEW,
                    f"peer clock differs from ours by {-offset / 1e6:+.1f} s "
                    f"(limit ±{self.settings.max_clock_skew:g} s)",
                )
                return False
            self.offset_us = offset
            return True
        age = now_us - remote_us - offset
        if age > self._fresh_us:
            self._drop(DropReason.STALE, f"{age / 1e6:.1f} s old")
            return False
        if age < -self._future_us:
            self._drop(DropReason.FUTURE, f"{-age / 1e6:.1f} s in the future")
            return False
        return True

    def _now_stamp(self) -> int:
        return self._wall() // self._unit

    def _emit(self, datagram: bytes, address: Address) -> None:
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(datagram)
        self.outbox.append((datagram, address))

    def _control(self, epoch: int, flags: ControlFlag, address: Address, data: int = 0) -> None:
        self._emit(
            encode_control(
                self.version,
                src=self._own_vaddr,
                dst=self._peer_vaddr,
                epoch=epoch,
                time=self._now_stamp(),
                flags=flags,
                data=data,
                tagger=self._tagger,
                signer=self._private_key,
            ),
            address,
        )

    def _new_key(
        self, epoch: int, secret: bytes, client_public: bytes, server_public: bytes
    ) -> EpochKey:
        return EpochKey(
            epoch,
            secret,
            server_side=self.server_side,
            client_public=client_public,
            server_public=server_public,
            replay_window=self.settings.replay_window,
            replay_memory=self.settings.replay_memory,
        )

    def _receive_signed(self, datagram: bytes, address: Address, now: float) -> None:
        """Handshakes and Control: structure, addressing, tag, signature, replay, time."""
        try:
            message = decode_untrusted(datagram, version=self.version)
        except BadPacket as exc:
            self._drop(exc.reason, exc.detail)
            return
        assert not isinstance(message, DataMessage)
        header = message.header
        if header.dst != self._own_vaddr or header.src != self._peer_vaddr:
            self._drop(DropReason.WRONG_VADDR, f"{header.src}->{header.dst}")
            return
        expected = Kind.CLIENT_HANDSHAKE if self.server_side else Kind.SERVER_HANDSHAKE
        if header.kind not in (expected, Kind.CONTROL):
            self._drop(DropReason.UNEXPECTED_KIND, header.kind.name)
            return
        if self._fixed_source is not None and address != self._fixed_source:
            self._drop(DropReason.WRONG_SOURCE, f"from {address!r}")
            return
        try:
            if isinstance(message, HandshakeMessage):
                verify_handshake(
                    message,
                    self._tagger,
                    self.peer.public_key,
                    tolerate_v2_left_aligned=self._tolerant,
                )
            else:
                verify_control(
                    message,
                    self._tagger,
                    self.peer.public_key,
                    tolerate_v2_left_aligned=self._tolerant,
                )
        except BadPacket as exc:
            self._drop(exc.reason, exc.detail)
            self._on_unauthentic(message, exc.reason, address, now)
            return
        if self._signatures.seen(message.signature, now, self.settings.freshness * 2):
            self._drop(DropReason.REPLAY, f"repeated {header.kind.name}")
            return
        if not self._fresh(header.time):
            self._on_untimely(message, address, now)
            return
        self.stats.rx_packets += 1
        self.stats.rx_bytes += len(datagram)
        if isinstance(message, HandshakeMessage):
            self._on_handshake(message, address, now)
        else:
            self._on_control(message, address, now)

    def _retire_previous_later(self, now: float) -> None:
        """After a rekey, keep the previous key only while its data can still be fresh."""
        self._previous_until = now + self.settings.previous_key_lifetime
        self.timers_changed = True

    def _previous_deadline(self) -> float:
        until = self._previous_until
        return _INF if until is None or self.epochs.previous is None else until

    def _retire_previous(self, now: float) -> None:
        if self._previous_until is not None and now >= self._previous_until:
            self._previous_until = None
            self.epochs.drop_previous()

    def _authenticated_from(self, address: Address, now: float) -> None:
        """An authenticated message came from ``address``: the peer is alive there."""
        self.last_received_at = now
        if address != self.endpoint:
            self._endpoint_changed(address)

    # Hooks for the two roles.
    def _promote(self, now: float) -> None:
        raise NotImplementedError

    def _on_handshake(self, message: HandshakeMessage, address: Address, now: float) -> None:
        raise NotImplementedError

    def _on_control(self, message: ControlMessage, address: Address, now: float) -> None:
        raise NotImplementedError

    def _on_unauthentic(
        self,
        message: HandshakeMessage | ControlMessage,
        reason: DropReason,
        address: Address,
        now: float,
    ) -> None:
        pass

    def _on_untimely(
        self, message: HandshakeMessage | ControlMessage, address: Address, now: float
    ) -> None:
        pass

    # ----------------------------------------------------------------- timers

    def next_keepalive_at(self) -> float:
        return _INF

    def next_handshake_at(self) -> float:
        return _INF

    def next_expiry_at(self) -> float:
        return _INF

    def on_keepalive_timer(self, now: float) -> None:
        pass

    def on_handshake_timer(self, now: float) -> None:
        pass

    def on_expiry_timer(self, now: float) -> None:
        pass

    def next_deadline(self) -> float:
        """The earliest time any timer of this session wants to run."""
        return min(self.next_keepalive_at(), self.next_handshake_at(), self.next_expiry_at())

    def poll(self, now: float) -> None:
        """Run every timer that is due at ``now``."""
        if now >= self.next_handshake_at():
            self.on_handshake_timer(now)
        if now >= self.next_expiry_at():
            self.on_expiry_timer(now)
        if now >= self.next_keepalive_at():
            self.on_keepalive_timer(now)


@attrs.define
class _Attempt:
    """A ClientHandshake in flight: its epoch, ephemeral key and retry schedule."""

    epoch: int
    ephemeral: EphemeralKey
    started_at: float
    reason: str
    retries_sent: int = 0


class ClientSession(Session):
    """The client (initiator) side of a session with one server."""

    __slots__ = ()

    def __init__(
        self,
        *,
        local: LocalIdentity,
        server: Peer,
        server_address: Address,
        settings: SessionSettings | None = None,
        clock: WallClock | None = None,
        first_epoch: Callable[[], int] | None = None,
    ) -> None:
        if server.vaddr != SERVER_VADDR:
            raise ValueError(f"the server's virtual address is {SERVER_VADDR}, not {server.vaddr}")
        super().__init__(
            local=local,
            peer=server,
            settings=settings or SessionSettings(),
            clock=clock or SystemClock(),
            server_side=False,
        )
        self.endpoint = server_address
        self._retries, self._timeout = self.settings.retry_schedule(self.version)
        self._first_epoch = first_epoch or (lambda: secrets.randbelow(65536))
        self._attempt: _Attempt | None = None
        self._last_epoch: int | None = None
        self._started = False
        self._failed = False
        self._closed = False
        self._ever_connected = False
        self._reconnect_at: float | None = None
        self._failures = 0
        self._next_keepalive: float = _INF
        self._fixed_source = server_address

    @property
    def state(self) -> SessionState:
        if self._closed:
            return SessionState.CLOSED
        if self.epochs.current is not None:
            return SessionState.ESTABLISHED
        if self._failed:
            return SessionState.FAILED
        if self._started:
            return SessionState.HANDSHAKING
        return SessionState.IDLE

    @property
    def handshake_in_flight(self) -> bool:
        return self._attempt is not None

    def connect(self, now: float) -> None:
        """Start the first handshake."""
        if self._started:
            raise RuntimeError("connect() was already called")
        self._started = True
        self._start_attempt(now, "connect")

    def close(self) -> None:
        """Stop: no more timers. SUDP has no close message; the server just expires us."""
        self._closed = True
        self._attempt = None
        self._reconnect_at = None
        self._next_keepalive = _INF
        self.epochs.clear()
        self.timers_changed = True

    def rekey(self, now: float, reason: str = "rekey") -> None:
        """Start a rekey now (no-op if a handshake is already in flight)."""
        if self._attempt is None and not self._closed:
            self._start_attempt(now, reason)

    # ---------------------------------------------------------------- handshake

    def _start_attempt(self, now: float, reason: str) -> None:
        if self._last_epoch is None:
            epoch = self._first_epoch() % _EPOCH_MOD
        else:
            # Never reuse the epoch of an earlier attempt: a Go server may hold it pending.
            epoch = (self._last_epoch + 1) % _EPOCH_MOD
        self._last_epoch = epoch
        self._attempt = _Attempt(epoch, EphemeralKey.generate(), now, reason)
        self._reconnect_at = None
        self._last_reason = self._last_problem = None
        self._send_client_handshake()
        self.events.append(HandshakeStarted(epoch, reason))
        self.timers_changed = True

    def _send_client_handshake(self) -> None:
        attempt = self._attempt
        assert attempt is not None
        self._emit(
            encode_handshake(
                self.version,
                Kind.CLIENT_HANDSHAKE,
                src=self._own_vaddr,
                dst=self._peer_vaddr,
                epoch=attempt.epoch,
                time=self._now_stamp(),
                ephemeral_public=attempt.ephemeral.public_bytes,
                tagger=self._tagger,
                signer=self._private_key,
            ),
            self.endpoint,
        )

    def _fail_attempt(self, now: float, reason: str) -> None:
        attempt = self._attempt
        assert attempt is not None
        self._attempt = None
        self._failures += 1
        self.events.append(HandshakeFailed(attempt.epoch, reason))
        # The next attempt learns the server's clock afresh.
        self.offset_us = None
        if self.settings.reconnect:
            backoff = min(0.5 * 2 ** (self._failures - 1), 5.0)
            self._reconnect_at = now + backoff
        else:
            self._failed = True
            self.epochs.clear()
            self._next_keepalive = _INF
        self.timers_changed = True

    def _on_handshake(self, message: HandshakeMessage, address: Address, now: float) -> None:
        header = message.header
        attempt = self._attempt
        if attempt is None or attempt.epoch != header.epoch:
            current = self.epochs.current
            if (
                current is not None
                and current.epoch == header.epoch
                and current.server_public == message.ephemeral_public
            ):
                # Our EpochAck was lost and a retry crossed it: acknowledge again.
                self._control(header.epoch, ControlFlag.EPOCH_ACK, self.endpoint)
                return
            self._drop(DropReason.UNEXPECTED_HANDSHAKE, f"epoch {header.epoch} is not pending")
            return
        try:
            secret = attempt.ephemeral.exchange(message.ephemeral_public)
        except BadPacket as exc:
            self._drop(exc.reason, exc.detail)
            return
        key = self._new_key(
            header.epoch, secret, attempt.ephemeral.public_bytes, message.ephemeral_public
        )
        self.epochs.install_current(key)
        self._retire_previous_later(now)
        self._attempt = None
        self._failures = 0
        self.stats.handshakes += 1
        self.last_handshake_at = now
        self.last_received_at = now
        self._unanswered_since = None
        self._control(header.epoch, ControlFlag.EPOCH_ACK, self.endpoint)
        if self._ever_connected:
            self.events.append(Rekeyed(header.epoch))
        else:
            self._ever_connected = True
            self.events.append(Connected(header.epoch, self.endpoint))
        self._next_keepalive = now + self.settings.keepalive_interval
        self.timers_changed = True

    def _on_control(self, message: ControlMessage, address: Address, now: float) -> None:
        flags = message.flags
        epoch = message.header.epoch
        self.last_received_at = now
        if not flags & ControlFlag.KEEPALIVE_ACK:
            self._unanswered_since = None
        if not flags & ControlFlag.NO_SESSION:
            return
        attempt = self._attempt
        if attempt is not None and attempt.epoch == epoch and not flags & ControlFlag.KEEPALIVE_ACK:
            try:
                text = _REFUSAL_TEXT[RefusalCode(message.data)]
            except ValueError:
                text = f"the server refused our handshake (code {message.data})"
            self._fail_attempt(now, text)
            return
        current = self.epochs.current
        if attempt is None and current is not None and current.epoch == epoch:
            self.events.append(
                SessionLost("the server holds no session for us (restart or expiry)")
            )
            self._start_attempt(now, "server lost the session")

    def _on_untimely(
        self, message: HandshakeMessage | ControlMessage, address: Address, now: float
    ) -> None:
        # An authentic answer from a server whose clock is too far off ours: no retry
        # will fix that, so fail now with the reason.
        if self._attempt is not None and self._last_reason == DropReason.CLOCK_SKEW:
            self._fail_attempt(now, f"clock skew: {self._last_detail}")

    def _on_unauthentic(
        self,
        message: HandshakeMessage | ControlMessage,
        reason: DropReason,
        address: Address,
        now: float,
    ) -> None:
        if self._attempt is None:
            return
        if reason == DropReason.HEADER_TAG_MISMATCH and self.peer.public_key.verify(
            message.signature, message.signed_bytes
        ):
            # Signed by the server, yet tagged with another key: the shared keys differ.
            self._fail_attempt(
                now,
                "the server tags its messages with another v3 shared key than ours "
                "(shared key mismatch)",
            )
            return
        if isinstance(message, HandshakeMessage):
            if reason == DropReason.BAD_SIGNATURE:
                self._last_problem = (
                    "the server's handshake signature does not verify "
                    "(wrong server public key in our configuration?)"
                )
            elif reason == DropReason.HEADER_TAG_MISMATCH:
                self._last_problem = (
                    "the server's handshake has a bad header tag (wrong v3 shared key?)"
                )

    def _promote(self, now: float) -> None:
        # A client never holds a pending key: it promotes on the ServerHandshake.
        raise AssertionError("client sessions have no pending epoch")

    # ---------------------------------------------------------------- timers

    def next_keepalive_at(self) -> float:
        return self._next_keepalive if self.epochs.current is not None else _INF

    def on_keepalive_timer(self, now: float) -> None:
        current = self.epochs.current
        if current is None or now < self._next_keepalive:
            return
        interval = self.settings.keepalive_interval
        # Skip while data flows both ways; one-way data keeps probing, so that a lost
        # server session shows up as a NoSession hint within one interval.
        skip_until = min(self._last_data_sent_at, self._last_data_received_at) + interval
        if self.settings.keepalive_skip_after_data and skip_until > now:
            self._next_keepalive = skip_until
            return
        self._control(current.epoch, ControlFlag.KEEPALIVE, self.endpoint)
        self._next_keepalive = now + interval

    def next_handshake_at(self) -> float:
        attempt = self._attempt
        if attempt is not None:
            if attempt.retries_sent < len(self._retries):
                return attempt.started_at + self._retries[attempt.retries_sent]
            return attempt.started_at + self._timeout
        if self._reconnect_at is not None:
            return self._reconnect_at
        rekey = self.settings.rekey_interval
        if rekey is not None and self.last_handshake_at is not None and self.epochs.current:
            return self.last_handshake_at + rekey
        return _INF

    def on_handshake_timer(self, now: float) -> None:
        if self._closed:
            return
        attempt = self._attempt
        if attempt is not None:
            if now >= attempt.started_at + self._timeout:
                problem = self._last_problem
                reason = "no answer from the server"
                if problem and not problem.startswith(DropReason.WRONG_SOURCE.value):
                    reason = f"{reason}; last problem: {problem}"
                self._fail_attempt(now, reason)
            elif attempt.retries_sent < len(self._retries) and (
                now >= attempt.started_at + self._retries[attempt.retries_sent]
            ):
                attempt.retries_sent += 1
                self._send_client_handshake()
            return
        if self._reconnect_at is not None:
            if now >= self._reconnect_at:
                self._start_attempt(now, "reconnect")
            return
        if now >= self.next_handshake_at():
            self._start_attempt(now, "rekey")

    def next_expiry_at(self) -> float:
        return min(self._liveness_deadline(), self._previous_deadline())

    def _liveness_deadline(self) -> float:
        """When the silence rule or the dead-server rule would start a rekey."""
        if self._attempt is not None or self.epochs.current is None or self._closed:
            return _INF
        deadline = _INF
        silence = self.settings.silence_rekey_after
        if silence is not None and self._unanswered_since is not None:
            deadline = self._unanswered_since + silence
        dead = self.settings.dead_server_after
        if dead is not None and self.last_received_at is not None:
            deadline = min(deadline, self.last_received_at + dead)
        return deadline

    def on_expiry_timer(self, now: float) -> None:
        self._retire_previous(now)
        if now < self._liveness_deadline():
            return
        silence = self.settings.silence_rekey_after
        if (
            silence is not None
            and self._unanswered_since is not None
            and now >= self._unanswered_since + silence
        ):
            self.events.append(
                SessionLost(f"data sent for {silence:g} s with no reply but keepalive acks")
            )
            reason = "silence"
        else:
            self.events.append(SessionLost("nothing heard from the server"))
            reason = "server silent"
        self._unanswered_since = None
        self._start_attempt(now, reason)


class ServerPeerSession(Session):
    """The server's session with one configured client."""

    __slots__ = ()

    def __init__(
        self,
        *,
        local: LocalIdentity,
        client: Peer,
        settings: SessionSettings | None = None,
        clock: WallClock | None = None,
    ) -> None:
        if local.vaddr != SERVER_VADDR:
            raise ValueError(f"the server's virtual address is {SERVER_VADDR}, not {local.vaddr}")
        super().__init__(
            local=local,
            peer=client,
            settings=settings or SessionSettings(),
            clock=clock or SystemClock(),
            server_side=True,
        )
        self._connected = False

    @property
    def state(self) -> SessionState:
        if self.epochs.current is not None:
            return SessionState.ESTABLISHED
        if self.epochs.pending is not None:
            return SessionState.HANDSHAKING
        return SessionState.IDLE

    def _promote(self, now: float) -> None:
        key = self.epochs.promote()
        self._retire_previous_later(now)
        self.last_handshake_at = now
        self.stats.handshakes += 1
        if self._connected:
            self.events.append(Rekeyed(key.epoch))
        else:
            self._connected = True
            self.events.append(Connected(key.epoch, self.endpoint))

    def _server_handshake(self, epoch: int, server_public: bytes, address: Address) -> None:
        self._emit(
            encode_handshake(
                self.version,
                Kind.SERVER_HANDSHAKE,
                src=self._own_vaddr,
                dst=self._peer_vaddr,
                epoch=epoch,
                time=self._now_stamp(),
                ephemeral_public=server_public,
                tagger=self._tagger,
                signer=self._private_key,
            ),
            address,
        )

    def _on_handshake(self, message: HandshakeMessage, address: Address, now: float) -> None:
        epoch = message.header.epoch
        client_public = message.ephemeral_public
        for key in (self.epochs.pending, self.epochs.current):
            if key is not None and key.epoch == epoch and key.client_public == client_public:
                # A resend of a handshake we answered: the same answer again (SPEC §4.2).
                self._authenticated_from(address, now)
                self._server_handshake(epoch, key.server_public, address)
                return
        ephemeral = EphemeralKey.generate()
        try:
            secret = ephemeral.exchange(client_public)
        except BadPacket as exc:
            self._drop(exc.reason, exc.detail)
            return
        self.epochs.install_pending(
            self._new_key(epoch, secret, client_public, ephemeral.public_bytes)
        )
        self._authenticated_from(address, now)
        self._server_handshake(epoch, ephemeral.public_bytes, address)
        self.timers_changed = True

    def _on_control(self, message: ControlMessage, address: Address, now: float) -> None:
        epoch = message.header.epoch
        key = self.epochs.by_epoch.get(epoch)
        if key is not None:
            if key is self.epochs.pending:
                self._promote(now)
            self._authenticated_from(address, now)
            self.timers_changed = True
        if message.flags & ControlFlag.KEEPALIVE:
            flags = ControlFlag.KEEPALIVE_ACK
            if key is None:
                flags |= ControlFlag.NO_SESSION
            self._control(epoch, flags, address)
        elif key is None:
            self._drop(DropReason.UNKNOWN_EPOCH, f"control in epoch {epoch}")

    def _refuse(
        self, message: HandshakeMessage | ControlMessage, code: RefusalCode, address: Address
    ) -> None:
        if isinstance(message, HandshakeMessage):
            self._control(message.header.epoch, ControlFlag.NO_SESSION, address, data=int(code))

    def _on_unauthentic(
        self,
        message: HandshakeMessage | ControlMessage,
        reason: DropReason,
        address: Address,
        now: float,
    ) -> None:
        if reason == DropReason.BAD_SIGNATURE:
            self._refuse(message, RefusalCode.BAD_SIGNATURE, address)
        elif reason == DropReason.HEADER_TAG_MISMATCH:
            self._refuse(message, RefusalCode.HEADER_TAG_MISMATCH, address)

    def _on_untimely(
        self, message: HandshakeMessage | ControlMessage, address: Address, now: float
    ) -> None:
        if self._last_reason == DropReason.CLOCK_SKEW:
            self._refuse(message, RefusalCode.CLOCK_SKEW, address)

    def next_expiry_at(self) -> float:
        if self.last_received_at is None:
            return _INF
        return min(self.last_received_at + self.settings.idle_expiry, self._previous_deadline())

    def on_expiry_timer(self, now: float) -> None:
        self._retire_previous(now)
        last = self.last_received_at
        if last is None or now < last + self.settings.idle_expiry:
            return
        self.forget()
        self.events.append(Expired(now - last))

    def forget(self) -> None:
        """Drop all session state with this client (as an idle expiry does)."""
        self.epochs.clear()
        self._previous_until = None
        self.endpoint = None
        self.offset_us = None
        self.last_received_at = None
        self._connected = False
        self._signatures.clear()
        self.timers_changed = True
