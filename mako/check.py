"""The config check (`tick.py --check`, §21): what in config.yaml will not work, one line each.

Errors (exit 78) are settings that cannot work as written: a config the loader refuses, no provider at all,
an enabled provider slot with no `api_key` where its endpoint needs one, a Telegram token without a chat,
a root that does not exist. Warnings (exit 0) are settings that work but not as the operator probably
means: provider timeouts that do not fit in `supervisor.tick_timeout_s` together, a chat without a token,
Telegram inbound switched on but off in effect, unknown keys. One `note:` line says whether Telegram
inbound is on, and if not, why (§20). Only key names and hosts are printed, never a value of a secret.
"""

import ipaddress
import os
import sys
from urllib.parse import urlsplit

from .config import SECRET_ENV, load_config
from .errors import EXIT_CONFIG, EXIT_OK, ConfigError

LOCAL_SUFFIXES = (".local", ".localhost", ".internal", ".lan")


def _host(url):
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _is_local(host):
    if host == "localhost" or host.endswith(LOCAL_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def needs_key(provider):
    """Whether the slot's endpoint wants an API key: Ollama's cloud does, a self-hosted Ollama does not;
    an OpenAI-compatible endpoint does unless it runs on this machine or the local network."""
    host = _host(provider.base_url)
    if provider.type == "ollama":
        return host == "ollama.com" or host.endswith(".ollama.com")
    return not _is_local(host)


def findings(cfg):
    """(errors, warnings, notes) for a loaded config, each a list of one-line strings."""
    errors, warnings, notes = [], [], []
    configured = cfg.providers
    if not configured:
        errors.append("llm: no provider configured (llm.primary and llm.fallback both lack a base_url or model)")
    for p in configured:
        if not p.api_key and needs_key(p):
            env = SECRET_ENV[("llm", p.name, "api_key")]
            errors.append(f"llm.{p.name}.api_key is empty, and {p.type} at {_host(p.base_url)} needs one "
                          f"(set it in the config or in {env})")
    if len(configured) == 2:
        together = configured[0].timeout_s + configured[1].timeout_s
        budget = cfg.supervisor.tick_timeout_s
        if together > budget:
            warnings.append(f"supervisor.tick_timeout_s ({budget:g}s) is shorter than llm.primary.timeout_s + "
                            f"llm.fallback.timeout_s ({configured[0].timeout_s:g}s + {configured[1].timeout_s:g}s): "
                            "a primary that hangs leaves the fallback less than its own timeout")
    tg = cfg.telegram
    has_chat = tg.chat_id not in ("", None, 0)
    if tg.bot_token and not has_chat:
        errors.append("telegram.bot_token is set but telegram.chat_id is not: nothing can be posted")
    elif has_chat and not tg.bot_token:
        warnings.append("telegram.chat_id is set but telegram.bot_token is empty: Telegram is off")
    inbound = tg.inbound
    if tg.inbound_on:
        notes.append(f"Telegram inbound is on for {len(inbound.allowed_user_ids)} allowed user(s)")
    elif not inbound.enabled:
        notes.append("Telegram inbound is off (telegram.inbound.enabled is false)")
    elif not inbound.allowed_user_ids:
        warnings.append("Telegram inbound is off: telegram.inbound.enabled is true but "
                        "telegram.inbound.allowed_user_ids is empty (nobody is allowed to steer it)")
    else:
        warnings.append("Telegram inbound is off: it is enabled, but Telegram itself is off "
                        "(telegram.bot_token and telegram.chat_id are both needed)")
    root = cfg.paths.root
    if not os.path.exists(root):
        errors.append(f"paths.root: {root} does not exist (install.sh creates it, or fix the path)")
    elif not os.path.isdir(root):
        errors.append(f"paths.root: {root} is not a folder")
    warnings.extend(cfg.warnings)
    return errors, warnings, notes


def run_check(path=None, out=None):
    """Print the check's lines and a summary on `out`; return 78 when there is an error, else 0."""
    out = out or sys.stdout
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"error: {e}", file=out, flush=True)
        print("config check: 1 error", file=out, flush=True)
        return EXIT_CONFIG
    errors, warnings, notes = findings(cfg)
    for kind, lines in (("error", errors), ("warning", warnings), ("note", notes)):
        for line in lines:
            print(f"{kind}: {line}", file=out)
    if errors or warnings:
        summary = f"{len(errors)} error{'s' * (len(errors) != 1)}, {len(warnings)} warning{'s' * (len(warnings) != 1)}"
    else:
        summary = "ok"
    print(f"config check ({cfg.path}): {summary}", file=out, flush=True)
    return EXIT_CONFIG if errors else EXIT_OK
