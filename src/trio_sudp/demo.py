"""A self-contained demonstration: two peers, fresh keys, one message each way."""

from __future__ import annotations

from .protocol import (
    ClientSession,
    LocalIdentity,
    ManualClock,
    Peer,
    PrivateKey,
    ServerCore,
    Version,
)

SERVER = ("192.0.2.1", 7000)
CLIENT = ("198.51.100.7", 40000)


def run_in_memory_demo(version: Version = Version.V3) -> list[str]:
    """Handshake two in-memory peers and echo a message; return what happened, line by line."""
    clock = ManualClock(1_795_571_950_000_000)
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    lines = [
        f"server key {server_key.public_key.fingerprint()}, "
        f"client key {client_key.public_key.fingerprint()}"
    ]
    shared = b"demo-shared-key" if version == Version.V3 else None
    core = ServerCore(
        LocalIdentity(0, server_key), [Peer(1, client_key.public_key, version, shared)], clock=clock
    )
    client = ClientSession(
        local=LocalIdentity(1, client_key),
        server=Peer(0, server_key.public_key, version, shared),
        server_address=SERVER,
        clock=clock,
    )
    now = 0.0
    client.connect(now)
    for _ in range(3):  # ClientHandshake, ServerHandshake, EpochAck
        for datagram, _ in client.take_datagrams():
            session = core.session_for(datagram, CLIENT, now)
            assert session is not None
            session.receive(datagram, CLIENT, now)
            lines.append(f"client -> server: {len(datagram):4} bytes, kind {datagram[1]}")
        for datagram, _ in core.sessions[1].take_datagrams():
            client.receive(datagram, SERVER, now)
            lines.append(f"server -> client: {len(datagram):4} bytes, kind {datagram[1]}")
    server_session = core.sessions[1]
    lines.append(f"client {client.state.value}, server {server_session.state.value}")
    datagram = client.send(b"hello over SUDP", now)
    lines.append(f"server received {server_session.receive(datagram, CLIENT, now)!r}")
    reply = server_session.send(b"hello back", now)
    lines.append(f"client received {client.receive(reply, SERVER, now)!r}")
    return lines


def main() -> None:
    for version in (Version.V2, Version.V3):
        print(f"--- SUDP v{version}, in memory")
        for line in run_in_memory_demo(version):
            print(line)


if __name__ == "__main__":
    main()
