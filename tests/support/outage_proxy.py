"""A TCP relay in front of a server that a test can take down for real: `refuse()` closes the
listening socket (new connections get ECONNREFUSED) and cuts the open ones; `restore()` listens
on the same port again. Built on tests.support.tcp_proxy.TcpProxy."""

from __future__ import annotations

import socket
import threading
import time

from .tcp_proxy import TcpProxy


class OutageProxy(TcpProxy):
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        super().__init__(target_port, target_host)
        self.down_since: float | None = None
        self.outages: list[tuple[float, float]] = []  # (down, up) as time.monotonic()

    @property
    def url_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refuse(self) -> None:
        """Down: nothing listens on the port any more and open connections are cut.

        The socket stops listening (shutdown of a listening socket) but stays bound, so no other
        server of this or a parallel test run can take the port before restore()."""
        self.accepting = False
        self.down_since = time.monotonic()
        self._listener.shutdown(socket.SHUT_RD)  # wakes the accept thread, which ends
        self.cut()

    def restore(self) -> None:
        """Up again on the same port."""
        self._listener.listen()
        self.accepting = True
        threading.Thread(target=self._accept, daemon=True).start()
        if self.down_since is not None:
            self.outages.append((self.down_since, time.monotonic()))
            self.down_since = None
