"""HTTP for mako's own endpoints, and network reads bounded by wall time and by size.

`Connection` speaks HTTP/1.1 to one origin (an LLM provider, the Bot API) through the standard library on
one kept-alive connection. A tick makes one provider call and a few posts; `requests` would cost every tick
more than all of mako's own code does (docs/PERFORMANCE.md). It keeps what these calls need of what
`requests` did: verified TLS against the system's CA store (SSL_CERT_FILE and SSL_CERT_DIR honoured), the
proxy variables (https_proxy, http_proxy, all_proxy, no_proxy; an http:// proxy, with user:password if
given), and no redirects (a provider or the Bot API that redirects has answered with an error). The http
actions, which fetch any page and follow redirects, use `requests`, loaded when one runs.

A read timeout restarts with every byte, so a server that drips its headers or body one byte at a time
would hold a call for ever: `Connection` shuts its socket down at the exchange's deadline. `within` bounds
a whole call, name lookup and connecting included, by running it in a helper thread and giving up on it at
a wall-clock limit; the process moves on, and the abandoned thread ends with the connection, which the
caller closes.

Bodies are read raw and decompressed here with a bounded decompressor, so the size cap holds for a gzip
bomb — or a gzip inside a gzip — whichever client read them.
"""

import base64
import os
import select
import socket
import threading
import time
import zlib
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024


class BodyTooLarge(ValueError):
    """The body (or what it decompresses to) is over the cap."""


class EncodingRefused(ValueError):
    """A Content-Encoding this reader does not decode (br, zstd, ...)."""


def within(seconds, fn, *args, **kw):
    """fn(*args, **kw), or TimeoutError once `seconds` of wall time have passed; fn's exception is raised."""
    box = {}
    done = threading.Event()

    def run():
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 — handed to the caller's thread
            box["error"] = e
        finally:
            done.set()

    worker = threading.Thread(target=run, name="bounded-io", daemon=True)
    worker.start()
    if not done.wait(max(0.0, seconds)):
        raise TimeoutError(f"no complete answer within {seconds:.1f}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _decoder(coding):
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompressobj()
    raise EncodingRefused(f"content encoding {coding[:40]!r} is not read")


def decode(data, content_encoding, max_bytes):
    """`data` with its Content-Encoding layers undone, each bounded: (bytes of at most max_bytes + 1, complete?).

    Layers are listed in the order they were applied, so they are undone last first.
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    complete = True
    for coding in reversed(codings):
        if coding == "identity":
            continue
        d = _decoder(coding)
        try:
            out = d.decompress(data, max_bytes + 1)
        except zlib.error:
            if coding != "deflate":
                raise
            d = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send it
            out = d.decompress(data, max_bytes + 1)
        if len(out) > max_bytes or d.unconsumed_tail:
            complete = False
        data = out[:max_bytes + 1]
    return data, complete


def read_capped(read, content_encoding, max_bytes, deadline=None):
    """A body read with `read(n)` (raw bytes, b"" at the end), then decoded; both capped: (bytes, complete?).

    `complete` is False when the body (raw or decoded) went over max_bytes; at most max_bytes + 1 bytes
    are returned so the caller can tell. `deadline` (time.monotonic()) is checked between reads, so a
    server that drips its body cannot hold the call past it.
    """
    raw = bytearray()
    complete = True
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("body still arriving at the deadline")
        chunk = read(min(CHUNK, max_bytes + 1 - len(raw)))
        if not chunk:
            break
        raw += chunk
        if len(raw) > max_bytes:
            complete = False
            break
    data, decoded_complete = decode(bytes(raw), content_encoding, max_bytes)
    return data, complete and decoded_complete and len(data) <= max_bytes


def read_body(resp, max_bytes, deadline=None):
    """A requests response's body (stream=True), read raw, decoded and capped: (bytes, complete?)."""
    return read_capped(lambda n: resp.raw.read(n, decode_content=False), resp.headers.get("Content-Encoding"),
                       max_bytes, deadline)


class Response:
    """What `Connection.request` read: status, reason, headers (case-insensitive .get), the decoded body (at
    most max_bytes + 1 bytes) and whether it was all there."""

    def __init__(self, status, reason, headers, body, complete):
        self.status, self.reason, self.headers, self.body, self.complete = status, reason, headers, body, complete


def _no_proxy_match(host, port, no_proxy):
    """True when `host` is listed in a no_proxy value: `*`, a name (itself and its subdomains, with or
    without a leading dot), host:port, or an address or CIDR block."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".").strip("[]")
        if host == name or host.endswith("." + name):
            return True
        if "/" in name or name[:1].isdigit() or ":" in name:
            import ipaddress
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                continue
    return False


def proxy_for(scheme, host, port, environ=None):
    """The proxy URL the environment sets for this origin, or None (lower-case names win, as in curl)."""
    env = os.environ if environ is None else environ

    def var(name):
        return env.get(name) or env.get(name.upper()) or ""

    if _no_proxy_match(host, port, var("no_proxy")):
        return None
    return var(f"{scheme}_proxy") or var("all_proxy") or None


class Connection:
    """One kept-alive HTTP/1.1 connection to the origin of `base_url`. A request that fails or is cut short
    closes it; the next one connects again."""

    def __init__(self, base_url, environ=None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.proxy = proxy_for(self.scheme, self.host, self.port, environ)
        self.conn = None

    def _connect(self, timeout):
        import http.client
        if self.conn is not None and self.conn.sock is not None:
            # A kept-alive connection with something to read between exchanges was closed by the server
            # (or holds bytes no request asked for): never send on it.
            if select.select([self.conn.sock], [], [], 0)[0]:
                self.close()
        if self.conn is not None:
            return self.conn
        context = None
        if self.scheme == "https":
            import ssl
            context = ssl.create_default_context()
        if not self.proxy:
            if context is not None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            return self.conn
        proxy = urlsplit(self.proxy if "://" in self.proxy else "http://" + self.proxy)
        if proxy.scheme != "http" or not proxy.hostname:
            raise ValueError(f"proxy scheme {proxy.scheme!r} is not supported (only http:// proxies)")
        auth = {}
        if proxy.username is not None:
            pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
            auth["Proxy-Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        if context is not None:  # a CONNECT tunnel through the proxy, TLS end to end
            self.conn = http.client.HTTPSConnection(proxy.hostname, proxy.port or 80, timeout=timeout,
                                                    context=context)
            self.conn.set_tunnel(self.host, self.port, headers=auth)
        else:  # the proxy is asked for the absolute URL
            self.conn = http.client.HTTPConnection(proxy.hostname, proxy.port or 80, timeout=timeout)
            self.conn.proxy_headers = auth
        return self.conn

    def request(self, method, url, body=None, headers=None, connect_timeout=10.0, read_timeout=30.0,
                max_bytes=CHUNK):
        """One exchange on this connection: a Response. Raises OSError (TimeoutError for a timeout),
        http.client.HTTPException or ValueError (a bad URL or header, a refused encoding)."""
        from http.client import IncompleteRead
        parts = urlsplit(url)
        if (parts.scheme, parts.hostname, parts.port or self.port) != (self.scheme, self.host, self.port):
            raise ValueError("the URL is not on this connection's origin")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        deadline = time.monotonic() + read_timeout
        conn = self._connect(connect_timeout)
        headers = dict(headers or {})
        if self.proxy and self.scheme == "http":
            target = f"http://{parts.netloc.rpartition('@')[2]}{target}"
            headers.update(conn.proxy_headers)
        # A read timeout restarts with every byte: at the deadline the socket is shut down instead, which
        # ends a status line or headers dripped a byte at a time as surely as a dripped body.
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), self._cut, args=(conn,))
        watchdog.daemon = True
        self.was_cut = False
        watchdog.start()
        try:
            conn.timeout = connect_timeout
            if conn.sock is not None:  # a kept-alive socket still has the last call's read timeout
                conn.sock.settimeout(connect_timeout)
            conn.request(method, target, body=body, headers=headers)
            conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
            resp = conn.getresponse()
            try:
                data, complete = read_capped(resp.read1, resp.getheader("Content-Encoding"), max_bytes, deadline)
            except zlib.error as e:
                raise EncodingRefused(f"body does not decode: {e}") from None
            if self.was_cut:
                raise TimeoutError  # the watchdog's shutdown reads as an end of body
            if complete and resp.length:  # http.client's read1 ends quietly where the connection did
                raise IncompleteRead(b"", resp.length)
        except BaseException:
            watchdog.cancel()
            self.close()  # a half-read connection is never reused
            if self.was_cut:
                raise TimeoutError(f"no complete answer within {read_timeout:.1f}s") from None
            raise
        watchdog.cancel()
        if not complete or resp.will_close or self.was_cut:
            self.close()
        return Response(resp.status, resp.reason, resp.msg, data, complete)

    def _cut(self, conn):
        sock = conn.sock
        if sock is not None:
            self.was_cut = True
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
