"""Load config.yaml once into typed dataclasses, with defaults, type checks and clear errors.

A bad value raises ConfigError whose text names the file and the key; entry points print that one line and
exit 78. Unknown keys are kept out of the config and reported as warnings naming `section.key`.
"""

import os
from dataclasses import field
from pathlib import Path
from urllib.parse import unquote

import yaml

from .denylist import DEFAULT_DENYLIST
from .errors import ConfigError
from .fileio import NotRegularFile, open_regular
from .schema import INT_LIST, NUMBER, Record, load_section, mapping, record, setting

CODE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = "/srv/mako-zero"
CONFIG_MAX_BYTES = 1024 * 1024


THREAD_NAMES = ("log", "requests", "approvals", "digest")
PROVIDER_TYPES = ("ollama", "openai_compat")
SECRET_ENV = {
    ("llm", "primary", "api_key"): "MAKO_PRIMARY_API_KEY",
    ("llm", "fallback", "api_key"): "MAKO_FALLBACK_API_KEY",
    ("telegram", "bot_token"): "MAKO_TELEGRAM_BOT_TOKEN",
}


# Each section is a dataclass whose fields are the schema: key, type, default. Nothing else lists keys.

@record
class PathsSection(Record):
    """paths.*: the root and the folders under it, as written (resolved into Paths)."""

    root: str = setting(str, DEFAULT_ROOT)
    state: str = setting(str, "")
    notes: str = setting(str, "")
    workdir: str = setting(str, "")
    archive: str = setting(str, "")
    logs: str = setting(str, "")
    pending: str = setting(str, "")
    prompts: str = setting(str, "")


@record
class Provider(Record):
    """One LLM slot. `name` is the slot (primary|fallback), not a config key."""

    type: str = setting(str, "ollama")
    base_url: str = setting(str, "")
    api_key: str = setting(str, "", secret=True)
    model: str = setting(str, "")
    timeout_s: float = setting(NUMBER, 120, positive=True)
    num_predict: int = setting(int, 12000, positive=True)
    name: str = field(default="", metadata={"internal": True})

    @property
    def configured(self):
        return bool(self.base_url and self.model)


PROVIDER_DEFAULTS = {
    "primary": {"type": "ollama", "base_url": "https://ollama.com", "model": "qwen3.5", "timeout_s": 180},
    "fallback": {"type": "openai_compat", "base_url": "https://opencode.ai/zen/go/v1", "model": "qwen3.6",
                 "timeout_s": 120},
}


@record
class LlmSettings(Record):
    """llm.*: the two provider slots and how long a provider that keeps timing out is skipped."""

    primary: Provider = field(default_factory=Provider)
    fallback: Provider = field(default_factory=Provider)
    timeout_cooldown_s: float = setting(NUMBER, 600)


@record
class ContextSettings(Record):
    """context.*: the size of the hot context (§8)."""

    max_input_tokens: int = setting(int, 18000, positive=True)
    recent_journal_lines: int = setting(int, 20)
    max_requested_notes: int = setting(int, 3)


@record
class TickSettings(Record):
    """tick.*: bounds on one tick's actions, spends and posts."""

    shell_timeout_s: float = setting(NUMBER, 30, positive=True)
    http_timeout_s: float = setting(NUMBER, 30, positive=True)
    http_response_max_bytes: int = setting(int, 8192, positive=True)
    shell_output_max_bytes: int = setting(int, 4096, positive=True)
    compact_every_n_ticks: int = setting(int, 50)
    approval_threshold_pence: int = setting(int, 200)
    budget_ceiling_pence_month: int = setting(int, 10000)
    telegram_summary_max_chars: int = setting(int, 1000, positive=True)
    max_actions: int = setting(int, 12)


@record
class InboundSettings(Record):
    """telegram.inbound.*: who may steer and approve from the chat (§20)."""

    enabled: bool = setting(bool, False)
    allowed_user_ids: list = setting(INT_LIST, [])


@record
class Telegram(Record):
    """telegram.*: the bot, the chat and its threads."""

    bot_token: str = setting(str, "", secret=True)
    chat_id: object = setting((int, str), "")
    log_thread_id: int = setting(int, 0)
    requests_thread_id: int = setting(int, 0)
    approvals_thread_id: int = setting(int, 0)
    digest_thread_id: int = setting(int, 0)
    api_base_url: str = setting(str, "https://api.telegram.org")
    inbound: InboundSettings = field(default_factory=InboundSettings)

    @property
    def enabled(self):
        return bool(self.bot_token) and self.chat_id not in ("", None, 0)

    @property
    def inbound_on(self):
        """Whether listen.py takes messages (§20): switched on, with someone allowed, and Telegram on."""
        return self.enabled and self.inbound.enabled and bool(self.inbound.allowed_user_ids)

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


@record
class SupervisorSettings(Record):
    """supervisor.*: cadence and timeouts of the jobs (§4)."""

    tick_interval_s: float = setting(NUMBER, 300, positive=True)
    scribe_interval_s: float = setting(NUMBER, 7200, positive=True)
    digest_hour_local: int = setting(int, 8)
    tick_timeout_s: float = setting(NUMBER, 300, positive=True)
    scribe_timeout_s: float = setting(NUMBER, 240, positive=True)
    digest_timeout_s: float = setting(NUMBER, 60, positive=True)
    stop_grace_s: float = setting(NUMBER, 10)


@record
class ScribeSettings(Record):
    """scribe.*: the blog-draft writer."""

    enabled: bool = setting(bool, True)
    recent_journal_lines: int = setting(int, 100)
    approval_thread: str = setting(str, "approvals")


@record
class DigestSettings(Record):
    """digest.*: the daily summary."""

    enabled: bool = setting(bool, True)
    hours_window: float = setting(NUMBER, 24, positive=True)


@record
class LoggingSettings(Record):
    """logging.*: payload files and how long they are kept."""

    full_payload: bool = setting(bool, True)
    keep_days: float = setting(NUMBER, 14)


@record
class EmailSettings(Record):
    """email.*: the SMTP account approved email_send items go out through (§19)."""

    smtp_host: str = setting(str, "")
    smtp_port: int = setting(int, 465, positive=True)
    username: str = setting(str, "")
    password: str = setting(str, "", secret=True)
    sender: str = setting(str, "", key="from")

    @property
    def configured(self):
        return bool(self.smtp_host and self.sender)


@record
class CloudflareSettings(Record):
    """cloudflare.*: the API token approved cf_api items use (§19)."""

    api_token: str = setting(str, "", secret=True)
    account_id: str = setting(str, "")

    @property
    def configured(self):
        return bool(self.api_token)


@record
class HealthSettings(Record):
    """health.*: when a run of failures becomes an alert (§21)."""

    alert_after_ticks: int = setting(int, 3, positive=True)


@record
class GuardrailSettings(Record):
    """guardrails.*: the shell denylist and where the model may write."""

    shell_denylist_substrings: list = setting(list, DEFAULT_DENYLIST)
    writable_paths: list = setting(list, ["state", "notes", "workdir", "archive", "pending"])
    forbidden_paths: list = setting(list, [])


@record
class Paths(Record):
    """Absolute paths of the root and its folders."""

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


@record
class Config(Record):
    """The whole checked config, passed down explicitly."""

    path: Path
    paths: Paths
    llm: LlmSettings
    context: ContextSettings
    tick: TickSettings
    telegram: Telegram
    supervisor: SupervisorSettings
    scribe: ScribeSettings
    digest: DigestSettings
    logging: LoggingSettings
    email: EmailSettings
    cloudflare: CloudflareSettings
    health: HealthSettings
    guardrails: GuardrailSettings
    warnings: list = field(default_factory=list)
    # Secret values written in the file but overridden from the environment: still scrubbed wherever seen.
    shadowed_secrets: list = field(default_factory=list)

    @property
    def primary(self):
        return self.llm.primary

    @property
    def fallback(self):
        return self.llm.fallback

    @property
    def providers(self):
        return [p for p in (self.primary, self.fallback) if p.configured]

    def secrets(self):
        """Every configured secret value, longest first (so a longer one is scrubbed before its prefix)."""
        values = {self.primary.api_key, self.fallback.api_key, self.telegram.bot_token, self.email.password,
                  self.cloudflare.api_token, *self.shadowed_secrets, *proxy_passwords()}
        return sorted((v for v in values if v), key=len, reverse=True)


# The top-level sections, in the order of config.example.yaml. `llm` and `paths` are read specially.
SECTIONS = {
    "paths": PathsSection, "llm": LlmSettings, "context": ContextSettings, "tick": TickSettings,
    "telegram": Telegram, "supervisor": SupervisorSettings, "scribe": ScribeSettings,
    "digest": DigestSettings, "logging": LoggingSettings, "email": EmailSettings,
    "cloudflare": CloudflareSettings, "health": HealthSettings, "guardrails": GuardrailSettings,
}


def proxy_passwords(environ=None):
    """The passwords in the proxy variables (`http://user:password@proxy:3128`): not in config.yaml, but
    secrets all the same, and a shell action can print its environment."""
    environ = os.environ if environ is None else environ
    found = set()
    for name in ("https_proxy", "http_proxy", "all_proxy"):
        for value in (environ.get(name), environ.get(name.upper())):
            userinfo = (value or "").split("://", 1)[-1].rpartition("@")[0]
            _, colon, password = userinfo.partition(":")
            if colon and password:
                found.update((password, unquote(password)))
    return found


def _apply_env(obj, attr, env_name, shadowed):
    value = os.environ.get(env_name)
    if value:
        shadowed.append(getattr(obj, attr))
        setattr(obj, attr, value)


def _paths(file, p):
    root = Path(os.path.expanduser(p.root))
    if not root.is_absolute():
        root = (Path(file).resolve().parent / root)
    root = Path(os.path.normpath(root))

    def sub(name, default):
        value = getattr(p, name)
        if not value:
            return default
        path = Path(os.path.expanduser(value))
        return Path(os.path.normpath(path if path.is_absolute() else root / path))

    return Paths(root=root, prompts=sub("prompts", CODE_DIR / "prompts"),
                 **{name: sub(name, root / name) for name in ("state", "notes", "workdir", "archive", "logs",
                                                              "pending")})


def default_config_path():
    return CODE_DIR / "config.yaml"


def _yaml_error(file, e):
    """PyYAML's own problem and where, on one line (`... line 3, column 7: mapping values are not allowed`)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or e.__class__.__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return ConfigError(f"{file}: not valid YAML{where}: {' '.join(str(problem).split())}"[:300])


def load_config(path=None):
    """Read, check and return the Config at `path` (default: config.yaml beside the scripts)."""
    file = Path(path) if path else default_config_path()
    try:
        # open_regular: a FIFO planted at the config's path must not hang every entry point.
        with open_regular(file) as f:
            text = f.read(CONFIG_MAX_BYTES + 1).decode("utf-8")
        if len(text) > CONFIG_MAX_BYTES:
            raise ConfigError(f"{file}: over {CONFIG_MAX_BYTES // 1024} KB, not a config file")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found (install.sh writes one from config.example.yaml; "
                          "or pass --config PATH)") from None
    except NotRegularFile:
        raise ConfigError(f"{file}: not a regular file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read config: {e.__class__.__name__}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _yaml_error(file, e) from None
    if raw is None:
        raise ConfigError(f"{file}: the config is empty (start from config.example.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of sections at the top level")
    if "llm" not in raw:
        raise ConfigError(f"{file}: llm: missing section (the providers to call; see config.example.yaml)")
    warnings = [f"{file}: unknown key {key} (ignored)" for key in raw if key not in SECTIONS]
    shadowed = []

    llm_raw = mapping(file, raw.get("llm"), "llm")
    llm = load_section(file, {k: v for k, v in llm_raw.items() if k not in ("primary", "fallback")}, "llm",
                   LlmSettings, warnings)
    for slot in ("primary", "fallback"):
        provider = load_section(file, llm_raw.get(slot), f"llm.{slot}", Provider, warnings, PROVIDER_DEFAULTS[slot])
        if provider.type not in PROVIDER_TYPES:
            raise ConfigError(f"{file}: llm.{slot}.type: expected one of {', '.join(PROVIDER_TYPES)}, "
                              f"got {provider.type!r}"[:300])
        provider.name = slot
        provider.base_url = provider.base_url.strip().rstrip("/")
        _apply_env(provider, "api_key", SECRET_ENV[("llm", slot, "api_key")], shadowed)
        setattr(llm, slot, provider)

    sections = {name: load_section(file, raw.get(name), name, cls, warnings)
                for name, cls in SECTIONS.items() if name != "llm"}
    tg = sections["telegram"]
    _apply_env(tg, "bot_token", SECRET_ENV[("telegram", "bot_token")], shadowed)
    tg.api_base_url = tg.api_base_url.strip().rstrip("/")
    hour = sections["supervisor"].digest_hour_local
    if not 0 <= hour <= 23:
        raise ConfigError(f"{file}: supervisor.digest_hour_local: must be an hour from 0 to 23, got {hour}")
    if sections["scribe"].approval_thread not in THREAD_NAMES:
        raise ConfigError(f"{file}: scribe.approval_thread: expected one of {', '.join(THREAD_NAMES)}")
    for key in ("writable_paths", "forbidden_paths"):
        for entry in getattr(sections["guardrails"], key):
            if os.path.isabs(entry) or ".." in Path(entry).parts or not entry.strip():
                raise ConfigError(f"{file}: guardrails.{key}: {entry!r} must be a path relative to the root")

    paths = _paths(file, sections.pop("paths"))
    return Config(path=file.resolve(), paths=paths, llm=llm, warnings=warnings,
                  shadowed_secrets=[v for v in shadowed if v], **sections)
