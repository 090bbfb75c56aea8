"""trio-sudp: SUDP secure-UDP tunnels and a VPN on Trio, wire-compatible with Go sudp/tunelo."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
