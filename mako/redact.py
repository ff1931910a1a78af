"""Scrub secrets out of every string before it is stored, printed, posted or sent to a provider.

Configured secrets (API keys, the bot token) are replaced wherever they appear, along with anything shaped
like a Telegram `bot<token>` URL segment and bearer headers. Applied to strings and, recursively, to the
dicts and lists that become payload files.
"""

import re

MARK = "<redacted>"
BOT_TOKEN_RE = re.compile(r"bot\d{3,}:[A-Za-z0-9_-]{10,}")
BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
MIN_SECRET_LEN = 4


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
