"""``trio-sudp show``: a running daemon's status as text, like ``wg show``."""

from __future__ import annotations

from typing import Any

__all__ = ["format_status"]


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = int(seconds)
    parts: list[str] = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        value, seconds = divmod(seconds, size)
        if value or (unit == "second" and not parts):
            parts.append(f"{value} {unit}{'' if value == 1 else 's'}")
    return ", ".join(parts) + " ago"


def _drops(drops: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(drops.items()) if count)


def _peer(peer: dict[str, Any]) -> list[str]:
    name = f" ({peer['name']})" if peer.get("name") else ""
    lines = [f"peer: {peer['vaddr']}{name}"]
    lines.append(f"  public key: {peer['public_key']}")
    if peer.get("endpoint"):
        lines.append(f"  endpoint: {peer['endpoint']}")
    if peer.get("addresses"):
        lines.append(f"  allowed ips: {', '.join(peer['addresses'])}")
    epoch = peer.get("current_epoch")
    state = peer["state"] + (f", epoch {epoch}" if epoch is not None else "")
    lines.append(f"  protocol: SUDP v{peer['version']}, {state}")
    lines.append(f"  latest handshake: {_age(peer.get('last_handshake_age'))}")
    lines.append(
        f"  transfer: {_bytes(peer['rx_bytes'])} received ({peer['rx_packets']} packets), "
        f"{_bytes(peer['tx_bytes'])} sent ({peer['tx_packets']} packets)"
    )
    drops = _drops(peer.get("drops", {}))
    if drops:
        lines.append(f"  drops: {drops}")
    return lines


def _socket_line(udp: dict[str, Any]) -> str:
    parts = [f"{udp['rx_datagrams']} datagrams received, {udp['tx_datagrams']} sent"]
    if udp.get("rx_strangers"):
        parts.append(f"{udp['rx_strangers']} from strangers")
    if udp.get("kernel_drops"):
        strangers = udp.get("strangers_kernel_drops")
        where = f"; {strangers} of them strangers'" if strangers else ""
        parts.append(f"{udp['kernel_drops']} dropped by the kernel (filtered or queue full{where})")
    if udp.get("banned"):
        parts.append(f"{udp['banned']} flooding hosts banned")
    if udp.get("steering"):
        steered = udp["steered"]
        parts.append(f"own queue for {steered} client{'' if steered == 1 else 's'}")
    if udp.get("prefilter"):
        parts.append(f"prefilter in {udp['prefilter']}")
    if udp.get("receive_buffer"):
        parts.append(f"receive buffer {_bytes(udp['receive_buffer'])}")
    return "  socket: " + ", ".join(parts)


def format_status(status: dict[str, Any]) -> str:
    """The text ``show`` prints for one daemon's status document."""
    lines = [f"interface: {status['interface']}"]
    lines.append(f"  role: {status['role']}")
    if status.get("listen"):
        lines.append(f"  listening on: {status['listen']}")
    lines.append(f"  public key: {status['public_key']}")
    lines.append(f"  tunnel: {', '.join(status.get('tunnel', []))} (MTU {status['mtu']})")
    device = status.get("device")
    if device:
        merged = f", {device['tx_gso_writes']} GSO writes" if device.get("offload") else ""
        lines.append(
            f"  device: {device['rx_packets']} packets read, {device['tx_packets']} written{merged}"
        )
    udp = status.get("udp")
    if udp:
        lines.append(_socket_line(udp))
    budget = status.get("budget")
    if budget and (budget["refused_known"] or budget["refused_strangers"]):
        lines.append(
            f"  signatures: {budget['verified_known'] + budget['verified_strangers']} verified, "
            f"{budget['refused_known'] + budget['refused_strangers']} refused by the budget "
            f"({budget['refused_known']} from clients' endpoints)"
        )
    drops = _drops(status.get("drops", {}))
    if drops:
        lines.append(f"  drops: {drops}")
    for peer in status.get("peers", []):
        lines.append("")
        lines.extend(_peer(peer))
    return "\n".join(lines)
