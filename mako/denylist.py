"""The shell denylist (§12): a tripwire against the obviously catastrophic, not a sandbox.

A command is split into pipeline elements the way a shell would see them (quotes, `;`, `&&`, `||`, `|`,
`(`, backquotes, `$(`), folded for case and whitespace, and each element's command word is compared with
the one-word entries, behind `sudo`, `env`, `nohup`, `exec` or a path too. Entries of several words match
the normalised text, and the common spellings of `rm -rf /` are caught whatever the flag order. The agent is
root by design: this stops a slip, never a determined command.
"""

import posixpath
import re

DEFAULT_DENYLIST = [
    "rm -rf /",
    "rm -rf /*",
    "rm -rf ~",
    "mkfs",
    "shutdown",
    "reboot",
    "halt",
    "poweroff",
    "passwd",
    "dd if=/dev/zero of=/dev/",
    "dd if=/dev/random of=/dev/",
    ":(){ :|:& };:",
    "chmod -r 000 /",
    "chown -r",
    "> /dev/sda",
    "userdel",
    "init 0",
    "init 6",
    "systemctl stop mako-zero",
    "systemctl disable mako-zero",
    "systemctl reboot",
    "systemctl poweroff",
    "systemctl halt",
    "telinit",
    "kill -9 1",
    "kill -kill 1",
    "find / -delete",
]

ONE_WORD_RE = re.compile(r"^[a-z0-9_.+-]+$")
ASSIGN_RE = re.compile(r"^[a-z_][a-z0-9_]*\+?=")
KEYWORDS = frozenset(("if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}",
                      "time", "case", "esac", "coproc"))
# Commands that run the command named by a later word: {name: (options taking a value, positional args)}.
# Everything is lower-cased before matching, so `sudo -U` shows up as `-u`.
WRAPPERS = {
    "sudo": ({"-u", "-g", "-h", "-p", "-c", "-r", "-t", "-d"}, 0),
    "doas": ({"-u", "-c"}, 0),
    "env": ({"-u", "-c", "-s"}, 0),
    "nohup": (set(), 0),
    "exec": ({"-a"}, 0),
    "command": (set(), 0),
    "builtin": (set(), 0),
    "nice": ({"-n"}, 0),
    "ionice": ({"-c", "-n", "-p"}, 0),
    "timeout": ({"-s", "-k"}, 1),
    "stdbuf": ({"-i", "-o", "-e"}, 0),
    "setsid": (set(), 0),
    "xargs": ({"-a", "-d", "-e", "-i", "-l", "-n", "-p", "-s"}, 0),
    "watch": ({"-n", "-d"}, 0),
    "chroot": (set(), 1),
    "flock": ({"-w", "-e", "-s"}, 1),
    "taskset": (set(), 1),
    "chrt": (set(), 1),
    "busybox": (set(), 0),
    "unbuffer": (set(), 0),
}
SHELLS = frozenset(("sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"))
SYSTEM_DIRS = ("bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt",
               "proc", "root", "run", "sbin", "snap", "srv", "sys", "usr", "var")
HOME_TARGETS = frozenset(("~", "~/*", "/root", "/root/*"))
ROOT_TARGETS = frozenset({"/", "/*", "/.*"} | HOME_TARGETS | {f"/{d}" for d in SYSTEM_DIRS}
                         | {f"/{d}/*" for d in SYSTEM_DIRS})


def _substitution(text, i):
    """The text inside a `...` or $(...) starting at i, and the index just past it."""
    if text[i] == "`":
        j = i + 1
        while j < len(text) and text[j] != "`":
            j += 2 if text[j] == "\\" else 1
        return text[i + 1:j], j + 1
    depth, j = 1, i + 2
    while j < len(text) and depth:
        c = text[j]
        if c == "'":
            end = text.find("'", j + 1)
            j = len(text) if end < 0 else end + 1
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        j += 1
    return text[i + 2:j - 1 if depth == 0 else j], j


def shell_segments(text):
    """Split shell text into simple commands (lists of words, quotes removed) roughly as sh would.

    Returns (segments, substitutions): command substitutions come back as texts to be read on their own.
    """
    segments, words, word, nested = [], [], [], []
    state = {"in_word": False, "redirect": False}

    def end_word():
        if state["in_word"]:
            if not state["redirect"]:
                words.append("".join(word))
            state["redirect"] = False
        word.clear()
        state["in_word"] = False

    def end_segment():
        end_word()
        state["redirect"] = False
        if words:
            segments.append(list(words))
            words.clear()

    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 < n and text[i + 1] != "\n":
                word.append(text[i + 1])
                state["in_word"] = True
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            end = n if end < 0 else end
            word.append(text[i + 1:end])
            state["in_word"] = True
            i = end + 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                elif text[j] == "`" or text.startswith("$(", j):
                    inner, j = _substitution(text, j)
                    nested.append(inner)
                else:
                    buf.append(text[j])
                    j += 1
            word.append("".join(buf))
            state["in_word"] = True
            i = j + 1
        elif c == "`" or text.startswith("$(", i):
            inner, i = _substitution(text, i)
            nested.append(inner)
            word.append("$")
            state["in_word"] = True
        elif c == "#" and not state["in_word"]:
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in " \t\r":
            end_word()
            i += 1
        elif c in ";&|()\n":
            end_segment()
            i += 1
        elif c in "<>":
            if state["in_word"] and "".join(word).isdigit():
                word.clear()  # the fd number of `2>file`
                state["in_word"] = False
            end_word()
            i += 1
            while i < n and text[i] in "<>&|":
                i += 1
            state["redirect"] = True
        else:
            word.append(c)
            state["in_word"] = True
            i += 1
    end_segment()
    return segments, nested


def _fold(text):
    """Lower-case, collapse whitespace, and drop it around shell punctuation (`> /dev/sda` = `>/dev/sda`)."""
    text = " ".join(text.lower().split())
    return re.sub(r"\s*([(){};|&<>:])\s*", r"\1", text)


def _contains(hay, needle):
    """Substring match that does not fire inside a longer word, nor on `/` followed by more path."""
    def word(ch):
        return ch.isalnum() or ch in "_-."

    root_end = needle.endswith(" /") or needle == "/"
    start = 0
    while (k := hay.find(needle, start)) >= 0:
        before = hay[k - 1] if k else ""
        after = hay[k + len(needle):k + len(needle) + 1]
        # A number at the end must end there too: "kill -9 1" is not "kill -9 1234".
        number_end = needle[-1].isdigit() and after.isdigit()
        if not (word(needle[0]) and before and word(before)) and not (root_end and after and
                                                                       (word(after) or after in "~/")) \
                and not number_end:
            return True
        start = k + 1
    return False


def _norm_target(t):
    for home in ("${home}", "$home"):
        if t == home or t.startswith(home + "/"):
            t = "~" + t[len(home):]
    if t.startswith("~"):
        p = posixpath.normpath("/" + t[1:].lstrip("/"))
        return "~" if p == "/" else "~" + p
    if t.startswith("/"):
        return posixpath.normpath("/" + t.lstrip("/"))
    return t


def _rm_parse(args):
    """(recursive?, targets) of an rm command's arguments, options in any order."""
    recursive, targets, options = False, [], True
    for a in args:
        if options and a == "--":
            options = False
        elif options and a.startswith("--"):
            name = a[2:].split("=", 1)[0]
            recursive = recursive or (len(name) >= 3 and "recursive".startswith(name))
        elif options and a.startswith("-") and len(a) > 1:
            recursive = recursive or "r" in a[1:]
        else:
            targets.append(_norm_target(a))
    return recursive, targets


class _Denylist:
    def __init__(self, entries):
        self.one_word, self.rm, self.phrases = [], [], []
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                continue
            folded = " ".join(entry.lower().split())
            if ONE_WORD_RE.match(folded):
                self.one_word.append((folded, entry))
                continue
            segments, _ = shell_segments(folded)
            if len(segments) == 1 and segments[0][0] == "rm":
                recursive, targets = _rm_parse(segments[0][1:])
                self.rm.append((entry, recursive, targets))
            else:
                self.phrases.append((_fold(entry), entry))

    def match(self, cmd, depth=0):
        if depth > 8:
            return None
        text = cmd.lower()
        segments, nested = shell_segments(text)
        folded = [_fold(text)] + [_fold(" ".join(words)) for words in segments]
        for needle, entry in self.phrases:
            if any(_contains(hay, needle) for hay in folded):
                return entry
        for inner in nested:
            hit = self.match(inner, depth + 1)
            if hit:
                return hit
        for words in segments:
            hit = self._simple(words, depth)
            if hit:
                return hit
        return None

    def _simple(self, words, depth):
        """The entry a simple command hits, looking through sudo/env/... to the command it runs."""
        i = 0
        while i < len(words):
            w = words[i]
            if w in KEYWORDS or ASSIGN_RE.match(w):
                i += 1
                continue
            name = posixpath.basename(w.rstrip("/")) or w
            for folded, entry in self.one_word:
                if name == folded or name.startswith(folded + "."):
                    return entry
            rest = words[i + 1:]
            if name in WRAPPERS:
                takes_value, positional = WRAPPERS[name]
                i += 1
                while i < len(words) and words[i].startswith("-") and len(words[i]) > 1:
                    if words[i] == "--":
                        i += 1
                        break
                    i += 2 if words[i] in takes_value else 1
                while i < len(words) and ASSIGN_RE.match(words[i]):
                    i += 1
                i += positional
                continue
            if name in SHELLS or name == "su":
                script = _dash_c_script(rest)
                return self.match(script, depth + 1) if script else None
            if name == "eval":
                return self.match(" ".join(rest), depth + 1)
            if name == "rm":
                return self._rm(rest)
            return None
        return None

    def _rm(self, args):
        recursive, targets = _rm_parse(args)
        entries = [(entry, wants) for entry, needs_recursive, wants in self.rm if recursive or not needs_recursive]
        for entry, wants in entries:  # an entry naming the target exactly is the clearer report
            if (not wants and targets) or set(wants) & set(targets):
                return entry
        for entry, wants in entries:
            for want in wants:
                covered = ROOT_TARGETS if want in ("/", "/*") else HOME_TARGETS if want in HOME_TARGETS else ()
                if any(t in covered for t in targets):
                    return entry
        return None


def _dash_c_script(args):
    """The script given to `sh -c` / `bash -lc` / `su -c` / `su --command=`, if any."""
    for k, a in enumerate(args):
        if a.startswith("--command="):
            return a.split("=", 1)[1]
        if a == "--command" or (a.startswith("-") and not a.startswith("--") and "c" in a[1:]):
            return args[k + 1] if k + 1 < len(args) else None
    return None


def denylist_match(cmd, entries):
    """The denylist entry a shell command hits, or None (§12: a tripwire, not a sandbox)."""
    return _Denylist(entries).match(cmd)
