"""Network reads bounded by wall time and by size, whatever the installed requests and urllib3 do.

A read timeout restarts with every byte, so a server that drips its headers or body one byte at a time
would hold a call for ever: `within` runs the whole exchange (connect, headers, body) in a helper thread
and gives up on it at a wall-clock limit. The process moves on; the abandoned thread ends with the
connection (a tick is a short-lived process).

Bodies are read raw (`decode_content=False`) and decompressed here with a bounded decompressor, so the
size cap holds for a gzip bomb — or a gzip inside a gzip — under urllib3 1.26 as under 2.x.
"""

import threading
import time
import zlib

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


def read_body(resp, max_bytes, deadline=None):
    """A requests response's body (stream=True), decoded and capped: (bytes, complete?).

    `complete` is False when the body (raw or decoded) went over max_bytes; at most max_bytes + 1 bytes
    are returned so the caller can tell. `deadline` (time.monotonic()) is checked between reads.
    """
    raw = bytearray()
    complete = True
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("body still arriving at the deadline")
        chunk = resp.raw.read(min(CHUNK, max_bytes + 1 - len(raw)), decode_content=False)
        if not chunk:
            break
        raw += chunk
        if len(raw) > max_bytes:
            complete = False
            break
    data, decoded_complete = decode(bytes(raw), resp.headers.get("Content-Encoding"), max_bytes)
    return data, complete and decoded_complete and len(data) <= max_bytes
