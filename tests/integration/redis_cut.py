"""A TCP relay in front of a real redis-server that breaks the connection around the first
`EXEC`: the fault of Redis becoming unreachable in the middle of a transaction, made exact.

`after_exec`: the `EXEC` reaches Redis (the transaction runs) but its reply never comes back.
`before_exec`: the connection breaks just before the `EXEC` reaches Redis (nothing runs).
With `stay_down`, the relay then refuses every new connection, as a Redis that stays away.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

CutAt = Literal["before_exec", "after_exec"]
_EXEC = b"$4\r\nEXEC\r\n"
# The EXEC's reply to the orders transaction (HSET, SET): an array of two. Waiting for it before
# breaking the connection makes sure Redis ran the transaction (nothing unread is left behind).
_EXEC_REPLY = b"*2\r\n"


class RedisCut:
    def __init__(self, redis_port: int, cut_at: CutAt, *, stay_down: bool = False) -> None:
        self._redis_port, self._cut_at, self._stay_down = redis_port, cut_at, stay_down
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.cut = threading.Event()
        """Set once the connection was broken at `cut_at`."""
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.cut.is_set() and self._stay_down:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self._redis_port))
            dropping = threading.Event()
            threading.Thread(
                target=self._upstream, args=(client, server, dropping), daemon=True
            ).start()
            threading.Thread(
                target=self._downstream, args=(server, client, dropping), daemon=True
            ).start()

    def _upstream(
        self, client: socket.socket, server: socket.socket, dropping: threading.Event
    ) -> None:
        while data := _recv(client):
            if _EXEC in data and not self.cut.is_set():
                if self._cut_at == "before_exec":
                    self._break(client, server)
                    return
                dropping.set()  # its reply is dropped, then the connection broken
            server.sendall(data)
        self._break(client, server, only_if_cut=False)

    def _downstream(
        self, server: socket.socket, client: socket.socket, dropping: threading.Event
    ) -> None:
        dropped = b""
        while data := _recv(server):
            if not dropping.is_set():
                client.sendall(data)
                continue
            dropped += data
            if _EXEC_REPLY in dropped:
                self._break(client, server)  # the EXEC ran: its reply is what is lost
                return
        self._break(client, server, only_if_cut=False)

    def _break(self, *sockets: socket.socket, only_if_cut: bool = True) -> None:
        if only_if_cut:
            self.cut.set()
            if self._stay_down:
                self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the other side
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""
