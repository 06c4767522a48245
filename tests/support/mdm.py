"""The MDM side for tests: identity CA, push PKI, fake APNs, the mdm-endpoint HTTP app on a real
port, the Commander over gRPC and the push worker, all in this process against real services."""

from __future__ import annotations

from dataclasses import dataclass, field

from werkzeug.serving import make_server

from .serving import serve_in_thread


class PushRouter:
    """Where the fake APNs delivers pushes: a test sets `target` to a Fleet (or any callable)."""

    def __init__(self) -> None:
        self.target = None

    def __call__(self, push) -> None:
        if self.target is not None:
            self.target(push)


@dataclass
class ServerThread:
    app: object
    port: int
    server: object = field(init=False)

    def start(self) -> ServerThread:
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        serve_in_thread(self.server)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
