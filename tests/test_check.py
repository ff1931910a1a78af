"""tick.py --check (§21): one line per error (exit 78) or warning (exit 0), never a secret."""

import pytest

from conftest import SECRETS

import tick


def check(root, capsys, **overrides):
    if overrides:
        root.write_config(**overrides)
    rc = tick.main(["--config", str(root.config_path), "--check"])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err


def test_check_clean_config_is_ok(root, capsys):
    rc, lines, err = check(root, capsys)
    assert rc == 0 and err == ""
    assert lines == ["note: Telegram inbound is off (telegram.inbound.enabled is false)",
                     f"config check ({root.config_path}): ok"]
    assert not root.p("state").exists()  # a check runs nothing and creates nothing


@pytest.mark.parametrize("slot,kind,url,env", [
    ("primary", "ollama", "https://ollama.com", "MAKO_PRIMARY_API_KEY"),
    ("fallback", "openai_compat", "https://opencode.ai/zen/go/v1", "MAKO_FALLBACK_API_KEY"),
])
def test_check_empty_api_key_where_the_endpoint_needs_one_is_an_error(root, capsys, monkeypatch, slot, kind,
                                                                       url, env):
    monkeypatch.delenv(env, raising=False)
    rc, lines, _ = check(root, capsys, llm={slot: {"type": kind, "base_url": url, "api_key": ""}})
    host = url.split("/")[2]
    assert rc == 78
    assert f"error: llm.{slot}.api_key is empty, and {kind} at {host} needs one (set it in the config or in {env})" \
        in lines
    assert lines[-1].endswith(": 1 error, 0 warnings")


@pytest.mark.parametrize("kind,url", [("ollama", "http://127.0.0.1:11434"), ("ollama", "http://gpu-box:11434"),
                                      ("openai_compat", "http://localhost:8080/v1"),
                                      ("openai_compat", "http://192.168.1.20:8000/v1")])
def test_check_local_endpoints_need_no_key(root, capsys, kind, url):
    rc, lines, _ = check(root, capsys, llm={"primary": {"type": kind, "base_url": url, "api_key": ""}})
    assert rc == 0 and not any(line.startswith("error") for line in lines)


def test_check_the_key_from_the_environment_counts(root, capsys, monkeypatch):
    monkeypatch.setenv("MAKO_PRIMARY_API_KEY", "from-the-environment-123")
    rc, lines, _ = check(root, capsys, llm={"primary": {"base_url": "https://ollama.com", "api_key": ""}})
    assert rc == 0


def test_check_no_provider_configured_is_an_error(root, capsys):
    rc, lines, _ = check(root, capsys, llm={"primary": {"base_url": ""}, "fallback": {"model": ""}})
    assert rc == 78 and lines[0].startswith("error: llm: no provider configured")


def test_check_tick_timeout_too_short_for_both_providers_is_a_warning(root, capsys):
    rc, lines, _ = check(root, capsys, llm={"primary": {"timeout_s": 40}, "fallback": {"timeout_s": 30}},
                         supervisor={"tick_timeout_s": 60})
    assert rc == 0
    assert ("warning: supervisor.tick_timeout_s (60s) is shorter than llm.primary.timeout_s + "
            "llm.fallback.timeout_s (40s + 30s): a primary that hangs leaves the fallback less than its own "
            "timeout") in lines
    assert lines[-1].endswith(": 0 errors, 1 warning")


def test_check_telegram_token_without_chat_is_an_error_chat_without_token_a_warning(root, capsys):
    rc, lines, _ = check(root, capsys, telegram={"chat_id": ""})
    assert rc == 78
    assert "error: telegram.bot_token is set but telegram.chat_id is not: nothing can be posted" in lines
    root.write_config(telegram={"bot_token": ""})
    rc, lines, _ = check(root, capsys)
    assert rc == 0 and "warning: telegram.chat_id is set but telegram.bot_token is empty: Telegram is off" in lines


def test_check_says_why_inbound_is_off(root, capsys):
    rc, lines, _ = check(root, capsys, telegram={"inbound": {"enabled": True}})
    assert rc == 0
    assert ("warning: Telegram inbound is off: telegram.inbound.enabled is true but "
            "telegram.inbound.allowed_user_ids is empty (nobody is allowed to steer it)") in lines
    rc, lines, _ = check(root, capsys, telegram={"bot_token": "", "inbound": {"enabled": True,
                                                                             "allowed_user_ids": [42]}})
    assert any(line.startswith("warning: Telegram inbound is off: it is enabled, but Telegram itself is off")
               for line in lines)
    rc, lines, _ = check(root, capsys, telegram={"inbound": {"enabled": True, "allowed_user_ids": [42]}})
    assert "note: Telegram inbound is on for 1 allowed user(s)" in lines


def test_check_missing_root_is_an_error(root, capsys, tmp_path):
    missing = tmp_path / "nowhere"
    rc, lines, _ = check(root, capsys, paths={"root": str(missing)})
    assert rc == 78
    assert f"error: paths.root: {missing} does not exist (install.sh creates it, or fix the path)" in lines
    assert not missing.exists()


def test_check_unknown_keys_are_warnings_naming_section_and_key(root, capsys):
    rc, lines, _ = check(root, capsys, tick={"frobnicate_level": 3}, colour="blue")
    assert rc == 0
    assert any(line.startswith("warning: ") and line.endswith("unknown key tick.frobnicate_level (ignored)")
               for line in lines)
    assert any(line.startswith("warning: ") and "unknown key colour" in line for line in lines)


@pytest.mark.parametrize("text,expected", [
    ("", "the config is empty"),
    ("# only a comment\n", "the config is empty"),
    ("paths:\n  root: /tmp\n", "llm: missing section"),
    ("llm: [unclosed\n", "not valid YAML at line"),
    ("llm: {}\ntick:\n  max_actions: many\n", "tick.max_actions"),
])
def test_check_config_the_loader_refuses_is_one_line_and_78(root, capsys, text, expected):
    root.config_path.write_text(text)
    rc, lines, err = check(root, capsys)
    assert rc == 78 and err == ""
    assert len(lines) == 2 and lines[0].startswith(f"error: {root.config_path}: ") and expected in lines[0]
    assert lines[1] == "config check: 1 error"


def test_check_never_prints_a_secret_and_runs_as_a_subprocess(root):
    root.write_config(telegram={"chat_id": ""}, tick={"frobnicate_level": 3})
    r = root.run("tick.py", "--check")
    assert r.returncode == 78
    for secret in SECRETS:
        assert secret not in r.stdout + r.stderr
    assert r.stderr == ""
    assert not root.p("logs").exists()
