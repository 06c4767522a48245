"""HTTP servers (http.server, Werkzeug) that tests run in a thread of their own."""

from __future__ import annotations

import threading
from socketserver import BaseServer

# How often serve_forever looks for shutdown(). The standard library's 0.5 s made every test
# that stopped a server wait up to half a second.
SHUTDOWN_CHECK_SECONDS = 0.05


def serve_in_thread(server: BaseServer) -> threading.Thread:
    """Serve `server` in a daemon thread until its shutdown()."""
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": SHUTDOWN_CHECK_SECONDS}, daemon=True)
    thread.start()
    return thread
