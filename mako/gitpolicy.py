"""What a `git` action may run (§12): allowed subcommands and options, no network, nothing that runs programs.

`git_refusal` says why a split command line may not run, or None; `git_env` is the environment it runs in.
"""

import os
from fnmatch import fnmatch

from .children import child_env
from .report import short


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


def _inside(path, root):
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip("/") + "/")


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
            if not _inside(target, root):
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
    return _git_args_refusal(sub, rest)


def _git_args_refusal(sub, rest):
    options = rest[:rest.index("--")] if "--" in rest else rest
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


def git_env():
    env = {k: v for k, v in child_env().items() if not k.startswith("GIT_")}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "PAGER": "cat", "GIT_EDITOR": "true",
                "EDITOR": "true", "VISUAL": "true", "GIT_CONFIG_NOSYSTEM": "1"})
    return env
