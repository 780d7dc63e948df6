"""``mer keys``: the CURVE certificates that secure events published beyond this host.

``mer keys server DIR`` makes the publisher's key pair and an empty authorized-clients
folder; ``mer keys client DIR --name NAME`` makes a subscriber's pair (``--authorize``
also lets it in); ``mer keys authorize CLIENT.key FOLDER`` lets in a client whose pair was
made elsewhere. Secret files are created mode 600 inside a private scratch folder, so they
are never readable by others, not even for a moment, and existing keys are never replaced
without ``--force``: subscribers hold the old public key. docs/events.md shows the set-up.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from pathlib import Path

import zmq.auth

from engines.errors import InputError
from streamer.event_transport import read_certificate, require_curve_support

__all__ = ["AUTHORIZED_CLIENTS", "authorize_client", "create_key_pair"]

AUTHORIZED_CLIENTS = "authorized_clients"  # the folder `mer keys server` makes beside the server's keys
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser(
        "keys", help="make CURVE keys for events published on a network",
        description="Make the ZeroMQ CURVE certificates that encrypt events and admit only known subscribers "
        "(docs/events.md). Existing keys are never replaced without --force.")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    server = actions.add_parser("server", help="the publisher's key pair and its authorized-clients folder")
    server.add_argument("dir", type=Path, metavar="DIR", help="folder for NAME.key, NAME.key_secret and "
                        f"{AUTHORIZED_CLIENTS}/")
    server.add_argument("--name", default="server", help="file name of the key pair (default: server)")
    server.add_argument("--force", action="store_true", help="replace an existing key pair (subscribers then need "
                        "the new public key)")
    server.set_defaults(run=run_server)

    client = actions.add_parser("client", help="a subscriber's key pair")
    client.add_argument("dir", type=Path, metavar="DIR", help="folder for NAME.key and NAME.key_secret")
    client.add_argument("--name", required=True, help="the subscriber's name, also its file name in the "
                        "publisher's authorized clients")
    client.add_argument("--authorize", type=Path, metavar="FOLDER",
                        help=f"also add its public key to this authorized-clients folder (the server's {AUTHORIZED_CLIENTS})")
    client.add_argument("--force", action="store_true", help="replace an existing key pair (and its authorization)")
    client.set_defaults(run=run_client)

    authorize = actions.add_parser("authorize", help="let a subscriber's public key in")
    authorize.add_argument("public_key", type=Path, metavar="CLIENT.key", help="the subscriber's public certificate")
    authorize.add_argument("folder", type=Path, metavar="FOLDER",
                           help=f"the publisher's authorized-clients folder (the server's {AUTHORIZED_CLIENTS})")
    authorize.add_argument("--force", action="store_true", help="replace another key already authorized under "
                           "the same name")
    authorize.set_defaults(run=run_authorize)


def create_key_pair(folder: Path, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``folder/name.key`` (public) and ``folder/name.key_secret`` (mode 600); returns both paths.

    The pair is made in a scratch folder that only the owner can enter (``mkdtemp``) and
    moved into place; without ``force`` an existing file of either name is an error, and the
    move is a hard link, which fails rather than replace a file that appeared meanwhile.
    """
    require_curve_support()
    if not _NAME.match(name):
        raise InputError(f"key name {name!r}: use letters, digits, '_', '.' and '-' (not first)", column="--name")
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not force:
        _refuse_existing(public, secret)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{name}.") as scratch:
        made_public, made_secret = (Path(path) for path in zmq.auth.create_certificates(scratch, name))
        made_secret.chmod(0o600)
        for made, final in ((made_secret, secret), (made_public, public)):
            try:
                (os.replace if force else os.link)(made, final)
            except FileExistsError:
                _refuse_existing(final)
    return public, secret


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise InputError("already exists; refusing to replace keys that may be in use (--force replaces them)",
                             path=path)


def authorize_client(public_key: Path, folder: Path, *, force: bool = False) -> Path:
    """Copy a client's public certificate into an authorized-clients folder; returns the copy.

    Refuses a secret certificate (it must stay with its client) and, without ``force``,
    another key already authorized under the same file name. Authorising the same key
    twice is fine.
    """
    client_public, client_secret = read_certificate(public_key, need_secret=False, role="client public")
    if client_secret is not None:
        raise InputError("this certificate holds a secret key: authorize the public .key file and keep the "
                         ".key_secret with its subscriber", path=public_key)
    if not folder.is_dir():
        raise InputError(f"authorized-clients folder not found (`mer keys server` makes DIR/{AUTHORIZED_CLIENTS})",
                         path=folder)
    target = folder / f"{public_key.name.removesuffix('.key')}.key"
    if target.exists() and not force:
        if read_certificate(target, need_secret=False, role="authorized client")[0] == client_public:
            return target
        raise InputError("another key is authorized under this name; refusing to replace it (--force replaces it)",
                         path=target)
    shutil.copyfile(public_key, target)
    return target


def run_server(args: argparse.Namespace) -> int:
    public, secret = create_key_pair(args.dir, args.name, force=args.force)
    clients = args.dir / AUTHORIZED_CLIENTS
    clients.mkdir(exist_ok=True)
    print(f"secret key (keep it on the publisher, mode 600): {secret}")
    print(f"public key (give it to subscribers): {public}")
    print(f"authorized clients (put client .key files here, or use `mer keys authorize`): {clients}")
    print(f"publish with: mer stream --source SOURCE --endpoint tcp://HOST:5556 --curve-secret-key {secret} "
          f"--curve-authorized-clients {clients}")
    return 0


def run_client(args: argparse.Namespace) -> int:
    if args.authorize is not None and not args.authorize.is_dir():  # before making keys a retry would refuse
        raise InputError(f"authorized-clients folder not found (`mer keys server` makes DIR/{AUTHORIZED_CLIENTS})",
                         path=args.authorize)
    public, secret = create_key_pair(args.dir, args.name, force=args.force)
    print(f"secret key (keep it with the subscriber, mode 600): {secret}")
    print(f"public key (authorize it on the publisher): {public}")
    if args.authorize is not None:
        print(f"authorized: {authorize_client(public, args.authorize, force=args.force)}")
    print(f"subscribe with: mer subscribe --endpoint tcp://HOST:5556 --curve-secret-key {secret} "
          "--curve-server-key SERVER.key")
    return 0


def run_authorize(args: argparse.Namespace) -> int:
    print(f"authorized: {authorize_client(args.public_key, args.folder, force=args.force)}")
    return 0
