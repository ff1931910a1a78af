"""Load config.yaml once into typed dataclasses, with defaults, type checks and clear errors.

A bad value raises ConfigError whose text names the file and the key; entry points print that one line and
exit 78. Unknown keys are kept out of the config and reported as warnings naming `section.key`.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .denylist import DEFAULT_DENYLIST
from .errors import ConfigError

CODE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = "/srv/mako-zero"


NUMBER = (int, float)

# section -> key -> (type, default). A type of "secret" is a string that env vars may override.
SCHEMA = {
    "paths": {
        "root": (str, DEFAULT_ROOT),
        "state": (str, ""),
        "notes": (str, ""),
        "workdir": (str, ""),
        "archive": (str, ""),
        "logs": (str, ""),
        "pending": (str, ""),
        "prompts": (str, ""),
    },
    "context": {
        "max_input_tokens": (int, 18000),
        "recent_journal_lines": (int, 20),
        "max_requested_notes": (int, 3),
    },
    "tick": {
        "shell_timeout_s": (NUMBER, 30),
        "http_timeout_s": (NUMBER, 30),
        "http_response_max_bytes": (int, 8192),
        "shell_output_max_bytes": (int, 4096),
        "compact_every_n_ticks": (int, 50),
        "approval_threshold_pence": (int, 200),
        "budget_ceiling_pence_month": (int, 10000),
        "telegram_summary_max_chars": (int, 1000),
        "max_actions": (int, 12),
    },
    "telegram": {
        "bot_token": (str, ""),
        "chat_id": ((int, str), ""),
        "log_thread_id": (int, 0),
        "requests_thread_id": (int, 0),
        "approvals_thread_id": (int, 0),
        "digest_thread_id": (int, 0),
        "api_base_url": (str, "https://api.telegram.org"),
    },
    "supervisor": {
        "tick_interval_s": (NUMBER, 300),
        "scribe_interval_s": (NUMBER, 7200),
        "digest_hour_local": (int, 8),
        "tick_timeout_s": (NUMBER, 300),
        "scribe_timeout_s": (NUMBER, 240),
        "digest_timeout_s": (NUMBER, 60),
        "stop_grace_s": (NUMBER, 10),
    },
    "scribe": {
        "enabled": (bool, True),
        "recent_journal_lines": (int, 100),
        "approval_thread": (str, "approvals"),
    },
    "digest": {
        "enabled": (bool, True),
        "hours_window": (NUMBER, 24),
    },
    "logging": {
        "full_payload": (bool, True),
        "keep_days": (NUMBER, 14),
    },
    "guardrails": {
        "shell_denylist_substrings": (list, DEFAULT_DENYLIST),
        "writable_paths": (list, ["state", "notes", "workdir", "archive", "pending"]),
        "forbidden_paths": (list, []),
    },
}

PROVIDER_SCHEMA = {
    "type": (str, None),
    "base_url": (str, None),
    "api_key": (str, ""),
    "model": (str, None),
    "timeout_s": (NUMBER, None),
    "num_predict": (int, 12000),
}

PROVIDER_DEFAULTS = {
    "primary": {"type": "ollama", "base_url": "https://ollama.com", "model": "qwen3.5", "timeout_s": 180},
    "fallback": {"type": "openai_compat", "base_url": "https://opencode.ai/zen/go/v1", "model": "qwen3.6",
                 "timeout_s": 120},
}
PROVIDER_TYPES = ("ollama", "openai_compat")
SECRET_ENV = {
    ("llm", "primary", "api_key"): "MAKO_PRIMARY_API_KEY",
    ("llm", "fallback", "api_key"): "MAKO_FALLBACK_API_KEY",
    ("telegram", "bot_token"): "MAKO_TELEGRAM_BOT_TOKEN",
}
POSITIVE_KEYS = {
    "context.max_input_tokens", "tick.shell_timeout_s", "tick.http_timeout_s", "tick.http_response_max_bytes",
    "tick.shell_output_max_bytes", "tick.telegram_summary_max_chars", "supervisor.tick_interval_s",
    "supervisor.scribe_interval_s", "supervisor.tick_timeout_s", "supervisor.scribe_timeout_s",
    "supervisor.digest_timeout_s", "digest.hours_window", "llm.primary.timeout_s", "llm.fallback.timeout_s",
    "llm.primary.num_predict", "llm.fallback.num_predict",
}
THREAD_NAMES = ("log", "requests", "approvals", "digest")


@dataclass
class Provider:
    name: str
    type: str
    base_url: str
    api_key: str
    model: str
    timeout_s: float
    num_predict: int

    @property
    def configured(self):
        return bool(self.base_url and self.model)


@dataclass
class Paths:
    root: Path
    state: Path
    notes: Path
    workdir: Path
    archive: Path
    logs: Path
    pending: Path
    prompts: Path
    code: Path = CODE_DIR

    @property
    def seed(self):
        return self.code / "seed"

    @property
    def private(self):
        """state/.mako/: the wrapper's own bookkeeping (locks, claims, sequences, ledgers)."""
        return self.state / ".mako"


@dataclass
class Section:
    """A config section: attribute access over a checked dict."""

    values: dict

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Telegram:
    bot_token: str
    chat_id: object
    log_thread_id: int
    requests_thread_id: int
    approvals_thread_id: int
    digest_thread_id: int
    api_base_url: str

    @property
    def enabled(self):
        return bool(self.bot_token) and self.chat_id not in ("", None, 0)

    def thread_id(self, name):
        """Thread id for a name (0 = unset, post without a thread)."""
        return getattr(self, f"{name}_thread_id", 0) or 0

    def first_thread(self, *names):
        """Id of the first of `names` that is set; 0 when none is."""
        for name in names:
            tid = self.thread_id(name)
            if tid:
                return tid
        return 0


@dataclass
class Config:
    path: Path
    paths: Paths
    primary: Provider
    fallback: Provider
    context: Section
    tick: Section
    telegram: Telegram
    supervisor: Section
    scribe: Section
    digest: Section
    logging: Section
    guardrails: Section
    warnings: list = field(default_factory=list)
    # Secret values written in the file but overridden from the environment: still scrubbed wherever seen.
    shadowed_secrets: list = field(default_factory=list)

    @property
    def providers(self):
        return [p for p in (self.primary, self.fallback) if p.configured]

    def secrets(self):
        """Every configured secret value, longest first (so a longer one is scrubbed before its prefix)."""
        values = {self.primary.api_key, self.fallback.api_key, self.telegram.bot_token, *self.shadowed_secrets}
        return sorted((v for v in values if v), key=len, reverse=True)


def _type_name(expected):
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
    if expected is NUMBER:
        return "a number"
    if isinstance(expected, tuple):
        return " or ".join(names[t] for t in expected)
    return names[expected]


def _check(file, key, value, expected):
    """Return value if it has the expected type, else raise ConfigError naming file and key."""
    types = expected if isinstance(expected, tuple) else (expected,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if expected is list and ok:
        ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError(f"{file}: {key}: expected a list of strings")
    if not ok:
        # A secret of the wrong type is still a secret: name its type, never echo it.
        shown = type(value).__name__ if key.endswith(("api_key", "bot_token")) else repr(value)
        raise ConfigError(f"{file}: {key}: expected {_type_name(expected)}, got {shown}"[:300])
    if key in POSITIVE_KEYS and value <= 0:
        raise ConfigError(f"{file}: {key}: must be greater than 0, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0 and key != "telegram.chat_id":
        raise ConfigError(f"{file}: {key}: must not be negative, got {value!r}")
    return value


def _section(file, raw, name, schema, warnings):
    data = raw.get(name)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {name}: expected a mapping of keys, got {type(data).__name__}")
    out = {}
    for key, (expected, default) in schema.items():
        if key in data and data[key] is not None:
            out[key] = _check(file, f"{name}.{key}", data[key], expected)
        else:
            out[key] = list(default) if isinstance(default, list) else default
    for key in data:
        if key not in schema:
            warnings.append(f"{file}: unknown key {name}.{key} (ignored)")
    return out


def _provider(file, llm, slot, warnings, shadowed):
    data = llm.get(slot)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: llm.{slot}: expected a mapping of keys")
    values = {}
    for key, (expected, default) in PROVIDER_SCHEMA.items():
        default = PROVIDER_DEFAULTS[slot].get(key, default)
        if key in data and data[key] is not None:
            values[key] = _check(file, f"llm.{slot}.{key}", data[key], expected)
        else:
            values[key] = default
    for key in data:
        if key not in PROVIDER_SCHEMA:
            warnings.append(f"{file}: unknown key llm.{slot}.{key} (ignored)")
    if values["type"] not in PROVIDER_TYPES:
        raise ConfigError(f"{file}: llm.{slot}.type: expected one of {', '.join(PROVIDER_TYPES)}, "
                          f"got {values['type']!r}"[:300])
    values["base_url"] = values["base_url"].strip().rstrip("/")
    env = os.environ.get(SECRET_ENV[("llm", slot, "api_key")])
    if env:
        shadowed.append(values["api_key"])
        values["api_key"] = env
    return Provider(name=slot, **values)


def _paths(file, p):
    root = Path(os.path.expanduser(p["root"]))
    if not root.is_absolute():
        root = (Path(file).resolve().parent / root)
    root = Path(os.path.normpath(root))

    def sub(name, default):
        value = p[name]
        if not value:
            return default
        path = Path(os.path.expanduser(value))
        return Path(os.path.normpath(path if path.is_absolute() else root / path))

    return Paths(
        root=root,
        state=sub("state", root / "state"),
        notes=sub("notes", root / "notes"),
        workdir=sub("workdir", root / "workdir"),
        archive=sub("archive", root / "archive"),
        logs=sub("logs", root / "logs"),
        pending=sub("pending", root / "pending"),
        prompts=sub("prompts", CODE_DIR / "prompts"),
    )


def default_config_path():
    return CODE_DIR / "config.yaml"


def load_config(path=None):
    """Read, check and return the Config at `path` (default: config.yaml beside the scripts)."""
    file = Path(path) if path else default_config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read config: {e.__class__.__name__}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}: not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of sections at the top level")
    warnings = []
    known = set(SCHEMA) | {"llm"}
    for key in raw:
        if key not in known:
            warnings.append(f"{file}: unknown key {key} (ignored)")
    sections = {name: _section(file, raw, name, schema, warnings) for name, schema in SCHEMA.items()}
    llm = raw.get("llm") or {}
    if not isinstance(llm, dict):
        raise ConfigError(f"{file}: llm: expected a mapping of keys")
    for key in llm:
        if key not in ("primary", "fallback"):
            warnings.append(f"{file}: unknown key llm.{key} (ignored)")
    shadowed = []
    primary = _provider(file, llm, "primary", warnings, shadowed)
    fallback = _provider(file, llm, "fallback", warnings, shadowed)

    tg = sections["telegram"]
    env_token = os.environ.get(SECRET_ENV[("telegram", "bot_token")])
    if env_token:
        shadowed.append(tg["bot_token"])
        tg["bot_token"] = env_token
    tg["api_base_url"] = tg["api_base_url"].strip().rstrip("/")
    hour = sections["supervisor"]["digest_hour_local"]
    if not 0 <= hour <= 23:
        raise ConfigError(f"{file}: supervisor.digest_hour_local: must be an hour from 0 to 23, got {hour}")
    thread = sections["scribe"]["approval_thread"]
    if thread not in THREAD_NAMES:
        raise ConfigError(f"{file}: scribe.approval_thread: expected one of {', '.join(THREAD_NAMES)}")
    for key in ("writable_paths", "forbidden_paths"):
        for entry in sections["guardrails"][key]:
            if os.path.isabs(entry) or ".." in Path(entry).parts or not entry.strip():
                raise ConfigError(f"{file}: guardrails.{key}: {entry!r} must be a path relative to the root")

    return Config(
        path=file.resolve(),
        paths=_paths(file, sections["paths"]),
        primary=primary,
        fallback=fallback,
        context=Section(sections["context"]),
        tick=Section(sections["tick"]),
        telegram=Telegram(**tg),
        supervisor=Section(sections["supervisor"]),
        scribe=Section(sections["scribe"]),
        digest=Section(sections["digest"]),
        logging=Section(sections["logging"]),
        guardrails=Section(sections["guardrails"]),
        warnings=warnings,
        shadowed_secrets=[v for v in shadowed if v],
    )
