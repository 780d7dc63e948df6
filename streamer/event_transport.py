"""ZeroMQ endpoints and CURVE security shared by the event publisher and its subscribers.

CURVE (ZeroMQ's elliptic-curve encryption and authentication) is optional and meant
for endpoints reachable from other machines; loopback endpoints are private to the
host. Keys are ZeroMQ certificate files as written by
``zmq.auth.create_certificates(dir, name)``: ``name.key`` holds the public key,
``name.key_secret`` both keys. docs/events.md shows the set-up.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from engines.errors import InputError, MerError

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_REPLAY_ENDPOINT",
    "CurveClientKeys",
    "CurveServerKeys",
    "is_loopback",
    "replay_endpoint_for",
    "require_curve_support",
]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
DEFAULT_REPLAY_ENDPOINT = "tcp://127.0.0.1:5557"
_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d+)$")


def replay_endpoint_for(endpoint: str) -> str:
    """The conventional replay endpoint beside an events endpoint: same host, port + 1."""
    match = _TCP.match(endpoint)
    if match is None:
        raise InputError(f"cannot derive a replay endpoint from {endpoint!r} (expected tcp://HOST:PORT); "
                         "give the replay endpoint explicitly")
    return f"tcp://{match['host']}:{int(match['port']) + 1}"


def is_loopback(endpoint: str) -> bool:
    """Whether an endpoint stays on this host (loopback TCP, ipc, inproc)."""
    if endpoint.startswith(("inproc://", "ipc://")):
        return True
    match = _TCP.match(endpoint) or re.match(r"^tcp://(?P<host>[^:]+):\*$", endpoint)
    if match is None:
        return False
    host = match["host"].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or a host name


def _load_keys(path: Path, *, need_secret: bool, role: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the {role} CURVE certificate: {exc}", path=path) from None
    if need_secret and secret is None:
        raise InputError(f"the {role} certificate has no secret key (use the .key_secret file)", path=path)
    return public, secret


@dataclass(frozen=True)
class CurveServerKeys:
    """The publisher's side: its own certificate and, optionally, who may connect.

    ``authorized_clients`` is a folder of client public certificates (``*.key``); only
    those clients are let in. Without it any client that knows the server's public key
    can connect (encryption without authentication).
    """

    secret_key_file: Path
    authorized_clients: Path | None = None

    def start_authenticator(self, context: zmq.Context) -> ThreadAuthenticator:
        """Start the ZAP handler that checks client keys for CURVE server sockets of ``context``."""
        if self.authorized_clients is not None and not Path(self.authorized_clients).is_dir():
            raise InputError("authorized clients must be a folder of *.key certificates",
                             path=self.authorized_clients)
        authenticator = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.auth"))
        authenticator.start()
        location = zmq.auth.CURVE_ALLOW_ANY if self.authorized_clients is None else str(self.authorized_clients)
        authenticator.configure_curve(domain="*", location=location)
        return authenticator

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (call before bind)."""
        public, secret = _load_keys(Path(self.secret_key_file), need_secret=True, role="server")
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True


@dataclass(frozen=True)
class CurveClientKeys:
    """A subscriber's side: its own certificate and the publisher's public certificate."""

    secret_key_file: Path
    server_public_key_file: Path

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the server (call before connect)."""
        public, secret = _load_keys(Path(self.secret_key_file), need_secret=True, role="client")
        server_public, _ = _load_keys(Path(self.server_public_key_file), need_secret=False, role="server public")
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_serverkey = server_public


def require_curve_support() -> None:
    """Fail clearly when this libzmq was built without CURVE (libsodium)."""
    if not zmq.has("curve"):
        raise MerError("this ZeroMQ build has no CURVE support (libzmq without libsodium)")
