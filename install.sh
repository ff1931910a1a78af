#!/usr/bin/env bash
# install.sh — idempotent first-run setup and upgrade of mako-zero.
#
#   bash install.sh            (as root, from a checkout or from the installed root itself)
#
# The copy in an installed root (the one with config.yaml beside it) upgrades that root, and the unit in
# $SYSTEMD_DIR that runs it, with no variable to repeat: `bash /srv/mako-zero/install.sh`.
#
# It creates the runtime tree under the root, copies the code there (unless the checkout *is* the root),
# seeds state/ and notes/ from seed/ and config.yaml from config.example.yaml without overwriting anything,
# puts requests and PyYAML in a venv at <root>/.venv, and installs the systemd unit. Run it again after
# every upgrade: code is refreshed, state, notes and config are left alone.
#
# Environment:
#   MAKO_ROOT              runtime root (default /srv/mako-zero, or the folder of an installed copy). A user
#                          other than root may install only into a root of their own, and then no systemd
#                          unit is installed.
#   MAKO_SERVICE           unit name (default mako-zero -> $SYSTEMD_DIR/mako-zero.service; for an installed
#                          copy, the unit that runs its root)
#   SYSTEMD_DIR            where the unit goes (default /etc/systemd/system)
#   MAKO_PYTHON            interpreter the venv is made from (default python3; needs Python >= 3.10)
#   MAKO_PIP_ARGS          extra arguments for `pip install`, word-split, e.g.
#                          "--no-index --find-links /root/wheels" on a box without internet access
#   MAKO_VENV_SYSTEM_SITE  1 = create the venv with --system-site-packages, so the machine's own
#                          requests/PyYAML are used and pip is not run (offline trials)

set -euo pipefail
umask 022

say() { printf '%s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

SRC="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd -P)"
# The copy installed in a root (its config.yaml beside it) upgrades that root: `bash <root>/install.sh`.
INSTALLED_COPY=0
[ -z "${MAKO_ROOT:-}" ] && [ -f "$SRC/config.yaml" ] && [ -f "$SRC/supervisor.py" ] && INSTALLED_COPY=1

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1
if [ "$IS_ROOT" -eq 0 ] && [ -z "${MAKO_ROOT:-}" ] && [ "$INSTALLED_COPY" -eq 0 ]; then
    die "must run as root (sudo bash install.sh). To try it as $(id -un) without systemd, set MAKO_ROOT" \
        "to a folder you own, e.g. MAKO_ROOT=\$HOME/mako-zero bash install.sh"
fi

ROOT="${MAKO_ROOT:-/srv/mako-zero}"
[ "$INSTALLED_COPY" -eq 1 ] && ROOT="$SRC"
SERVICE="${MAKO_SERVICE:-mako-zero}"
SERVICE="${SERVICE%.service}"
UNIT_DIR="${SYSTEMD_DIR:-/etc/systemd/system}"
PY="${MAKO_PYTHON:-python3}"

# The root is written unquoted into config.yaml and into the unit; a plain path needs no escaping in either
# (a space would split ExecStart, '%' is a systemd specifier, '#' starts a YAML comment).
case "$ROOT" in
    /*) ;;
    *) ROOT="$PWD/$ROOT" ;;
esac
[[ "$ROOT" =~ ^/[A-Za-z0-9._/+-]*$ ]] ||
    die "MAKO_ROOT must be a plain absolute path (letters, digits, . _ - + /), got: $ROOT"
[[ "$SERVICE" =~ ^[A-Za-z0-9_.@-]+$ ]] || die "MAKO_SERVICE must be a unit name like mako-zero, got: $SERVICE"

[ -d "$SRC/mako" ] || die "$SRC/mako/ is missing: run install.sh from a complete mako-zero checkout"
[ -f "$SRC/requirements.txt" ] || die "$SRC/requirements.txt is missing: run install.sh from a complete checkout"
command -v "$PY" >/dev/null 2>&1 || die "$PY not found: install Python 3.10 or newer (apt-get install -y python3)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PY is older than Python 3.10"

mkdir -p "$ROOT"
ROOT="$(cd "$ROOT" && pwd)"
CLONED_INTO_ROOT=0
[ "$(cd "$ROOT" && pwd -P)" = "$SRC" ] && CLONED_INTO_ROOT=1
VENV="$ROOT/.venv"
VENV_PY="$VENV/bin/python3"
CONFIG="$ROOT/config.yaml"

# ---------------------------------------------------------------------------------------------------------
# Code. A checkout cloned straight into the root is already in place: copy nothing, delete nothing.

ENTRY_POINTS=(supervisor.py tick.py scribe.py digest.py analyse.py approve.py status.py)
CODE_FILES=("${ENTRY_POINTS[@]}" requirements.txt config.example.yaml mako-zero.service install.sh)
CODE_DIRS=(mako prompts seed)
STAGED=()
cleanup() { local p; for p in "${STAGED[@]}"; do rm -rf -- "$p"; done; }
trap cleanup EXIT

copy_file() {
    local name="$1" src="$SRC/$1" dst="$ROOT/$1" mode=0644
    [ -x "$src" ] && mode=0755
    # Copy beside the target and rename, so a tick starting mid-upgrade never reads half a file.
    STAGED+=("$dst.new.$$")
    install -m "$mode" -- "$src" "$dst.new.$$"
    mv -f -- "$dst.new.$$" "$dst"
}

copy_dir() {
    # Replaced wholesale: a module deleted upstream must not linger in the install and still be imported.
    local name="$1" new="$ROOT/.$1.new.$$" old="$ROOT/.$1.old.$$"
    STAGED+=("$new" "$old")
    cp -R -- "$SRC/$name" "$new"
    find "$new" -name __pycache__ -prune -exec rm -rf {} +
    chmod -R u+rwX,go+rX,go-w -- "$new"
    [ -e "$ROOT/$name" ] && mv -- "$ROOT/$name" "$old"
    mv -- "$new" "$ROOT/$name"
    rm -rf -- "$old"
}

if [ "$CLONED_INTO_ROOT" -eq 1 ]; then
    say "code: $SRC is the root itself, nothing to copy"
else
    say "code: copying $SRC -> $ROOT"
    for f in "${CODE_FILES[@]}"; do
        if [ -f "$SRC/$f" ]; then
            copy_file "$f"
        else
            warn "$SRC/$f not found, not copied"
        fi
    done
    for d in "${CODE_DIRS[@]}"; do
        if [ -d "$SRC/$d" ]; then
            copy_dir "$d"
        else
            warn "$SRC/$d/ not found, not copied"
        fi
    done
fi
# Bytecode is compiled here, once per install or upgrade, so no tick pays to compile mako/ (under systemd the
# code folder may not be writable, and PYTHONDONTWRITEBYTECODE may be set).
"$PY" -m compileall -q -j 0 "$ROOT/mako" >/dev/null || warn "could not compile the bytecode of $ROOT/mako"

# ---------------------------------------------------------------------------------------------------------
# Runtime tree and seeds. Folders are 0700: logs and state hold model output and full request payloads.

RUNTIME_DIRS=(state state/.mako state/outbox state/outbox/blog state/outbox/blog/drafts notes workdir archive
              pending logs logs/ticks logs/scribe)
for d in "${RUNTIME_DIRS[@]}"; do
    mkdir -p -- "$ROOT/$d"
    chmod 0700 -- "$ROOT/$d"
done

seed() {
    local src="$1" dst="$2"
    if [ -e "$dst" ] || [ -L "$dst" ]; then
        return 0
    fi
    if [ ! -f "$src" ]; then
        warn "${src#"$ROOT"/} not found, ${dst#"$ROOT"/} not seeded"
        return 0
    fi
    install -m 0644 -- "$src" "$dst"
    say "seeded ${dst#"$ROOT"/}"
}
for f in MISSION.md CAPABILITIES.md STATE.md NEXT.md PERSONA.md; do
    seed "$ROOT/seed/$f" "$ROOT/state/$f"
done
seed "$ROOT/seed/notes/INDEX.md" "$ROOT/notes/INDEX.md"

# ---------------------------------------------------------------------------------------------------------
# Python dependencies, in a venv: Ubuntu 24.04 refuses system-wide pip installs (PEP 668).

apt_venv() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv "python$1-venv" >/dev/null; }

ensure_ensurepip() {
    "$PY" -c 'import ensurepip' >/dev/null 2>&1 && return 0
    if [ "$IS_ROOT" -eq 1 ] && command -v apt-get >/dev/null 2>&1; then
        local ver
        ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        say "venv: installing python3-venv (ensurepip is missing)"
        # A box that never ran apt-get update has no package lists yet: update once and retry.
        apt_venv "$ver" || { apt-get update -q >/dev/null && apt_venv "$ver"; } ||
            die "apt-get could not install python3-venv"
    fi
    "$PY" -c 'import ensurepip' >/dev/null 2>&1 ||
        die "$PY has no ensurepip module: install your distribution's python3-venv package and run install.sh again"
}

venv_works() { [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import sys' >/dev/null 2>&1; }
deps_import() { "$VENV_PY" -c 'import requests, yaml' >/dev/null 2>&1; }

if ! venv_works; then
    # A half-made venv, or one whose interpreter vanished in a Python upgrade, is rebuilt from scratch.
    rm -rf -- "$VENV"
    venv_args=(--without-pip)
    [ "${MAKO_VENV_SYSTEM_SITE:-0}" = 1 ] && venv_args+=(--system-site-packages)
    say "venv: creating $VENV"
    "$PY" -m venv "${venv_args[@]}" "$VENV" 2>/dev/null || {
        rm -rf -- "$VENV"
        ensure_ensurepip
        "$PY" -m venv "${venv_args[@]}" "$VENV" || die "$PY -m venv $VENV failed"
    }
fi

STAMP="$VENV/.requirements.sha256"
REQ_SUM="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
# A stamp only exists where pip ran before; it catches a requirements.txt changed by an upgrade.
if deps_import && { [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" = "$REQ_SUM" ]; }; then
    say "venv: requests and PyYAML present"
else
    if [ ! -x "$VENV/bin/pip" ]; then
        ensure_ensurepip
        "$VENV_PY" -m ensurepip --default-pip >/dev/null || die "could not install pip into $VENV"
    fi
    read -r -a pip_extra <<<"${MAKO_PIP_ARGS:-}"
    say "venv: pip install -r requirements.txt"
    "$VENV_PY" -m pip install -q --disable-pip-version-check "${pip_extra[@]}" -r "$ROOT/requirements.txt" ||
        die "pip install failed (set MAKO_PIP_ARGS for a mirror or a local wheel folder)"
    deps_import || die "requests or PyYAML still does not import in $VENV"
    printf '%s\n' "$REQ_SUM" >"$STAMP"
fi

# ---------------------------------------------------------------------------------------------------------
# config.yaml: seeded once, with the real root in paths.root; an existing one is never rewritten.

if [ -e "$CONFIG" ] || [ -L "$CONFIG" ]; then
    if [ -n "$(find "$CONFIG" -maxdepth 0 -perm /077 2>/dev/null)" ]; then
        # Only the mode changes, never the content: the file holds API keys and the bot token.
        chmod 0600 -- "$CONFIG"
        say "config: $CONFIG was readable by others, now 0600"
    fi
    say "config: $CONFIG kept as it is"
elif [ -f "$ROOT/config.example.yaml" ]; then
    "$VENV_PY" - "$ROOT/config.example.yaml" "$CONFIG" "$ROOT" <<'PYEOF'
"""Copy config.example.yaml to config.yaml (mode 0600, never overwriting) with paths.root set."""
import os
import re
import sys

example, target, root = sys.argv[1:4]
lines = open(example, encoding="utf-8").read().splitlines(keepends=True)
out, in_paths, done = [], False, False
for line in lines:
    if re.match(r"[^\s#]", line):
        if in_paths and not done:
            out.append(f"  root: {root}\n")
            done = True
        in_paths = re.match(r"paths:\s*(#.*)?$", line) is not None
    elif in_paths and not done:
        m = re.match(r"(\s+)root:[^#\n]*?(\s+#.*)?$", line.rstrip("\n"))
        if m:
            line = f"{m.group(1)}root: {root}{m.group(2) or ''}\n"
            done = True
    out.append(line)
if not done:
    if in_paths:
        out.append(f"  root: {root}\n")
    else:
        out.append(f"\npaths:\n  root: {root}\n")
fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.writelines(out)
PYEOF
    say "config: seeded $CONFIG (mode 0600, paths.root: $ROOT)"
else
    warn "$ROOT/config.example.yaml not found: write $CONFIG yourself (mode 0600)"
fi

if [ -f "$CONFIG" ]; then
    # A root that points elsewhere would leave this install unused; everything else about the config is
    # reported by the config check at the end.
    (cd "$ROOT" && "$VENV_PY" - "$CONFIG" "$ROOT" <<'PYEOF') || true
import os
import sys

sys.path.insert(0, os.getcwd())
from mako.config import load_config
from mako.errors import ConfigError

try:
    cfg = load_config(sys.argv[1])
except ConfigError:
    sys.exit(0)
if os.path.realpath(cfg.paths.root) != os.path.realpath(sys.argv[2]):
    print(f"install.sh: warning: {sys.argv[1]}: paths.root is {cfg.paths.root}, not {sys.argv[2]}",
          file=sys.stderr)
PYEOF
fi

# ---------------------------------------------------------------------------------------------------------
# systemd unit, rendered from the template with the real root and the venv's interpreter.

UNIT_FOR_ROOT=1
if [ "$INSTALLED_COPY" -eq 1 ] && [ -z "${MAKO_SERVICE:-}" ]; then
    # The unit to refresh is the one that runs this root, whatever its name; never one that runs another.
    named="$(grep -l -F -- "$ROOT/supervisor.py" "$UNIT_DIR"/*.service 2>/dev/null | head -n 1 || true)"
    if [ -n "$named" ]; then
        SERVICE="$(basename -- "$named" .service)"
    else
        UNIT_FOR_ROOT=0
    fi
fi
UNIT="$UNIT_DIR/$SERVICE.service"
TEMPLATE="$ROOT/mako-zero.service"
[ -f "$TEMPLATE" ] || TEMPLATE="$SRC/mako-zero.service"
SYSTEMD_RUNNING=0
[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && SYSTEMD_RUNNING=1
UNIT_INSTALLED=0

if [ "$IS_ROOT" -eq 0 ]; then
    say "unit: not root, so no systemd unit is installed"
elif [ "$UNIT_FOR_ROOT" -eq 0 ]; then
    say "unit: no unit in $UNIT_DIR runs $ROOT, so none is installed (set MAKO_SERVICE to install one)"
elif [ ! -f "$TEMPLATE" ]; then
    warn "mako-zero.service not found: no systemd unit installed"
else
    mkdir -p -- "$UNIT_DIR"
    STAGED+=("$UNIT.new.$$")
    : >"$UNIT.new.$$"
    while IFS= read -r line || [ -n "$line" ]; do
        # Comments keep the placeholder names: they describe the template, not this install.
        if [[ ! "$line" =~ ^[[:space:]]*[#\;] ]]; then
            line="${line//@PYTHON@/"$VENV_PY"}"
            line="${line//@MAKO_ROOT@/"$ROOT"}"
        fi
        printf '%s\n' "$line" >>"$UNIT.new.$$"
    done <"$TEMPLATE"
    chmod 0644 -- "$UNIT.new.$$"
    if cmp -s -- "$UNIT.new.$$" "$UNIT"; then
        rm -f -- "$UNIT.new.$$"
        say "unit: $UNIT unchanged"
    else
        mv -f -- "$UNIT.new.$$" "$UNIT"
        say "unit: installed $UNIT"
    fi
    UNIT_INSTALLED=1
    if [ "$SYSTEMD_RUNNING" -eq 1 ]; then
        systemctl daemon-reload
        say "unit: systemctl daemon-reload done"
    else
        say "unit: systemd is not running here, daemon-reload skipped"
    fi
fi

# ---------------------------------------------------------------------------------------------------------

cat <<EOF

mako-zero is installed in $ROOT.

Next steps:
  1. Fill in the keys (llm.primary.api_key, llm.fallback.api_key, telegram.bot_token, telegram.chat_id,
     telegram.log_thread_id / requests_thread_id / approvals_thread_id / digest_thread_id):
       \$EDITOR $CONFIG
       chmod 600 $CONFIG
  2. See what the first tick would send, without sending anything:
       $VENV_PY $ROOT/tick.py --config $CONFIG --dry-run
EOF
if [ "$UNIT_INSTALLED" -eq 1 ] && [ "$SYSTEMD_RUNNING" -eq 1 ]; then
    cat <<EOF
  3. Start it and watch it:
       systemctl enable --now $SERVICE
       journalctl -u $SERVICE -f
     After an upgrade (install.sh run again): systemctl restart $SERVICE
EOF
else
    cat <<EOF
  3. Run the supervisor in the foreground (Ctrl-C stops it):
       $VENV_PY -u $ROOT/supervisor.py --config $CONFIG
EOF
    [ "$UNIT_INSTALLED" -eq 1 ] &&
        say "     or, on a host where systemd runs: systemctl enable --now $SERVICE; journalctl -u $SERVICE -f"
fi

# ---------------------------------------------------------------------------------------------------------
# The config check, last, so its lines are the last thing read. A fresh config fails it until the keys are
# filled in; that is reported, not an install failure.

if [ -f "$CONFIG" ]; then
    say ""
    say "Config check ($ROOT/tick.py --check):"
    CHECK_RC=0
    (cd "$ROOT" && "$VENV_PY" "$ROOT/tick.py" --config "$CONFIG" --check) || CHECK_RC=$?
    if [ "$CHECK_RC" -ne 0 ]; then
        say "Fix the errors above in $CONFIG, then check again:"
        say "  $VENV_PY $ROOT/tick.py --config $CONFIG --check"
    fi
fi
exit 0
