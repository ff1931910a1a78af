"""config.yaml loading (§2): the shipped example equals the defaults; bad values name file and key; exit 78."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mako.config import DEFAULT_DENYLIST, PROVIDER_DEFAULTS, SECRET_ENV, SECTIONS, Provider, load_config
from mako.schema import schema_keys
from mako.errors import ConfigError

CODE = Path(__file__).resolve().parent.parent
EXAMPLE = CODE / "config.example.yaml"
ENTRY_POINTS = ["tick.py", "scribe.py", "digest.py", "analyse.py", "supervisor.py"]


@pytest.fixture(autouse=True)
def no_secret_env(monkeypatch):
    for name in SECRET_ENV.values():
        monkeypatch.delenv(name, raising=False)


def write(tmp_path, text, name="config.yaml"):
    """A config file; one without an `llm` section gets an empty one (a config must have it)."""
    text = textwrap.dedent(text)
    if not any(line.startswith("llm:") for line in text.splitlines()):
        text = "llm: {}\n" + text
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def comparable(cfg):
    """Everything a run reads from a Config, without where it was loaded from."""
    return {name: getattr(cfg, name) for name in ("paths", *SECTIONS) if name != "paths"} | {"paths": cfg.paths}


def test_config_example_loads_without_warnings_and_equals_defaults(tmp_path):
    example = load_config(EXAMPLE)
    defaults = load_config(write(tmp_path, "llm: {}\n"))
    assert example.warnings == []
    assert comparable(example) == comparable(defaults)
    assert example.guardrails.shell_denylist_substrings == DEFAULT_DENYLIST


def test_config_example_names_every_key():
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))

    def keys(cls):
        return {key for key, _f in schema_keys(cls)}

    for section, cls in SECTIONS.items():
        assert set(raw[section]) == keys(cls) - {"primary", "fallback"} | (
            {"primary", "fallback"} if section == "llm" else set()), section
    assert set(raw["telegram"]["inbound"]) == {"enabled", "allowed_user_ids"}
    for slot in ("primary", "fallback"):
        assert set(raw["llm"][slot]) == keys(Provider), slot
        for key, value in PROVIDER_DEFAULTS[slot].items():
            assert raw["llm"][slot][key] == value


@pytest.mark.parametrize("text,what", [
    ("", "the config is empty"),
    ("# only a comment\n", "the config is empty"),
    ("tick:\n  max_actions: 5\n", "llm: missing section"),
])
def test_config_empty_or_without_llm_is_an_error(tmp_path, text, what):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and what in str(err.value)


def test_config_yaml_error_names_problem_line_and_column(tmp_path):
    path = write(tmp_path, "llm: {}\ntick:\n  max_actions: 5\n   shell_timeout_s: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "line 4, column 19" in message, message
    assert "mapping values are not allowed here" in message
    assert "\n" not in message


def test_config_new_sections_are_typed_and_their_secrets_scrubbed(tmp_path):
    cfg = load_config(write(tmp_path, """\
        telegram:
          inbound: {enabled: true, allowed_user_ids: [42, 7]}
        email: {smtp_host: smtp.example.org, password: mail-secret-1, from: mako@example.org}
        cloudflare: {api_token: cf-token-secret}
        health: {alert_after_ticks: 5}
        llm: {timeout_cooldown_s: 60}
        """))
    assert cfg.telegram.inbound.allowed_user_ids == [42, 7]
    assert cfg.email.sender == "mako@example.org" and cfg.email.configured
    assert cfg.cloudflare.configured and cfg.health.alert_after_ticks == 5
    assert cfg.llm.timeout_cooldown_s == 60
    assert {"mail-secret-1", "cf-token-secret"} <= set(cfg.secrets())


def test_config_example_secrets_are_empty():
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert raw["llm"]["primary"]["api_key"] == ""
    assert raw["llm"]["fallback"]["api_key"] == ""
    assert raw["telegram"]["bot_token"] == ""


def test_config_example_root_line_is_rewritable():
    # install.sh rewrites exactly this line to the install's root.
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    assert lines.count("  root: /srv/mako-zero") == 1
    assert lines[lines.index("  root: /srv/mako-zero") - 1] == "paths:"


def test_config_example_every_key_has_a_comment():
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")) or stripped.endswith(":"):
            continue
        if stripped == "root: /srv/mako-zero":
            continue  # rewritten by install.sh; documented under paths
        assert "#" in stripped, line


def test_config_root_derives_every_folder(tmp_path):
    cfg = load_config(write(tmp_path, f"paths:\n  root: {tmp_path}\n  logs: elsewhere/logs\n"))
    assert cfg.paths.root == tmp_path
    for name in ("state", "notes", "workdir", "archive", "pending"):
        assert getattr(cfg.paths, name) == tmp_path / name
    assert cfg.paths.logs == tmp_path / "elsewhere" / "logs"


BAD = [
    ("llm:\n  primary:\n    timeout_s: fast\n", "llm.primary.timeout_s"),
    ("llm:\n  primary:\n    type: grpc\n", "llm.primary.type"),
    ("llm:\n  fallback:\n    num_predict: 0\n", "llm.fallback.num_predict"),
    ("llm:\n  fallback: nope\n", "llm.fallback"),
    ("llm: [1, 2]\n", "llm"),
    ("tick:\n  max_actions: -1\n", "tick.max_actions"),
    ("tick:\n  max_actions: 1.5\n", "tick.max_actions"),
    ("tick:\n  shell_timeout_s: 0\n", "tick.shell_timeout_s"),
    ("tick: [1, 2]\n", "tick"),
    ("context:\n  max_input_tokens: true\n", "context.max_input_tokens"),
    ("supervisor:\n  digest_hour_local: 24\n", "supervisor.digest_hour_local"),
    ("supervisor:\n  digest_hour_local: -1\n", "supervisor.digest_hour_local"),
    ("supervisor:\n  tick_interval_s: '300'\n", "supervisor.tick_interval_s"),
    ("scribe:\n  enabled: 'yes'\n", "scribe.enabled"),
    ("scribe:\n  approval_thread: nowhere\n", "scribe.approval_thread"),
    ("telegram:\n  log_thread_id: abc\n", "telegram.log_thread_id"),
    ("telegram:\n  chat_id: [1]\n", "telegram.chat_id"),
    ("guardrails:\n  writable_paths: state\n", "guardrails.writable_paths"),
    ("guardrails:\n  writable_paths: [1]\n", "guardrails.writable_paths"),
    ("guardrails:\n  forbidden_paths: [/etc]\n", "guardrails.forbidden_paths"),
    ("guardrails:\n  writable_paths: [../up]\n", "guardrails.writable_paths"),
    ("paths:\n  root: 5\n", "paths.root"),
    ("logging:\n  keep_days: -3\n", "logging.keep_days"),
    ("telegram:\n  inbound:\n    allowed_user_ids: [alice]\n", "telegram.inbound.allowed_user_ids"),
    ("telegram:\n  inbound: yes\n", "telegram.inbound"),
    ("email:\n  smtp_port: 0\n", "email.smtp_port"),
    ("health:\n  alert_after_ticks: 0\n", "health.alert_after_ticks"),
    ("llm:\n  timeout_cooldown_s: soon\n", "llm.timeout_cooldown_s"),
]


@pytest.mark.parametrize("text,key", BAD, ids=[key + ":" + text.split()[-1] for text, key in BAD])
def test_config_bad_value_names_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert key in message
    assert "\n" not in message


@pytest.mark.parametrize("text,what", [
    ("tick:\n  max_actions: [1\n", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
    ("just a string\n", "mapping"),
])
def test_config_unreadable_document_names_file(tmp_path, text, what):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert what in str(err.value)


def test_config_missing_file_names_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "not found" in str(err.value) and "install.sh" in str(err.value)


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_config_fifo_or_folder_at_the_path_is_one_line_not_a_hang(tmp_path, kind):
    path = tmp_path / "config.yaml"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: not a regular file"


def test_config_unknown_key_is_a_warning_not_an_error(tmp_path):
    cfg = load_config(write(tmp_path, "tick:\n  frobnicate_level: 3\n  max_actions: 5\n"))
    assert cfg.tick.max_actions == 5
    assert len(cfg.warnings) == 1
    assert "tick.frobnicate_level" in cfg.warnings[0]
    assert not hasattr(cfg.tick, "frobnicate_level")


def test_config_unknown_section_and_provider_key_warn(tmp_path):
    cfg = load_config(write(tmp_path, "extras: 1\nllm:\n  primary:\n    temperature: 0.2\n"))
    assert any("extras" in w for w in cfg.warnings)
    assert any("llm.primary.temperature" in w for w in cfg.warnings)


def test_config_env_vars_override_secrets(tmp_path, monkeypatch):
    path = write(tmp_path, """\
        llm:
          primary: {api_key: file-primary}
          fallback: {api_key: file-fallback}
        telegram: {bot_token: "111:file-token"}
        """)
    assert load_config(path).primary.api_key == "file-primary"
    monkeypatch.setenv("MAKO_PRIMARY_API_KEY", "env-primary-key")
    monkeypatch.setenv("MAKO_FALLBACK_API_KEY", "env-fallback-key")
    monkeypatch.setenv("MAKO_TELEGRAM_BOT_TOKEN", "222:env-token-value")
    cfg = load_config(path)
    assert cfg.primary.api_key == "env-primary-key"
    assert cfg.fallback.api_key == "env-fallback-key"
    assert cfg.telegram.bot_token == "222:env-token-value"
    # The overridden file values stay secrets too: `cat config.yaml` must not show them.
    assert set(cfg.secrets()) == {"env-primary-key", "env-fallback-key", "222:env-token-value",
                                  "file-primary", "file-fallback", "111:file-token"}


def test_config_empty_base_url_means_slot_not_configured(tmp_path):
    cfg = load_config(write(tmp_path, "llm:\n  fallback:\n    base_url: ''\n"))
    assert [p.name for p in cfg.providers] == ["primary"]


def run_exit_check(argv, tmp_path):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def assert_one_line_78(proc, path, key):
    assert proc.returncode == 78, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and key in lines[0]


def test_config_load_or_report_prints_one_line(tmp_path):
    bad = write(tmp_path, "tick:\n  max_actions: many\n", "bad.yaml")
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(CODE)!r})
        from mako.cli import load_or_report
        sys.exit(0 if load_or_report(sys.argv[1], "probe") else 78)
        """), encoding="utf-8")
    assert_one_line_78(run_exit_check([str(probe), str(bad)], tmp_path), bad, "tick.max_actions")


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_config_entry_point_exits_78_on_bad_config(tmp_path, script):
    bad = write(tmp_path, "supervisor:\n  digest_hour_local: 99\n", "bad.yaml")
    proc = run_exit_check([str(CODE / script), "--config", str(bad)], tmp_path)
    assert_one_line_78(proc, bad, "supervisor.digest_hour_local")


def test_config_wrong_type_secret_is_not_echoed(tmp_path):
    path = write(tmp_path, "llm:\n  primary:\n    api_key: 98765432109876\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "llm.primary.api_key" in str(e.value) and "98765432109876" not in str(e.value)
