"""Scrub secrets out of every string before it is stored, printed, posted or sent to a provider.

Configured secrets (API keys, the bot token) are replaced wherever they appear, along with anything shaped
like a Telegram `bot<token>` URL segment and bearer headers. Applied to strings and, recursively, to the
dicts and lists that become payload files.
"""

import re

from .text import marker

MARK = "<redacted>"
BOT_TOKEN_RE = re.compile(r"bot\d{3,}:[A-Za-z0-9_-]{10,}")
BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
MIN_SECRET_LEN = 4
# Output is scrubbed before it is cut, so a secret straddling the cut is still caught; read this much past
# the cap to give the scrubber the whole secret.
SCRUB_MARGIN = 64 * 1024


class Redactor:
    def __init__(self, secrets=()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)

    def text(self, value):
        """`value` as a string with every secret replaced."""
        if value is None:
            return ""
        if not isinstance(value, str):
            value = str(value)
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MARK)
        value = BOT_TOKEN_RE.sub("bot" + MARK, value)
        return BEARER_RE.sub(lambda m: m.group(1) + MARK, value)

    __call__ = text

    def obj(self, value):
        """A deep copy of a JSON-like value with every string (keys too) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.obj(v) for v in value]
        return value

    def headers(self, headers):
        """Request headers for the record: Authorization and friends replaced outright."""
        out = {}
        for k, v in (headers or {}).items():
            low = k.lower()
            if low in ("authorization", "x-api-key", "proxy-authorization", "cookie"):
                out[k] = MARK
            else:
                out[k] = self.text(v)
        return out


def scrub_with_token(redactor, token, text):
    """`text` scrubbed, the bot token replaced even where the redactor was made without it (a client's own
    errors carry its URL)."""
    text = str(text)
    if token:
        text = text.replace(token, MARK)
    return redactor.text(text)


def _drop_partial_secret(text, secrets):
    """Cut a secret's leading fragment off the end of text that was read only in part."""
    for secret in secrets:
        for k in range(min(len(secret) - 1, len(text)), 0, -1):
            if text.endswith(secret[:k]):
                text = text[:-k]
                break
    return text


def clip(redactor, data, limit, total=None, encoding="utf-8"):
    """Decode, scrub, then cut to `limit` bytes with a visible marker: (text, truncated).

    `data` is what was read; `total` the full size when known (None: there was more, size unknown).
    """
    partial = total is None or total > len(data)
    text = redactor.text(data.decode(encoding, "replace"))
    if partial:
        text = _drop_partial_secret(text, getattr(redactor, "secrets", ()))
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit and not partial:
        return text, False
    kept = raw[:limit].decode("utf-8", "ignore")
    if total is None:
        return kept + marker(f"more than {limit}", "bytes"), True
    omitted = total - len(data) + len(raw) - len(kept.encode("utf-8", "surrogatepass"))
    return kept + marker(omitted, "bytes"), True
