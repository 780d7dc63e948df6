"""ZeroMQ endpoints and CURVE security shared by the event publisher and its subscribers.

Loopback endpoints (and ipc/inproc) are private to the host; an endpoint other hosts can
reach carries events only under CURVE (ZeroMQ's elliptic-curve encryption and
authentication), unless the caller explicitly accepts clear text (``insecure``).

Keys are ZeroMQ certificate files as written by ``mer keys`` (``zmq.auth.create_certificates``):
``name.key`` holds the public key, ``name.key_secret`` both keys. The publisher admits the
clients whose public ``*.key`` files are in its authorized-clients folder; the folder is read
on every connection, so adding or removing a file takes effect without a restart.
docs/events.md shows the set-up.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from engines.errors import InputError, MerError

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_REPLAY_ENDPOINT",
    "CurveClientKeys",
    "CurveServerKeys",
    "HandshakeError",
    "HandshakeMonitor",
    "check_exposure",
    "is_loopback",
    "read_certificate",
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
        return False  # an interface name, a host name or "*"


def check_exposure(endpoint: str, curve: CurveServerKeys | None, *, insecure: bool) -> None:
    """Refuse to serve events in clear text where other hosts can reach them, unless told to.

    A monitoring stream says who is on camera and what they feel: on a network it must be
    encrypted and limited to known subscribers. ``insecure=True`` (``mer stream --insecure``)
    is the explicit opt-out, and is logged as a warning.
    """
    if curve is not None or is_loopback(endpoint):
        return
    if not insecure:
        raise InputError(f"{endpoint} is reachable from other hosts: secure it with CURVE keys (`mer keys server "
                         "DIR`, then --curve-secret-key; docs/events.md) or accept clear text with --insecure")
    log.warning("%s is reachable from other hosts but not encrypted (insecure mode); consider CURVE keys "
                "(docs/events.md)", endpoint)


def read_certificate(path: str | Path, *, need_secret: bool, role: str) -> tuple[bytes, bytes | None]:
    """The (public, secret) keys of a certificate file; warns when a secret file is readable by others."""
    path = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the {role} CURVE certificate: {exc}", path=path) from None
    if need_secret and secret is None:
        raise InputError(f"the {role} certificate has no secret key (use the .key_secret file)", path=path)
    if secret is not None and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s holds a secret key but other users may read it; chmod 600 it", path)
    return public, secret


class _AuthorizedClients:
    """ZAP credentials check: a client is in when its public key is in one of the folder's ``*.key`` files.

    Read at every handshake (subscribers connect rarely), so authorising or revoking a
    client is adding or deleting a file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._refused: set[bytes] = set()  # keys already logged: a refused client retries every 100 ms

    def public_keys(self, *, strict: bool) -> set[bytes]:
        keys = set()
        for path in sorted(self.folder.glob("*.key")):
            try:
                keys.add(read_certificate(path, need_secret=False, role="authorized client")[0])
            except InputError as exc:
                if strict:
                    raise
                log.warning("skipping %s", exc)
        return keys

    def callback(self, domain: str, client_key: bytes) -> bool:
        allowed = client_key in self.public_keys(strict=False)
        if not allowed and client_key not in self._refused and len(self._refused) < 1000:
            self._refused.add(client_key)
            log.warning("refused a subscriber whose CURVE key %s... is not in %s (logged once per key)",
                        client_key.decode()[:8], self.folder)
        return allowed


@dataclass(frozen=True)
class CurveServerKeys:
    """The publisher's side: its own certificate and, optionally, who may connect.

    ``authorized_clients`` is a folder of client public certificates (``*.key``); only
    those clients are let in. Without it any client that knows the server's public key
    can connect (encryption without authentication), which is logged as a warning.
    Both are checked here, so a bad key file fails before anything starts.
    """

    secret_key_file: Path
    authorized_clients: Path | None = None
    _keys: tuple[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        public, secret = read_certificate(self.secret_key_file, need_secret=True, role="server")
        object.__setattr__(self, "_keys", (public, secret))
        if self.authorized_clients is not None:
            folder = Path(self.authorized_clients)
            if not folder.is_dir():
                raise InputError("authorized clients must be a folder of *.key certificates", path=folder)
            if not _AuthorizedClients(folder).public_keys(strict=True):
                log.warning("%s holds no client keys yet: no subscriber can connect until one is added "
                            "(mer keys authorize)", folder)

    def start_authenticator(self, context: zmq.Context) -> ThreadAuthenticator:
        """Start the ZAP handler that checks client keys for CURVE server sockets of ``context``."""
        authenticator = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.auth"))
        authenticator.start()
        if self.authorized_clients is None:
            log.warning("CURVE without authorized clients: any subscriber that has the server's public key is let in")
            authenticator.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        else:
            authenticator.configure_curve_callback(domain="*",
                                                   credentials_provider=_AuthorizedClients(Path(self.authorized_clients)))
        return authenticator

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (call before bind)."""
        socket.curve_publickey, socket.curve_secretkey = self._keys
        socket.curve_server = True


@dataclass(frozen=True)
class CurveClientKeys:
    """A subscriber's side: its own certificate and the publisher's public certificate (checked here)."""

    secret_key_file: Path
    server_public_key_file: Path
    _keys: tuple[bytes, bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        public, secret = read_certificate(self.secret_key_file, need_secret=True, role="client")
        server_public, _ = read_certificate(self.server_public_key_file, need_secret=False, role="server public")
        object.__setattr__(self, "_keys", (public, secret, server_public))

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the server (call before connect)."""
        socket.curve_publickey, socket.curve_secretkey, socket.curve_serverkey = self._keys


def require_curve_support() -> None:
    """Fail clearly when this libzmq was built without CURVE (libsodium)."""
    if not zmq.has("curve"):
        raise MerError("this ZeroMQ build has no CURVE support (libzmq without libsodium)")


class HandshakeError(MerError):
    """The publisher refused this subscriber's security handshake: a key is missing or wrong."""


class HandshakeMonitor:
    """Tells a subscriber *why* it receives nothing when the publisher rejects its keys.

    ZeroMQ retries a refused connection forever and in silence; a socket monitor sees each
    handshake fail. A refusal by the publisher's authenticator, or a security-mechanism
    mismatch (CURVE on one side only), is final at once. A handshake the publisher just
    drops is final after ``drops_to_fail`` in a row without a success: that is what a wrong
    server key looks like, and also, when the connection breaks before the mismatch is
    reported, a mechanism mismatch; one drop alone can be a publisher restarting.
    """

    _EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
               | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

    def __init__(self, socket: zmq.Socket, endpoint: str, *, curve: bool, drops_to_fail: int = 5) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.drops_to_fail = drops_to_fail
        self._socket = socket
        self._drops = 0
        self.monitor = socket.get_monitor_socket(self._EVENTS)

    def check(self) -> None:
        """Read the pending handshake events; raise :class:`HandshakeError` on a final failure."""
        while self.monitor.poll(0):
            message = recv_monitor_message(self.monitor)
            problem = self._problem(message["event"], message["value"])
            if problem is not None:
                raise HandshakeError(f"{self.endpoint}: {problem}")

    def _problem(self, event: int, value: int) -> str | None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._drops = 0
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            if value == 400:
                return "the publisher refused this subscriber's CURVE key (it is not among its authorized clients)"
            log.warning("%s: the publisher's authenticator answered %d; retrying", self.endpoint, value)
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if self.curve:
                return "the publisher does not use CURVE; connect without CURVE keys"
            return "the publisher requires CURVE: give --curve-secret-key and --curve-server-key (docs/events.md)"
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._drops += 1
            if self._drops < self.drops_to_fail:
                log.debug("%s: handshake dropped; retrying", self.endpoint)
                return None
            if self.curve:
                return (f"the publisher dropped {self._drops} handshakes in a row: is --curve-server-key its "
                        "public key, and does it use CURVE?")
            return (f"the publisher dropped {self._drops} handshakes in a row: does it require CURVE "
                    "(--curve-secret-key and --curve-server-key)?")
        log.warning("%s: handshake failed (%s, %d); retrying", self.endpoint, zmq.Event(event).name, value)
        return None

    def close(self) -> None:
        self._socket.disable_monitor()
        self.monitor.close()
