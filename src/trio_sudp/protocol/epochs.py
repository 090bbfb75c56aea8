"""Epoch keys: previous, current and pending, and their promotion rules (SPEC §4)."""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .replay import ReplayFilter

__all__ = ["EpochKey", "EpochSet"]

_NONCE = struct.Struct(">IQ")


class EpochKey:
    """One epoch's AES-256-GCM key (built once), nonce counter and replay filter.

    Both directions share the key (SPEC §2), so nonces carry the sender's role in the
    top bit of a random 32-bit prefix, followed by a 64-bit counter: they can never
    collide, and the receiver treats them as opaque (SPEC §7).
    """

    __slots__ = (
        "aead",
        "client_public",
        "epoch",
        "nonce_counter",
        "nonce_prefix",
        "replay",
        "server_public",
    )

    def __init__(
        self,
        epoch: int,
        secret: bytes,
        *,
        server_side: bool,
        client_public: bytes = b"",
        server_public: bytes = b"",
        replay_window: int = 8192,
        replay_memory: int = 8192,
    ) -> None:
        self.epoch = epoch
        self.aead = AESGCM(secret)
        prefix = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        if server_side:
            prefix |= 0x80000000
        #: Our nonces are ``nonce_prefix`` (4 bytes) then ``nonce_counter`` (8 bytes),
        #: the counter incremented before each use (the data path does it inline).
        self.nonce_prefix = prefix
        self.nonce_counter = 0
        self.replay = ReplayFilter(replay_window, replay_memory)
        #: The ephemeral points that made this key (to recognise duplicate handshakes).
        self.client_public = client_public
        self.server_public = server_public

    def next_nonce(self) -> bytes:
        """A nonce never used before with this key by this side."""
        self.nonce_counter += 1
        return _NONCE.pack(self.nonce_prefix, self.nonce_counter)

    def __repr__(self) -> str:
        return f"EpochKey(epoch={self.epoch})"


class EpochSet:
    """Up to three keys of one peer. ``by_epoch`` maps an epoch number to its key."""

    __slots__ = ("by_epoch", "current", "pending", "previous")

    def __init__(self) -> None:
        self.previous: EpochKey | None = None
        self.current: EpochKey | None = None
        self.pending: EpochKey | None = None
        self.by_epoch: dict[int, EpochKey] = {}

    def _reindex(self) -> None:
        keys = (self.previous, self.current, self.pending)
        self.by_epoch = {key.epoch: key for key in keys if key is not None}

    def install_pending(self, key: EpochKey) -> None:
        """A new pending key; an older key with the same number is dropped (the v2 trap)."""
        if self.previous is not None and self.previous.epoch == key.epoch:
            self.previous = None
        if self.current is not None and self.current.epoch == key.epoch:
            self.current = None
        self.pending = key
        self._reindex()

    def promote(self) -> EpochKey:
        """Pending becomes current, current becomes previous, the older previous is dropped."""
        key = self.pending
        assert key is not None
        self.pending = None
        self.install_current(key)
        return key

    def install_current(self, key: EpochKey) -> None:
        """Make ``key`` current; the old current becomes previous."""
        old = self.current
        if old is not None and old.epoch != key.epoch:
            self.previous = old
        if self.previous is not None and self.previous.epoch == key.epoch:
            self.previous = None
        self.current = key
        self._reindex()

    def drop_previous(self) -> None:
        """Forget the previous key (its data can no longer be fresh)."""
        if self.previous is not None:
            self.previous = None
            self._reindex()

    def clear(self) -> None:
        self.previous = self.current = self.pending = None
        self.by_epoch = {}
