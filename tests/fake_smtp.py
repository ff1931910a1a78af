"""A local fake SMTP server (standard library only) for the email executor's tests.

It speaks enough ESMTP for `smtplib`: EHLO/HELO, STARTTLS or implicit TLS, AUTH PLAIN/LOGIN, MAIL, RCPT,
DATA, RSET, NOOP, QUIT. Every accepted message is recorded with whether it travelled over TLS. Faults are
scripted per command (`replies={"RCPT": "550 5.1.1 no such user"}`) or as `hang=True` (accept the
connection and never greet). A self-signed certificate for 127.0.0.1 is made once with `openssl`.
"""

import base64
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
from pathlib import Path


def make_cert(folder):
    """(certfile, keyfile) of a self-signed certificate for 127.0.0.1 and localhost; None without openssl."""
    if not shutil.which("openssl"):
        return None
    folder = Path(folder)
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class FakeSMTP:
    """tls: "starttls" (offered, like port 587), "implicit" (port 465 style), or "none" (no TLS at all)."""

    def __init__(self, cert, key, tls="starttls", username=None, password=None, replies=None, hang=False):
        self.tls, self.username, self.password = tls, username, password
        self.replies = dict(replies or {})
        self.hang = hang
        self.messages = []     # dicts: mail_from, rcpt_to, data, tls, auth
        self.commands = []
        self._closing = threading.Event()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(cert), str(key))
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                fake._session(self)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self):
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- one connection -------------------------------------------------------------------------------------

    def _session(self, h):
        conn = h.connection
        if self.hang:
            self._closing.wait(30)
            return
        secure = False
        if self.tls == "implicit":
            conn = self.context.wrap_socket(conn, server_side=True)
            secure = True
        rfile, wfile = conn.makefile("rb"), conn.makefile("wb")

        def say(line):
            wfile.write(line.encode() + b"\r\n")
            wfile.flush()

        say("220 fake.smtp ESMTP ready")
        mail_from, rcpt, authed = None, [], None
        while True:
            raw = rfile.readline(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            self.commands.append(verb)
            if verb in self.replies:
                say(self.replies[verb])
                continue
            if verb in ("EHLO", "HELO"):
                extensions = ["8BITMIME", "SMTPUTF8"]
                if self.tls == "starttls" and not secure:
                    extensions.append("STARTTLS")
                if self.username and (secure or self.tls == "none"):
                    extensions.append("AUTH PLAIN LOGIN")
                say("250-fake.smtp" if extensions else "250 fake.smtp")
                for i, ext in enumerate(extensions):
                    say(("250 " if i == len(extensions) - 1 else "250-") + ext)
            elif verb == "STARTTLS" and self.tls == "starttls" and not secure:
                say("220 go ahead")
                conn = self.context.wrap_socket(conn, server_side=True)
                rfile, wfile = conn.makefile("rb"), conn.makefile("wb")
                secure = True
            elif verb == "AUTH":
                authed = self._auth(line, rfile, say)
                if authed is None:
                    say("535 5.7.8 authentication failed")
                else:
                    say("235 2.7.0 accepted")
            elif verb == "MAIL":
                if self.username and authed is None:
                    say("530 5.7.0 authentication required")
                    continue
                mail_from, rcpt = line[10:].strip(), []
                say("250 ok")
            elif verb == "RCPT":
                rcpt.append(line[8:].strip())
                say("250 ok")
            elif verb == "DATA":
                say("354 end with <CRLF>.<CRLF>")
                data = bytearray()
                while True:
                    chunk = rfile.readline(1 << 20)
                    if not chunk or chunk in (b".\r\n", b".\n"):
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.messages.append({"mail_from": mail_from, "rcpt_to": rcpt, "data": bytes(data),
                                      "tls": secure, "auth": authed})
                say("250 2.0.0 queued")
            elif verb in ("RSET", "NOOP"):
                say("250 ok")
            elif verb == "QUIT":
                say("221 bye")
                return
            else:
                say("502 5.5.2 command not recognised")

    def _auth(self, line, rfile, say):
        parts = line.split()
        mech = parts[1].upper() if len(parts) > 1 else ""
        if mech == "PLAIN":
            blob = parts[2] if len(parts) > 2 else None
            if blob is None:
                say("334 ")
                blob = rfile.readline().decode().strip()
            fields = base64.b64decode(blob).split(b"\0")
            user, password = fields[-2].decode(), fields[-1].decode()
        elif mech == "LOGIN":
            say("334 VXNlcm5hbWU6")
            user = base64.b64decode(rfile.readline().strip()).decode()
            say("334 UGFzc3dvcmQ6")
            password = base64.b64decode(rfile.readline().strip()).decode()
        else:
            return None
        return user if (user, password) == (self.username, self.password) else None


def closed_smtp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
