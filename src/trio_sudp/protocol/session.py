"""One peer's SUDP session, sans-IO (SPEC §4, §6, §7).

A session is fed datagrams and time and answers with payloads, datagrams to send and
events; it never touches a socket or reads a clock by itself. Every method takes the
monotonic ``now`` (seconds) from its caller; message timestamps come from the one
:class:`~trio_sudp.protocol.clock.WallClock` it was built with.

:class:`Session` is what both roles share; ``client.py`` (:class:`ClientSession`, the
active side) and ``server.py`` (:class:`ServerPeerSession`, the passive side's view of
one client, and :class:`ServerCore`, which routes datagrams to them) say what each
message means to a role.

A datagram goes through :meth:`Session.receive` (or :meth:`Session.receive_many`, for
datagrams that arrived together): Data under a known epoch is opened by the data
codec (``datapath.py``), checked for freshness (``freshness.py``) and replay
(``replay.py``) and its payload returned; everything else takes the signed path
(``handshake.py``) to the role's handler. A refused datagram is counted in
``stats.drops`` by reason, and nothing else happens. Datagrams to send wait in
``outbox`` and events in ``events`` until the driver takes them; the driver sleeps
until :meth:`Session.next_deadline` and then calls :meth:`Session.handle_timer`.
"""

from __future__ import annotations

import abc
import enum
import math
from collections import Counter
from collections.abc import Iterable
from typing import ClassVar, Final

import attrs

from .address import Address
from .clock import WallClock
from .constants import (
    HEADER_SIZE,
    MAX_DATAGRAM,
    ControlFlag,
    Kind,
    Version,
    control_body_size,
    handshake_body_size,
)
from .datapath import (
    DATA_HEAD,
    MIN_DATA_BODY,
    MIN_DATA_DATAGRAM,
    DataCodec,
    check_payload_size,
    open_data,
)
from .epochs import EpochKey, EpochSet
from .errors import DropReason, NotConnected
from .events import (
    Connected,
    Event,
    Rekeyed,
    Roamed,
)
from .freshness import PeerClock
from .handshake import (
    SignatureMemory,
    SignedCodec,
    SignedMessage,
)
from .liveness import PreviousKeyTimer
from .peers import LocalIdentity, Peer
from .settings import SessionSettings
from .wire import ControlMessage, HandshakeMessage, decode_untrusted

__all__ = ["Session", "SessionState", "SessionStats"]

_INF: Final = math.inf
_unpack_data_head = DATA_HEAD.unpack_from


class SessionState(enum.Enum):
    """Where a session stands."""

    IDLE = "idle"  #: not started (client) or no session with this client (server)
    HANDSHAKING = "handshaking"  #: no key yet; a handshake is under way or will be retried
    ESTABLISHED = "established"  #: a current key exists; data flows
    FAILED = "failed"  #: the client gave up (``reconnect=False``)
    CLOSED = "closed"  #: closed by the local side


@attrs.define
class SessionStats:
    """Counters of one session. Bytes are whole datagrams as sent or received."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    handshakes: int = 0
    #: Times the peer's endpoint moved (NAT rebinding, roaming).
    endpoint_changes: int = 0
    drops: Counter[DropReason] = attrs.field(factory=Counter)


class Session(abc.ABC):
    """What clients and server-side peer sessions share: keys, the data path, the
    signed path, outputs and counters. The roles say what a message means."""

    __slots__ = (
        "_control_body",
        "_data",
        "_data_received_at",
        "_data_sent_at",
        "_ever_connected",
        "_fixed_source",
        "_handshake_body",
        "_last_drop",
        "_peer_clock",
        "_previous",
        "_signature_memory",
        "_signatures",
        "_signed",
        "_unanswered_since",
        "_watch_silence",
        "endpoint",
        "epochs",
        "events",
        "last_handshake_at",
        "last_received_at",
        "local",
        "outbox",
        "peer",
        "settings",
        "stats",
        "timers_changed",
        "version",
    )

    #: The handshake kind this role receives.
    _handshake_kind: ClassVar[Kind]
    #: Whether this is the server's side (the role bit of our nonces, SPEC §7).
    _server_side: ClassVar[bool]

    def __init__(
        self, *, local: LocalIdentity, peer: Peer, settings: SessionSettings, clock: WallClock
    ) -> None:
        self.local = local
        self.peer = peer
        self.version: Version = peer.version
        self.settings = settings
        self.epochs = EpochSet()
        self.stats = SessionStats()
        #: Where the peer's datagrams come from and ours go (``None``: unknown yet).
        self.endpoint: Address | None = None
        #: Monotonic time of the last completed handshake.
        self.last_handshake_at: float | None = None
        #: Monotonic time of the last authenticated message from the peer.
        self.last_received_at: float | None = None
        #: Set when :meth:`next_deadline` may have moved earlier; the driver clears it.
        self.timers_changed = False
        #: Events not yet taken by the driver (see :meth:`take_events`).
        self.events: list[Event] = []
        #: Datagrams to send, with their destination, not yet taken by the driver.
        self.outbox: list[tuple[bytes, Address]] = []
        self._data = DataCodec(
            peer.version,
            own_vaddr=local.vaddr,
            peer_vaddr=peer.vaddr,
            tagger=peer.tagger,
            clock=clock,
        )
        time_ns = self._data.time_ns
        unit_us = self._data.unit_us
        self._peer_clock = PeerClock(settings, unit_us=unit_us, wall_us=lambda: time_ns() // 1000)
        self._signed = SignedCodec(
            peer.version,
            own_vaddr=local.vaddr,
            peer_vaddr=peer.vaddr,
            tagger=peer.tagger,
            private_key=local.private_key,
            peer_key=peer.public_key,
            stamp=lambda: time_ns() // (1000 * unit_us),
            tolerate_v2_left_aligned=settings.tolerate_v2_left_aligned,
        )
        self._signatures = SignatureMemory()
        #: How long an accepted signature is remembered (a replay is refused meanwhile).
        self._signature_memory = settings.freshness * 2
        self._handshake_body = handshake_body_size(peer.version)
        self._control_body = control_body_size(peer.version)
        self._previous = PreviousKeyTimer(settings)
        #: Clients accept datagrams from their server's address only.
        self._fixed_source: Address | None = None
        self._data_sent_at = -_INF
        self._data_received_at = -_INF
        #: First data sent since the peer last sent something other than a KeepAliveAck.
        self._unanswered_since: float | None = None
        #: Whether a deadline waits on ``_unanswered_since`` (a client's silence rule).
        self._watch_silence = False
        #: Whether a key was ever in use (a new one is then a rekey).
        self._ever_connected = False
        #: The latest drop, for handshake failure messages.
        self._last_drop: DropReason | None = None

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
    @abc.abstractmethod
    def state(self) -> SessionState:
        """Where the session stands."""

    @property
    def offset_us(self) -> int | None:
        """Our wall clock minus the peer's, fixed by its first authenticated message."""
        return self._peer_clock.offset_us

    @offset_us.setter
    def offset_us(self, value: int | None) -> None:
        self._peer_clock.offset_us = value

    # ----------------------------------------------------------------- timers

    @abc.abstractmethod
    def next_deadline(self) -> float:
        """The earliest monotonic time at which :meth:`handle_timer` has work (inf: none)."""

    @abc.abstractmethod
    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now`` (early calls do nothing)."""

    # ----------------------------------------------------------------- data path

    def send(self, payload: bytes, now: float) -> bytes:
        """Encrypt ``payload`` under the current epoch; return the datagram for ``endpoint``.

        Raises :class:`NotConnected` without a key and :class:`PayloadTooLarge` above
        1996 (v2) / 1976 (v3) bytes.
        """
        key = self.epochs.current
        if key is None or self.endpoint is None:
            raise NotConnected("no session key with this peer yet")
        data = self._data
        if len(payload) > data.max_payload:
            check_payload_size(self.version, len(payload))
        datagram = data.seal(key, payload)
        stats = self.stats
        stats.tx_packets += 1
        stats.tx_bytes += len(datagram)
        self._data_sent_at = now
        if self._unanswered_since is None:
            self._unanswered_since = now
            if self._watch_silence:
                self.timers_changed = True  # the silence deadline (SPEC §7) starts now
        return datagram

    def receive(self, datagram: bytes, address: Address, now: float) -> bytes | None:
        """Process one datagram from ``address``; return its payload if it is accepted data.

        Never raises for anything in the datagram: a refused one is counted in
        ``stats.drops`` by reason.
        """
        size = len(datagram)
        if MIN_DATA_DATAGRAM <= size <= MAX_DATAGRAM:
            data = self._data
            kind, length, route, epoch, stamp, prefix, counter = _unpack_data_head(datagram)
            # The same header checks as receive_many's; test_receive_many keeps them equal.
            if (
                kind == data.kind
                and route == data.rx_route
                and MIN_DATA_BODY <= length <= size - HEADER_SIZE
                and (self._fixed_source is None or address == self._fixed_source)
            ):
                epochs = self.epochs
                key = epochs.by_epoch.get(epoch)
                if key is None:
                    self._drop(DropReason.UNKNOWN_EPOCH)
                    return None
                payload = open_data(datagram, length, key.aead, data.tagger, data.tag_len)
                if type(payload) is not bytes:
                    self._drop(payload)  # type: ignore[arg-type]
                    return None
                clock = self._peer_clock
                low, high = clock.window(data.time_ns() // 1000)
                if not low <= stamp <= high:
                    reason = clock.check(stamp)
                    if reason is not None:
                        self._drop(reason)
                        return None
                if not key.replay.check(prefix, counter):
                    self._drop(DropReason.REPLAY)
                    return None
                self.last_received_at = self._data_received_at = now
                self._unanswered_since = None
                if address != self.endpoint:
                    self._endpoint_changed(address)
                if key is epochs.pending:
                    self._promote(now)
                stats = self.stats
                stats.rx_packets += 1
                stats.rx_bytes += size
                return payload
        self._receive_other(datagram, address, now)
        return None

    def receive_many(self, datagrams: Iterable[tuple[bytes, Address]], now: float) -> list[bytes]:
        """:meth:`receive` for datagrams that arrived together; the accepted payloads, in order.

        The same as calling :meth:`receive` on each ``(datagram, address)`` in turn,
        except that the wall clock is read once for the whole batch, which arrived at
        ``now``, and the bookkeeping of accepted data is done once.
        """
        payloads: list[bytes] = []
        append = payloads.append
        data = self._data
        data_kind = data.kind
        rx_route = data.rx_route
        tagger = data.tagger
        tag_len = data.tag_len
        fixed = self._fixed_source
        wall_us = data.time_ns() // 1000
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
                low, high = self._peer_clock.window(wall_us)
            size = len(datagram)
            key = None
            if MIN_DATA_DATAGRAM <= size <= MAX_DATAGRAM:
                kind, length, route, epoch, stamp, prefix, counter = _unpack_data_head(datagram)
                # receive()'s header checks, plus the freshness window (test_receive_many).
                if (
                    kind == data_kind
                    and route == rx_route
                    and MIN_DATA_BODY <= length <= size - HEADER_SIZE
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
            opened = open_data(datagram, length, key.aead, tagger, tag_len)
            if type(opened) is not bytes:
                self._drop(opened)  # type: ignore[arg-type]
                continue
            if not key.replay.check(prefix, counter):
                self._drop(DropReason.REPLAY)
                continue
            if address != endpoint:
                self._endpoint_changed(address)
                endpoint = address
            if key is pending:
                self._promote(now)
                reload = True
            accepted += 1
            received += size
            append(opened)
        if accepted:
            self._data_received(accepted, received, now)
        return payloads

    def _data_received(self, count: int, size: int, now: float) -> None:
        """Bookkeeping for ``count`` accepted Data datagrams of ``size`` bytes in all."""
        self.last_received_at = self._data_received_at = now
        self._unanswered_since = None
        stats = self.stats
        stats.rx_packets += count
        stats.rx_bytes += size

    def _receive_other(self, datagram: bytes, address: Address, now: float) -> None:
        """Everything the data path does not take, each drop with its reason."""
        size = len(datagram)
        if size < HEADER_SIZE:
            self._drop(DropReason.DATAGRAM_TOO_SHORT)
        elif size > MAX_DATAGRAM:
            self._drop(DropReason.DATAGRAM_TOO_LONG)
        elif datagram[0] != self.version:
            self._drop(DropReason.BAD_VERSION)
        elif datagram[1] == Kind.DATA:
            self._refuse_data(datagram, address)
        else:
            self._receive_signed(datagram, address, now)

    def _refuse_data(self, datagram: bytes, address: Address) -> None:
        """Why the data path refused a Data datagram of the right version."""
        length = datagram[2] << 8 | datagram[3]
        if length > len(datagram) - HEADER_SIZE:
            self._drop(DropReason.LEN_EXCEEDS_DATAGRAM)
        elif length < MIN_DATA_BODY:
            self._drop(DropReason.BODY_TOO_SHORT)
        elif (datagram[4] << 24 | datagram[5] << 16 | datagram[6] << 8 | datagram[7]) != (
            self._data.rx_route
        ):
            self._drop(DropReason.WRONG_VADDR)
        else:
            self._drop(DropReason.WRONG_SOURCE)

    def _endpoint_changed(self, address: Address) -> None:
        old = self.endpoint
        self.endpoint = address
        if old is not None:
            self.stats.endpoint_changes += 1
            self.events.append(Roamed(old, address))

    # ----------------------------------------------------------------- signed path

    def _receive_signed(self, datagram: bytes, address: Address, now: float) -> None:
        """Handshakes and Control: every cheap check first, then (within the budget) the
        signature, then replay and time."""
        kind = datagram[1]
        if not Kind.CLIENT_HANDSHAKE <= kind <= Kind.CONTROL:
            self._drop(DropReason.BAD_KIND)
            return
        length = datagram[2] << 8 | datagram[3]
        if length > len(datagram) - HEADER_SIZE:
            self._drop(DropReason.LEN_EXCEEDS_DATAGRAM)
            return
        body = self._control_body if kind == Kind.CONTROL else self._handshake_body
        if length != body:
            self._drop(DropReason.BODY_TOO_SHORT if length < body else DropReason.BODY_TOO_LONG)
            return
        message = decode_untrusted(datagram, version=self.version)  # cannot fail now
        assert isinstance(message, HandshakeMessage | ControlMessage)
        header = message.header
        if header.dst != self.local.vaddr or header.src != self.peer.vaddr:
            self._drop(DropReason.WRONG_VADDR)
            return
        if header.kind is not self._handshake_kind and header.kind is not Kind.CONTROL:
            self._drop(DropReason.UNEXPECTED_KIND)
            return
        if self._fixed_source is not None and address != self._fixed_source:
            self._drop(DropReason.WRONG_SOURCE)
            return
        signed = self._signed
        if not signed.tag_ok(message):
            self._drop(DropReason.HEADER_TAG_MISMATCH)
            self._on_unauthentic(message, DropReason.HEADER_TAG_MISMATCH, address, now)
            return
        if self._signatures.seen(message.signature, now):
            self._drop(DropReason.REPLAY)
            return
        clock = self._peer_clock
        low, high = clock.window(self._data.time_ns() // 1000)
        if not low <= header.time <= high and clock.offset_us is not None:
            # Refused by time whatever its signature says: do not pay for verifying it.
            reason = clock.check(header.time, fix=False)
            if reason is not None:
                self._drop(reason)
                return
        if not self._may_verify(address, now):
            self._drop(DropReason.RATE_LIMITED)
            return
        if not signed.signature_ok(message):
            self._drop(DropReason.BAD_SIGNATURE)
            self._on_unauthentic(message, DropReason.BAD_SIGNATURE, address, now)
            return
        self._signatures.remember(message.signature, now, self._signature_memory)
        if isinstance(message, HandshakeMessage) and clock.replayed(header.time, now):
            self._drop(DropReason.REPLAY)  # older than what the peer already sent us
            return
        reason = clock.check(header.time, fix=self._proves_key(message))
        if reason is not None:
            self._drop(reason)
            self._on_untimely(message, reason, address, now)
            return
        clock.saw(header.time, now)
        stats = self.stats
        stats.rx_packets += 1
        stats.rx_bytes += len(datagram)
        if isinstance(message, HandshakeMessage):
            self._on_handshake(message, address, now)
        else:
            self._on_control(message, address, now)

    def _may_verify(self, address: Address, now: float) -> bool:
        """Whether the signature verification budget allows one more (servers limit it)."""
        return True

    @abc.abstractmethod
    def _proves_key(self, message: SignedMessage) -> bool:
        """Whether an authentic ``message`` proves the peer's new key: only such a message
        may fix the clock offset (a replayed one must not)."""

    @abc.abstractmethod
    def _on_handshake(self, message: HandshakeMessage, address: Address, now: float) -> None:
        """An authentic, fresh handshake of the kind this role receives."""

    @abc.abstractmethod
    def _on_control(self, message: ControlMessage, address: Address, now: float) -> None:
        """An authentic, fresh Control message."""

    @abc.abstractmethod
    def _on_unauthentic(
        self, message: SignedMessage, reason: DropReason, address: Address, now: float
    ) -> None:
        """A signed message failed its header tag or signature (already counted)."""

    @abc.abstractmethod
    def _on_untimely(
        self, message: SignedMessage, reason: DropReason, address: Address, now: float
    ) -> None:
        """An authentic signed message failed the time checks (already counted)."""

    # ----------------------------------------------------------------- keys

    def _new_key(
        self, epoch: int, secret: bytes, client_public: bytes, server_public: bytes
    ) -> EpochKey:
        return EpochKey(
            epoch,
            secret,
            server_side=self._server_side,
            client_public=client_public,
            server_public=server_public,
            replay_window=self.settings.replay_window,
            replay_memory=self.settings.replay_memory,
        )

    def _key_in_use(self, key: EpochKey, now: float) -> None:
        """``key`` just became the current key: a connect or a rekey."""
        self._previous.start(now)
        self.timers_changed = True
        self.last_handshake_at = now
        self.stats.handshakes += 1
        if self._ever_connected:
            self.events.append(Rekeyed(key.epoch))
        else:
            self._ever_connected = True
            self.events.append(Connected(key.epoch, self.endpoint))

    def _promote(self, now: float) -> None:
        """The pending key proved itself (authenticated Control or Data in its epoch)."""
        self._key_in_use(self.epochs.promote(), now)

    def _authenticated_from(self, address: Address, now: float) -> None:
        """An authenticated message came from ``address``: the peer is alive there."""
        self.last_received_at = now
        if address != self.endpoint:
            self._endpoint_changed(address)

    # ----------------------------------------------------------------- helpers

    def _drop(self, reason: DropReason) -> None:
        self.stats.drops[reason] += 1
        self._last_drop = reason

    def _emit(self, datagram: bytes, address: Address) -> None:
        stats = self.stats
        stats.tx_packets += 1
        stats.tx_bytes += len(datagram)
        self.outbox.append((datagram, address))

    def _control(
        self, epoch: int, flags: ControlFlag, address: Address | None, data: int = 0
    ) -> None:
        assert address is not None
        self._emit(self._signed.control(epoch, flags, data), address)
