"""``mer keys``: CURVE certificates that load, secrets only the owner can read, nothing replaced by accident.

The command runs in-process through the real ``mer`` entry point (``streamer.cli.main``);
tests/test_security.py uses the keys it makes on real sockets.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth

from streamer.cli import main as mer_main

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CURVE (libsodium)")


def keys(capsys, *args: str) -> tuple[int, list[str], str]:
    """Run ``mer keys ARGS``; returns the exit status, stdout lines and stderr."""
    status = mer_main(["keys", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_and_client_keys_load_and_the_client_is_authorized(tmp_path, capsys):
    status, server_out, _ = keys(capsys, "server", tmp_path / "server")
    assert status == 0
    server_public, server_secret = tmp_path / "server/server.key", tmp_path / "server/server.key_secret"
    clients = tmp_path / "server/authorized_clients"
    assert server_out == [
        f"secret key (keep it on the publisher, mode 600): {server_secret}",
        f"public key (give it to subscribers): {server_public}",
        f"authorized clients (put client .key files here, or use `mer keys authorize`): {clients}",
        f"publish with: mer stream --source SOURCE --endpoint tcp://HOST:5556 --curve-secret-key {server_secret} "
        f"--curve-authorized-clients {clients}",
    ]
    assert clients.is_dir() and list(clients.iterdir()) == []

    status, client_out, _ = keys(capsys, "client", tmp_path / "alice", "--name", "alice", "--authorize", clients)
    assert status == 0
    client_public, client_secret = tmp_path / "alice/alice.key", tmp_path / "alice/alice.key_secret"
    assert client_out[0] == f"secret key (keep it with the subscriber, mode 600): {client_secret}"
    assert client_out[2] == f"authorized: {clients / 'alice.key'}"
    assert client_out[3].startswith(f"subscribe with: mer subscribe --endpoint tcp://HOST:5556 --curve-secret-key "
                                    f"{client_secret} --curve-server-key")

    # Real certificates: 40-character Z85 keys, the secret file holding the public file's key.
    for public_file, secret_file in ((server_public, server_secret), (client_public, client_secret)):
        public, no_secret = zmq.auth.load_certificate(public_file)
        same_public, secret = zmq.auth.load_certificate(secret_file)
        assert no_secret is None and same_public == public
        assert len(public) == len(secret) == 40 and public != secret
        assert zmq.curve_public(secret) == public
        assert mode(secret_file) == 0o600
    assert zmq.auth.load_certificate(server_public)[0] != zmq.auth.load_certificate(client_public)[0]
    assert (clients / "alice.key").read_bytes() == client_public.read_bytes()
    # Nothing is left behind but the keys (the scratch folder they were made in is gone).
    assert sorted(p.name for p in (tmp_path / "alice").iterdir()) == ["alice.key", "alice.key_secret"]


def test_secret_files_are_600_whatever_the_umask(tmp_path, capsys):
    previous = os.umask(0)  # files would otherwise be created 666
    try:
        assert keys(capsys, "server", tmp_path / "open")[0] == 0
    finally:
        os.umask(previous)
    assert mode(tmp_path / "open/server.key_secret") == 0o600
    assert mode(tmp_path / "open/server.key") == 0o666  # the public key follows the umask


def test_existing_keys_are_never_replaced_without_force(tmp_path, capsys):
    assert keys(capsys, "server", tmp_path)[0] == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("server.key", "server.key_secret")}

    status, out, err = keys(capsys, "server", tmp_path)
    assert status == 2 and out == []
    assert err.strip() == (f"mer keys: error: {tmp_path / 'server.key'}: already exists; refusing to replace keys "
                           "that may be in use (--force replaces them)")
    (tmp_path / "server.key").unlink()  # half a pair left: the secret is still refused
    status, _, err = keys(capsys, "server", tmp_path)
    assert status == 2 and f"{tmp_path / 'server.key_secret'}: already exists" in err
    assert (tmp_path / "server.key_secret").read_bytes() == before["server.key_secret"]

    old_public, old_secret = zmq.auth.load_certificate(tmp_path / "server.key_secret")
    assert keys(capsys, "server", tmp_path, "--force")[0] == 0
    public, secret = zmq.auth.load_certificate(tmp_path / "server.key_secret")
    assert (public, secret) != (old_public, old_secret)  # a new pair
    assert zmq.auth.load_certificate(tmp_path / "server.key")[0] == public
    assert mode(tmp_path / "server.key_secret") == 0o600


def test_authorize_copies_public_keys_only(tmp_path, capsys):
    clients = tmp_path / "clients"
    clients.mkdir()
    assert keys(capsys, "client", tmp_path / "bob", "--name", "bob")[0] == 0
    public, secret = tmp_path / "bob/bob.key", tmp_path / "bob/bob.key_secret"

    status, _, err = keys(capsys, "authorize", secret, clients)
    assert status == 2 and "holds a secret key: authorize the public .key file" in err
    assert list(clients.iterdir()) == []

    assert keys(capsys, "authorize", public, clients) == (0, [f"authorized: {clients / 'bob.key'}"], "")
    assert keys(capsys, "authorize", public, clients)[0] == 0  # the same key again: nothing to do

    other = tmp_path / "other"
    assert keys(capsys, "client", other, "--name", "bob")[0] == 0  # another "bob"
    status, _, err = keys(capsys, "authorize", other / "bob.key", clients)
    assert status == 2 and f"{clients / 'bob.key'}: another key is authorized under this name" in err
    assert (clients / "bob.key").read_bytes() == public.read_bytes()
    assert keys(capsys, "authorize", other / "bob.key", clients, "--force")[0] == 0
    assert (clients / "bob.key").read_bytes() == (other / "bob.key").read_bytes()


def test_bad_names_and_folders_are_refused_before_any_key_is_made(tmp_path, capsys):
    status, _, err = keys(capsys, "client", tmp_path / "c", "--name", "../evil")
    assert status == 2 and "key name '../evil': use letters, digits" in err
    status, _, err = keys(capsys, "client", tmp_path / "c", "--name", "carol", "--authorize", tmp_path / "missing")
    assert status == 2 and f"{tmp_path / 'missing'}: authorized-clients folder not found" in err
    assert not (tmp_path / "c").exists()
    status, _, err = keys(capsys, "authorize", tmp_path / "nope.key", tmp_path)
    assert status == 2 and "cannot read the client public CURVE certificate" in err
