"""Loopback destinations for the notification tests: an SMTP server with STARTTLS and login (aiosmtpd) and
an HTTP server whose answer each test chooses. Both bind 127.0.0.1 only and are stopped by their fixture."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key; the certificate doubles as the client's CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + dt.timedelta(days=365 * 30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpServer:
    port: int
    ca_file: Path
    messages: list[Any] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


class _Handler:
    def __init__(self, box: SmtpServer) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes, policy

        self.box.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


def smtp_server(folder: Path, user: str, password: str) -> Iterator[SmtpServer]:
    """STARTTLS required; AUTH only over TLS and only for ``user``/``password``."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = self_signed_cert(folder)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    box = SmtpServer(port=free_port(), ca_file=cert)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
        if ok:
            box.logins.append((data.login.decode(), mechanism))
        return AuthResult(success=ok)

    controller = Controller(_Handler(box), hostname="127.0.0.1", port=box.port, tls_context=ctx,
                            require_starttls=True, authenticator=authenticator, auth_required=True,
                            auth_require_tls=True, server_hostname="127.0.0.1")
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class HttpServer:
    port: int
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    #: status codes to answer, one per request (then 200); "hang" holds the request until the server stops
    script: list[Any] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def http_server() -> Iterator[HttpServer]:
    box = HttpServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            box.requests.append((self.path, dict(self.headers), json.loads(body or b"null")))
            status = box.script.pop(0) if box.script else 200
            if status == "hang":
                box.release.wait(30)
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}' if status == 200 else b'{"ok": false}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield box
    finally:
        box.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def smtps_server(folder: Path) -> Iterator[SmtpServer]:
    """Implicit TLS from the first byte (port-465 style); no login."""
    from aiosmtpd.controller import Controller

    cert, key = self_signed_cert(folder)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    box = SmtpServer(port=free_port(), ca_file=cert)
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=box.port, ssl_context=ctx,
                            server_hostname="127.0.0.1")
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
