"""Shared fixtures: a fresh runtime root under tmp_path with a config.yaml pointing at local fake servers."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fakes import FakeOllama, FakeOpenAI, FakeTelegram

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

PRIMARY_KEY = "ollama-secret-key-0123456789abcdef"
FALLBACK_KEY = "opencode-secret-key-fedcba9876543210"
BOT_TOKEN = "123456789:AAE-fake-test-token-abcdefghijklmnopq"
CHAT_ID = -1001234567890
THREADS = {"log": 11, "requests": 22, "approvals": 33, "digest": 44}
SECRETS = (PRIMARY_KEY, FALLBACK_KEY, BOT_TOKEN)
CHRIS = 4242  # the operator's Telegram user id in the chat tests
STRANGER = 777


class Recorder:
    """Stands in for the Telegram client: records each send and answers `ok` (or raises when `fail`)."""

    def __init__(self, ok=True, fail=False):
        self.ok = ok
        self.fail = fail
        self.sent = []

    def send(self, text, thread="log", reply_markup=None):
        self.sent.append((text, thread))
        if self.fail:
            raise RuntimeError("telegram down")
        return self.ok


def alive(pid):
    """True while `pid` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def closed_port_url():
    """A 127.0.0.1 URL where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def deep_merge(base, extra):
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def reply(**fields):
    """A model reply: one ```json block holding `fields` (work_done defaults to a short line)."""
    fields.setdefault("work_done", "did a thing")
    return "Here is my reply.\n```json\n" + json.dumps(fields, ensure_ascii=False) + "\n```\n"


class Root:
    """A runtime root: paths, config writing, and running the entry points against it."""

    def __init__(self, path, ollama, openai, telegram):
        self.path = Path(path)
        self.ollama, self.openai, self.telegram = ollama, openai, telegram
        self.config_path = self.path / "config.yaml"
        self.write_config()

    def base_config(self):
        return {
            "paths": {"root": str(self.path)},
            "llm": {
                "primary": {"type": "ollama", "base_url": self.ollama.url, "api_key": PRIMARY_KEY,
                            "model": "qwen3.5", "timeout_s": 5},
                "fallback": {"type": "openai_compat", "base_url": self.openai.url, "api_key": FALLBACK_KEY,
                             "model": "qwen3.6", "timeout_s": 5},
            },
            "tick": {"shell_timeout_s": 5, "http_timeout_s": 5},
            "telegram": {"bot_token": BOT_TOKEN, "chat_id": CHAT_ID, "api_base_url": self.telegram.url,
                         **{f"{k}_thread_id": v for k, v in THREADS.items()}},
            "supervisor": {"tick_timeout_s": 60},
        }

    def write_config(self, **overrides):
        cfg = deep_merge(self.base_config(), overrides)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(cfg))
        os.chmod(self.config_path, 0o600)
        return self.config_path

    def cfg(self):
        from mako.config import load_config
        return load_config(self.config_path)

    def layout(self):
        """Create the root's folders and seed its state files, as a tick or install.sh does first."""
        from mako.paths import ensure_layout
        ensure_layout(self.cfg())

    def tick(self, *args):
        """Run tick.main in-process; returns the exit code."""
        import tick
        return tick.main(["--config", str(self.config_path), *args])

    def run(self, script, *args, timeout=120, **kw):
        """Run an entry point as a real subprocess, as an operator would."""
        return subprocess.run([sys.executable, str(REPO / script), "--config", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=timeout, **kw)

    def p(self, rel):
        return self.path / rel

    def read(self, rel):
        return (self.path / rel).read_text(encoding="utf-8")

    def payload(self, n):
        return json.loads(self.read(f"logs/ticks/{n:08d}.json"))

    def metrics(self):
        from mako.logs import read_metrics
        return read_metrics(self.path / "logs" / "metrics.csv")

    def all_files_text(self, skip=("config.yaml",)):
        """(relative path, bytes) of every file under the root except config.yaml."""
        for dirpath, _dirs, files in os.walk(self.path):
            for name in files:
                full = Path(dirpath) / name
                rel = full.relative_to(self.path)
                if str(rel) in skip:
                    continue
                yield str(rel), full.read_bytes()


@pytest.fixture
def ollama():
    with FakeOllama(api_key=PRIMARY_KEY) as fake:
        yield fake


@pytest.fixture
def openai():
    with FakeOpenAI(api_key=FALLBACK_KEY) as fake:
        yield fake


@pytest.fixture
def telegram():
    with FakeTelegram(token=BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
def root(tmp_path, ollama, openai, telegram):
    return Root(tmp_path / "mako", ollama, openai, telegram)


@pytest.fixture
def chat(root):
    """The root with Telegram inbound on for CHRIS; the fake knows the chat."""
    root.telegram.chat_id = CHAT_ID
    root.write_config(telegram={"inbound": {"enabled": True, "allowed_user_ids": [CHRIS]}})
    return root
