"""A free TCP port for the servers and process groups the tests start side by side (pytest-xdist)."""

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
