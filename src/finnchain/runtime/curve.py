"""ZeroMQ CURVE on the chain's links: every link encrypted, every listener accepting only the
peers it is told to (the upstream stage, or the configured clients).

Keys are ZeroMQ certificate files (``zmq.auth.create_certificates``): ``<name>.key`` holds the
public key, ``<name>.key_secret`` both. A listening socket is a CURVE server with its own
secret certificate and a ZAP domain; a ``ThreadAuthenticator`` admits only the public keys
found in that domain's folder. A connecting socket knows the server's public key.
``finnchain keys DIR NAME...`` makes the certificates that are missing.
"""

from __future__ import annotations

from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


def make_certificates(folder: Path, names: list[str]) -> list[str]:
    """Create ``<name>.key``/``.key_secret`` in ``folder`` for the names that lack them."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for name in names:
        if not (folder / f"{name}.key_secret").is_file():
            zmq.auth.create_certificates(str(folder), name)
            made.append(name)
    for secret in folder.glob("*.key_secret"):
        secret.chmod(0o600)
    return made


def public_key(path: str | Path) -> bytes:
    public, _ = zmq.auth.load_certificate(str(path))
    return public


class Guard:
    """The ZAP handler of one context: which public keys may connect, per ZAP domain."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()

    def allow(self, domain: str, folder: str | Path) -> None:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"no folder of allowed public keys at {folder}")
        self.auth.configure_curve(domain=domain, location=str(folder))

    def stop(self) -> None:
        self.auth.stop()


def serve(sock: zmq.Socket, secret_cert: str | Path, domain: str) -> None:
    """Make ``sock`` (before bind) a CURVE server for ``domain`` with its own certificate."""
    public, secret = zmq.auth.load_certificate(str(secret_cert))
    sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.zap_domain = domain.encode()
    sock.curve_server = True


def connect_with(sock: zmq.Socket, secret_cert: str | Path, server_cert: str | Path) -> None:
    """Make ``sock`` (before connect) a CURVE client of the server with ``server_cert``."""
    public, secret = zmq.auth.load_certificate(str(secret_cert))
    sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.curve_serverkey = public_key(server_cert)
