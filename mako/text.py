"""Text the model (or a web page it read) wrote, made safe for the places the wrapper puts it.

Line-oriented files split on "\\n" only, yet other readers (str.splitlines, terminals, the model itself) also
break lines at \\r, \\v, \\f, \\x1c-\\x1e, U+0085, U+2028 and U+2029. Invisible characters (zero-width, bidi
overrides) and control sequences (ANSI/OSC escapes) make what is shown differ from what is there. So:

- `visible` shows every such character as an escape (`\\u200b`, `\\x1b`, `\\n`), for one-line viewers and the
  operator's terminal;
- `fold_lines` turns a text into one line, its lines joined by " / " (the journal line);
- `neutralise` keeps a text's "\\n" lines but escapes every other break and invisible character and demotes
  a `## ` heading, so model-written text placed in the context can never pass for a wrapper block heading.

Every cut the wrapper makes says so with one marker, `…[truncated N chars]` (or `N bytes`, or `more than N
bytes` where the rest was never read): `marker`, `truncate` and `short` are the only places that cut text.
"""

import re
import unicodedata

# Every character some reader treats as the end of a line, besides "\n".
OTHER_LINE_BREAKS = "\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
LINE_BREAK_RE = re.compile("\r\n|[\n" + OTHER_LINE_BREAKS + "]")
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Categories that print as nothing, move the cursor, reorder text or are not characters at all.
HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
# A block heading as render_block writes it, at any indent (a reader may not count spaces as markdown does).
HEADING_RE = re.compile(r"^([ \t]*)(##)(?=[^#]|$)", re.M)


def marker(n, unit="chars"):
    """The one truncation marker: `…[truncated 12 chars]`, `…[truncated 300 bytes]`."""
    return f"…[truncated {n} {unit}]"


def truncate(text, limit):
    """`text` cut to at most `limit` chars, the marker included, saying how many chars were cut."""
    if len(text) <= limit:
        return text
    # Leave room for the marker itself (sized for the most chars it could report).
    keep = max(0, limit - len(marker(len(text))))
    return text[:keep] + marker(len(text) - keep)


def short(text, limit=200):
    """`text` on one line (runs of whitespace folded to a space), cut to `limit` chars with the marker."""
    return truncate(" ".join(str(text).split()), limit)


def _hidden(ch):
    if ch == " ":
        return False
    cat = unicodedata.category(ch)
    # A space other than the ASCII one (no-break, ideographic, ...) looks like one but is not.
    return cat in HIDDEN_CATEGORIES or cat == "Zs"


def _escape(ch):
    if ch in NAMED:
        return NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text, keep=""):
    """`text` with every control, invisible or line-breaking character shown as an escape, except `keep`."""
    text = str(text)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(ch) if ch not in keep and _hidden(ch) else ch for ch in text)


# A run of the same escape (or of one short sequence starting with one, like an ANSI code) repeated.
ESCAPE_RUN_RE = re.compile(r"(\\.{1,31}?)\1{3,}", re.S)


def one_line(text, limit, see):
    """`text` for a one-line viewer: every hidden character visible (a run of one shown once with its
    count, so what follows it stays in view), cut to `limit` chars with how much was cut and `see`, where
    to read all of it."""
    shown = ESCAPE_RUN_RE.sub(lambda m: f"{m.group(1)}×{len(m.group(0)) // len(m.group(1))}", visible(text))
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}…[{len(shown) - limit} more chars; see: {see}]"


def terminal_safe(text):
    """What may be printed on an operator's terminal: lines and tabs kept, nothing else that controls it."""
    return visible(text, keep="\n\t")


def fold_lines(text):
    """One line: the text's non-blank lines (split at every kind of line break) joined by " / "."""
    parts = (part.strip() for part in LINE_BREAK_RE.split(str(text)))
    return visible(" / ".join(p for p in parts if p), keep="\t")


def neutralise(text):
    """Model-written text for the context: "\\n" lines kept, every other break and invisible character
    escaped, and a `## ` heading demoted to `### `, so no line can look like a block the wrapper wrote."""
    return HEADING_RE.sub(r"\1#\2", visible(text, keep="\n\t"))
