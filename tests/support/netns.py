"""Hosts of a test's own: Linux network namespaces, each joined to this one by a veth pair.

A host gets its own loopback, its own address (``10.X.Y.2``) and a name of its own (the
processes run in a new UTS namespace). From inside, the services of the test — Redis, the
SMTP server, PostgreSQL through a small TCP forwarder — are at the other end of the pair
(``10.X.Y.1``). Needs root and iproute2.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "iproute2 (ip) and util-linux (unshare) are needed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Host:
    name: str
    namespace: str
    address: str  # this host's address
    gateway: str  # the test's end of the veth pair: where its services are
    link: str

    def argv(self, command: list[str]) -> list[str]:
        """``command`` run on this host, under this host's name."""
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "sh", "-c",
                f'hostname {self.name} && exec "$0" "$@"', *command]

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.namespace], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.link], capture_output=True)


def make_host(name: str, subnet: int) -> Host:
    tag = secrets.token_hex(3)
    namespace, outside, inside = f"mailer-{name}-{tag}", f"mo{tag}{subnet}", f"mi{tag}{subnet}"
    prefix = f"10.{200 + secrets.randbelow(50)}.{subnet}"
    host = Host(name, namespace, f"{prefix}.2", f"{prefix}.1", outside)
    _ip("netns", "add", namespace)
    _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
    _ip("link", "set", inside, "netns", namespace)
    _ip("addr", "add", f"{host.gateway}/30", "dev", outside)
    _ip("link", "set", outside, "up")
    for args in (("addr", "add", f"{host.address}/30", "dev", inside),
                 ("link", "set", inside, "up"), ("link", "set", "lo", "up")):
        _ip("netns", "exec", namespace, "ip", *args)
    return host


class Forwarder:
    """Accepts TCP connections on (address, port) and relays each to ``target``: how the
    hosts reach the machine's PostgreSQL, which listens on loopback only."""

    def __init__(self, addresses: list[str], target: tuple[str, int]) -> None:
        self.target = target
        self.listeners = []
        port = 0
        for address in addresses:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            port = sock.getsockname()[1]  # the same port on every address
            sock.listen(64)
            self.listeners.append(sock)
        self.port = port
        self._stop = False
        self._threads = [threading.Thread(target=self._accept, args=(s,), daemon=True)
                         for s in self.listeners]
        for thread in self._threads:
            thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        pair = {client: server, server: client}
        try:
            while not self._stop:
                ready, _, _ = select.select(list(pair), [], [], 1.0)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    def stop(self) -> None:
        self._stop = True
        for sock in self.listeners:
            sock.close()
