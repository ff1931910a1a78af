"""Text for a terminal or a one-line post: every control, line-break and invisible character made visible.

Strings the model or the web can reach (drift flags, failure reasons, a pause reason written from the chat)
may hold escape sequences that rewrite the operator's screen, or invisible characters that hide what a
line says. They are shown as `\\xNN` / `\\uNNNN` escapes instead; ordinary text, emoji included, is kept.
"""

import unicodedata

# Categories never printed as they are: controls, format characters (zero-width, bidi overrides),
# surrogates, private use, unassigned, and line/paragraph separators.
HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _escape(ch):
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text, limit=None):
    """`text` on one line with hidden characters escaped, cut to `limit` characters with a marker."""
    text = "" if text is None else str(text)
    out = []
    for ch in text:
        if ch == " " or (ch.isprintable() and ch not in "\u2028\u2029"):
            out.append(ch)
        elif ch.isspace() and unicodedata.category(ch) not in HIDDEN_CATEGORIES and ch not in "\t\n\r\x0b\x0c":
            out.append(" ")  # an exotic blank (no-break space, em space) reads as a space
        else:
            out.append(_escape(ch))
    shown = "".join(out)
    if limit is not None and len(shown) > limit:
        shown = shown[:max(limit - 1, 0)] + "…"
    return shown
