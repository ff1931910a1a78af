"""What a `git` action may run (§12): allowed subcommands and options, no network, nothing that runs programs.

`git_refusal` says why a split command line may not run, or None; `git_argv` is the command line the
wrapper runs, with its own settings first (no hooks, fsmonitor, pager, editor or external diff, whatever
the repository's config says); `git_env` is the environment it runs in (no system or global config, no
repository above workdir/); `repo_refusal` looks at the repository git would use, which the model can
write into: a config that names a program (a filter, a textconv, a merge driver, an include) or a
repository or work tree outside workdir/ is refused before git runs.
"""

import os
import re
import subprocess
from fnmatch import fnmatch

from .children import child_env
from .paths import inside
from .text import short


GIT_SUBCOMMANDS = frozenset((
    "init", "status", "add", "commit", "log", "diff", "show", "branch", "checkout", "switch", "restore", "rm",
    "mv", "tag", "reset", "stash", "rev-parse", "ls-files", "blame", "grep", "config", "merge", "cherry-pick",
    "revert", "shortlog", "describe", "clean", "clone", "ls-tree", "cat-file", "rev-list", "reflog",
    "merge-base", "show-ref", "for-each-ref", "name-rev", "check-ignore", "count-objects", "fsck", "gc",
    "apply", "diff-tree", "range-diff", "notes",
))
GIT_NETWORK = frozenset(("fetch", "pull", "ls-remote", "remote", "submodule", "send-email", "request-pull",
                         "daemon", "archive", "instaweb", "http-backend", "upload-pack", "receive-pack",
                         "http-fetch", "svn", "p4", "cvsimport", "imap-send", "bundle"))
GIT_SAFE_GLOBALS = frozenset(("--no-pager", "-p", "-P", "--paginate", "--bare", "--no-replace-objects",
                              "--literal-pathspecs", "--glob-pathspecs", "--noglob-pathspecs",
                              "--icase-pathspecs", "--no-optional-locks", "--no-advice", "--version"))
# Long options that run another program, fetch, or write outside the repo (git accepts abbreviations).
GIT_BANNED_LONG = ("upload-pack", "receive-pack", "exec", "ext-diff", "textconv", "output",
                   "open-files-in-pager", "config", "template", "separate-git-dir", "recurse-submodules")
GIT_BUILTIN_STRATEGIES = frozenset(("ort", "recursive", "resolve", "octopus", "ours", "subtree"))
GIT_CONFIG_SCOPES = frozenset(("--global", "--system", "--file", "-f", "--blob"))
# Config keys that name a program to run, pull in other config, or reach the network.
GIT_DANGEROUS_KEYS = (
    "alias.*", "core.pager", "core.editor", "core.sshcommand", "core.hookspath", "core.fsmonitor",
    "core.askpass", "core.gitproxy", "core.worktree", "*.textconv", "diff.external", "diff.*.command",
    "merge.*.driver", "filter.*", "credential.*", "sequence.editor", "gpg.*", "pager.*", "*.cmd", "*.path",
    "*.program", "include.*", "includeif.*", "url.*", "remote.*", "http.*", "ssh.*", "protocol.*",
    "uploadpack.*", "receive.*", "submodule.*", "browser.*", "web.browser", "man.*", "help.*", "instaweb.*",
)


# Set by the wrapper on every run; given on the command line, they win over any config file.
GIT_FORCED_CONFIG = (
    "core.fsmonitor=false", "core.hooksPath=/dev/null", "core.pager=cat", "core.editor=true",
    "sequence.editor=true", "core.sshCommand=false", "credential.helper=", "diff.external=",
    "gpg.program=false", "protocol.ext.allow=never",
)
# Subcommands that can produce a diff: never through an external program or a textconv filter.
GIT_DIFFING = frozenset(("diff", "log", "show"))
# Keys in the repository's own config (which the model can write) that name a program or pull in other
# config; a repository holding one is not run.
GIT_REPO_PROGRAM_KEYS = (
    "core.fsmonitor", "core.hookspath", "core.pager", "core.editor", "core.sshcommand", "core.askpass",
    "core.gitproxy", "core.worktree", "core.alternaterefscommand", "*.textconv", "diff.external",
    "diff.*.command", "merge.*.driver", "filter.*", "credential.*", "sequence.editor", "gpg.*", "pager.*",
    "*.cmd", "*.program", "include.*", "includeif.*", "mergetool.*", "difftool.*", "man.*", "browser.*",
    "web.browser", "instaweb.*", "uploadpack.*", "receive.procreceiverefs", "remote.*.uploadpack",
    "remote.*.receivepack", "remote.*.vcs", "submodule.*.update", "core.attributesfile",
)
PATH_PARTS_RE = re.compile(r"[/:)=]")
REPO_CHECK_TIMEOUT_S = 10


def git_refusal(args, workdir):
    """Why `git <args>` may not run, or None when it may."""
    root = os.path.realpath(workdir)
    cwd = root
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        name, has_value, value = a.partition("=")
        if a.startswith("-c") or name in ("--config-env", "--exec-path"):
            return f"git {name} is refused: it can make git run other programs"
        if a == "-C" or name in ("--git-dir", "--work-tree"):
            if not has_value:
                if i + 1 >= len(args):
                    return f"git {a} needs a value"
                i += 1
                value = args[i]
            target = os.path.join(cwd, value)
            if not inside(os.path.realpath(target), root):
                return f"git {name} must stay inside workdir/"
            if a == "-C":
                cwd = os.path.realpath(target)
        elif name == "--namespace":
            i += 0 if has_value else 1
        elif a not in GIT_SAFE_GLOBALS:
            return f"git option {short(a, 40)} is not allowed"
        i += 1
    if i >= len(args):
        return None if "--version" in args else "no git subcommand given"
    sub, rest = args[i], args[i + 1:]
    if sub == "push":
        return "git push is refused: nothing leaves this box by git"
    if sub in GIT_NETWORK:
        return f"git {sub} is refused: network subcommands are not run"
    if sub not in GIT_SUBCOMMANDS:
        return f"git {short(sub, 40)!r} is not an allowed git subcommand (aliases are not run)"
    problem = _git_args_refusal(sub, rest)
    if problem:
        return problem
    outside = _path_outside(rest, cwd, root)
    if outside:
        return f"git {sub}: {short(outside, 60)} names a path outside workdir/"
    return None


def _path_outside(args, cwd, root):
    """The first argument that names a path outside workdir/ (absolute, `..`, a link out), or None.

    A commit message (-m, --message) is text, not a path; every other argument is taken as one could be.
    """
    message = False
    for a in args:
        if message or a.startswith("--message="):
            message = False
            continue
        if a in ("-m", "--message"):
            message = True
            continue
        candidates = {a, a.split("=", 1)[-1], a.rsplit(")", 1)[-1], a.split(":", 1)[-1]}
        for c in candidates:
            if c.startswith("/") or ".." in PATH_PARTS_RE.split(c):
                if not inside(os.path.realpath(os.path.join(cwd, c)), root):
                    return a
            elif c and not inside(os.path.realpath(os.path.join(cwd, c)), root):
                return a  # a name inside workdir/ that is a link out of it
    return None


def _git_args_refusal(sub, rest):
    options = rest[:rest.index("--")] if "--" in rest else rest
    if "--no-index" in options:
        return f"git {sub} --no-index is refused: it compares files anywhere on the box"
    for k, a in enumerate(options):
        if a.startswith("--"):
            name = a[2:].split("=", 1)[0]
            if name and any(banned.startswith(name) for banned in GIT_BANNED_LONG):
                return f"git {sub} {short(a, 40)} is refused: it can run programs, fetch or write elsewhere"
            if sub in ("merge", "cherry-pick", "revert") and name == "strategy":
                value = a.split("=", 1)[1] if "=" in a else (options[k + 1] if k + 1 < len(options) else "")
                if value not in GIT_BUILTIN_STRATEGIES:
                    return f"git {sub}: only built-in merge strategies are allowed"
        elif a.startswith("-") and len(a) > 1:
            if sub == "merge" and a.startswith("-s"):
                value = a[2:] or (options[k + 1] if k + 1 < len(options) else "")
                if value not in GIT_BUILTIN_STRATEGIES:
                    return f"git {sub}: only built-in merge strategies are allowed"
            if sub == "clone" and a[1] in "uc":
                return f"git clone {a[:2]} is refused: it can run programs or set config"
            if sub == "grep" and (a.startswith("-O") or (a[1:].isalpha() and "O" in a[1:])):
                return "git grep -O is refused: it runs a pager program"
    if sub == "clone":
        for a in rest:
            if not a.startswith("-") and (":" in a or a.startswith("git@")):
                return "git clone of a URL is refused: network access is not run"
    if sub == "config":
        if any(a in GIT_CONFIG_SCOPES or a.startswith(("--file=", "--blob=")) for a in options):
            return "git config outside the repository (--global, --system, --file) is refused"
        keys = [a for a in rest if not a.startswith("-")][:2]
        for key in keys:
            if any(fnmatch(key.lower(), pattern) for pattern in GIT_DANGEROUS_KEYS):
                return f"git config {short(key, 60)} is refused: that key can run programs or reach out"
    return None


def git_env(workdir):
    """No system or global config, nothing from the wrapper's own GIT_* variables, and no repository
    above workdir/ (the wrapper's code may be a checkout beside it)."""
    env = {k: v for k, v in child_env().items() if not k.startswith("GIT_")}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "PAGER": "cat", "GIT_EDITOR": "true",
                "EDITOR": "true", "VISUAL": "true", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CEILING_DIRECTORIES": os.path.dirname(os.path.realpath(workdir)),
                "GIT_ATTR_NOSYSTEM": "1", "GIT_NO_REPLACE_OBJECTS": "1"})
    return env


def git_argv(args):
    """The command line the wrapper runs for `git <args>` (args already passed by git_refusal)."""
    forced = [item for pair in GIT_FORCED_CONFIG for item in ("-c", pair)]
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in ("-C", "--git-dir", "--work-tree", "--namespace") else 1
    if i < len(args) and args[i] in GIT_DIFFING:
        args = [*args[:i + 1], "--no-ext-diff", "--no-textconv", *args[i + 1:]]
    return ["git", *forced, *args]


def _globals(args):
    """The leading global options (-C, --git-dir, --work-tree) that choose the repository."""
    out, i = [], 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a in ("-C", "--git-dir", "--work-tree"):
            out += args[i:i + 2]
            i += 2
            continue
        if a.startswith(("--git-dir=", "--work-tree=")):
            out.append(a)
        i += 1
    return out


def repo_refusal(args, workdir, env):
    """Why the repository `git <args>` would use may not be run, or None (also when there is none yet)."""
    root = os.path.realpath(workdir)
    where = _globals(args)

    def ask(*more, forced=True):
        settings = [item for pair in GIT_FORCED_CONFIG for item in ("-c", pair)] if forced else []
        try:
            run = subprocess.run(["git", *settings, *where, *more], cwd=root, env=env,
                                 stdin=subprocess.DEVNULL, capture_output=True, timeout=REPO_CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return False
        return run.stdout.decode("utf-8", "replace").strip() if run.returncode == 0 else None

    git_dir = ask("rev-parse", "--absolute-git-dir")
    if git_dir is None:
        return None  # no repository: init, clone or --version, or git's own error for the model to read
    top = ask("rev-parse", "--show-toplevel")  # None in a bare repository
    for place in (git_dir, top):
        if place is False:
            return "git did not answer about the repository in time; not run"
        if place and not inside(os.path.realpath(place), root):
            return f"the repository or its work tree ({short(place, 80)}) is outside workdir/"
    # Listed without the wrapper's own settings, which would show up among the keys.
    names = ask("config", "--list", "--name-only", "-z", forced=False)
    if not isinstance(names, str):
        return "the repository's config cannot be read; not run"
    for key in names.split("\0"):
        key = key.strip().lower()
        if key and any(fnmatch(key, pattern) for pattern in GIT_REPO_PROGRAM_KEYS):
            return f"the repository's config sets {short(key, 60)}, which can run a program; not run"
    return None
