"""Actions (§12) and gating (§13) through run_action: real subprocesses, real files, a local HTTP server."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import BOT_TOKEN, CHAT_ID, PRIMARY_KEY, SECRETS, THREADS, Recorder, alive

from mako.actions import ActionContext, run_action
from mako.approvals import is_gated
from mako.denylist import denylist_match
from mako.gitpolicy import git_refusal
from mako.approvals import ApprovalQueue, read_queue
from mako.config import DEFAULT_DENYLIST
from mako.paths import PathPolicy, ensure_layout
from mako.redact import Redactor
from mako.telegram import TelegramClient


def make_ctx(root, deadline_s=60, compaction=False, client=None, **overrides):
    # chat_id as a string: the config loader currently refuses a negative (group) chat id as an integer.
    overrides.setdefault("telegram", {})["chat_id"] = str(CHAT_ID)
    root.write_config(**overrides)
    cfg = root.cfg()
    ensure_layout(cfg)
    redactor = Redactor(cfg.secrets())
    client = client or Recorder()
    return ActionContext(cfg=cfg, policy=PathPolicy(cfg, compaction=compaction), redactor=redactor,
                         telegram=client, queue=ApprovalQueue(cfg, redactor, client), tick_n=7,
                         deadline=time.time() + deadline_s, compaction=compaction)


@pytest.fixture
def ctx(root):
    return make_ctx(root)


def assert_no_secret(result):
    text = json.dumps(result, ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in text




def wait_gone(pid, within=3.0):
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


# -- shell -------------------------------------------------------------------------------------------------

def test_shell_runs_in_workdir_and_reports_output(ctx):
    r = run_action(ctx, {"type": "shell", "cmd": "pwd; echo hello"})
    assert r["ok"] is True and r["status"] == "ok"
    assert r["exit_code"] == 0 and r["timed_out"] is False
    assert r["stdout"] == f"{ctx.cfg.paths.workdir}\nhello\n"
    assert r["stderr"] == "" and r["stdout_truncated"] is False
    assert r["cmd"] == "pwd; echo hello"
    assert "exit 0" in r["summary"]


def test_shell_nonzero_exit_is_a_failed_action(ctx):
    r = run_action(ctx, {"type": "shell", "cmd": "echo oops >&2; exit 3"})
    assert r["ok"] is False and r["status"] == "error"
    assert r["exit_code"] == 3 and r["stderr"] == "oops\n"
    assert "exit 3" in r["summary"]


def test_shell_background_child_does_not_hang(ctx):
    start = time.monotonic()
    r = run_action(ctx, {"type": "shell", "cmd": "sleep 30 & echo $!; echo started"})
    took = time.monotonic() - start
    pid = int(r["stdout"].split()[0])
    try:
        assert took < 3, f"took {took:.1f}s"
        assert r["ok"] is True and r["stdout"].endswith("started\n")
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_shell_timeout_kills_the_whole_group(root):
    ctx = make_ctx(root, tick={"shell_timeout_s": 1})
    start = time.monotonic()
    r = run_action(ctx, {"type": "shell", "cmd": "sleep 60 & echo $!; sleep 60"})
    took = time.monotonic() - start
    assert 0.9 < took < 4
    assert r["ok"] is False and r["status"] == "error"
    assert r["timed_out"] is True and r["exit_code"] is None
    child = int(r["stdout"].split()[0])
    assert wait_gone(child), "background child survived the timeout kill"
    assert "timeout" in r["summary"]


def test_shell_timeout_shortened_by_the_tick_deadline(root):
    ctx = make_ctx(root, deadline_s=2.5)
    start = time.monotonic()
    r = run_action(ctx, {"type": "shell", "cmd": "sleep 20"})
    assert time.monotonic() - start < 4
    assert r["timed_out"] is True and r["ok"] is False


def test_shell_not_run_past_the_deadline(root, tmp_path):
    ctx = make_ctx(root, deadline_s=0.2)
    marker = tmp_path / "ran"
    r = run_action(ctx, {"type": "shell", "cmd": f"touch {marker}"})
    assert r["ok"] is False and r["status"] == "error" and "deadline" in r["error"]
    assert not marker.exists()


def test_shell_output_truncated_with_marker(root):
    ctx = make_ctx(root, tick={"shell_output_max_bytes": 100})
    r = run_action(ctx, {"type": "shell", "cmd": "head -c 5000 /dev/zero | tr '\\0' a; echo err >&2"})
    assert r["ok"] is True
    assert r["stdout"] == "a" * 100 + "…[truncated 4900 bytes]"
    assert r["stdout_truncated"] is True
    assert r["stderr"] == "err\n" and r["stderr_truncated"] is False


def test_shell_secrets_never_in_results(root):
    ctx = make_ctx(root, tick={"shell_output_max_bytes": 100})
    results = [
        run_action(ctx, {"type": "shell", "cmd": f"cat {ctx.cfg.path}"}),
        run_action(ctx, {"type": "shell", "cmd": f"echo {PRIMARY_KEY}; echo {BOT_TOKEN} >&2"}),
        # A secret straddling the output cap is scrubbed before the cut, so no fragment survives.
        run_action(ctx, {"type": "shell", "cmd": f"printf '%095d{PRIMARY_KEY}' 0"}),
    ]
    for r in results:
        assert_no_secret(r)
    assert results[0]["ok"] is True and "<redacted>" in results[0]["stdout"]
    assert results[1]["stdout"] == "<redacted>\n" and results[1]["stderr"] == "<redacted>\n"
    assert PRIMARY_KEY[:4] not in results[2]["stdout"]
    assert results[2]["stdout"].startswith("0" * 95)


def test_shell_child_env_has_no_secret_variables(root, monkeypatch):
    monkeypatch.setenv("MAKO_FALLBACK_API_KEY", "env-only-secret-value-778899")
    ctx = make_ctx(root)
    r = run_action(ctx, {"type": "shell", "cmd": "echo ${MAKO_FALLBACK_API_KEY:-unset}; env"})
    assert r["stdout"].startswith("unset\n")
    assert "env-only-secret-value" not in json.dumps(r)


# -- the denylist ------------------------------------------------------------------------------------------

DENIED = [
    ("rm -rf /", "rm -rf /"),
    ("rm -fr /", "rm -rf /"),
    ("rm -r -f /", "rm -rf /"),
    ("rm --recursive --force /", "rm -rf /"),
    ("rm  -Rf /", "rm -rf /"),
    ("rm -rf /*", "rm -rf /*"),
    ("rm -rf --no-preserve-root /", "rm -rf /"),
    ("RM -RF /", "rm -rf /"),
    ("sudo rm -rf /etc", "rm -rf /"),
    ("/bin/rm -rf /usr/", "rm -rf /"),
    ("rm -rf ~", "rm -rf ~"),
    ("rm -rf $HOME", "rm -rf ~"),
    ("cd /tmp && rm -rf //", "rm -rf /"),
    ("shutdown -h now", "shutdown"),
    ("sudo reboot", "reboot"),
    ("/sbin/reboot", "reboot"),
    ("echo x; shutdown -h now", "shutdown"),
    ("$(reboot)", "reboot"),
    ("echo `halt`", "halt"),
    ("echo \"$(poweroff)\"", "poweroff"),
    ("true && reboot", "reboot"),
    ("false || reboot", "reboot"),
    ("echo y | passwd root", "passwd"),
    ("(reboot)", "reboot"),
    ("mkfs.ext4 /dev/sdb1", "mkfs"),
    ("sudo -u root mkfs /dev/sdb", "mkfs"),
    ("env FOO=1 shutdown now", "shutdown"),
    ("nohup reboot &", "reboot"),
    ("exec reboot", "reboot"),
    ("timeout 5 reboot", "reboot"),
    ("nice -n 10 reboot", "reboot"),
    ("X=1 reboot", "reboot"),
    ("re\\boot", "reboot"),
    ("'reboot'", "reboot"),
    ("bash -c 'shutdown now'", "shutdown"),
    ("sh -c \"echo hi; reboot\"", "reboot"),
    ("ls\nreboot", "reboot"),
    ("  ShutDown   -r  now", "shutdown"),
    ("userdel bob", "userdel"),
    (":(){ :|:& };:", ":(){ :|:& };:"),
    ("echo 1 > /dev/sda", "> /dev/sda"),
    ("dd if=/dev/zero of=/dev/sda bs=1M", "dd if=/dev/zero of=/dev/"),
    ("systemctl   stop mako-zero", "systemctl stop mako-zero"),
    ("init 0", "init 0"),
]

ALLOWED = [
    "grep shutdown log",
    "htpasswd -c f u",
    "cat /etc/passwd",
    "echo reboot",
    "echo shutdown is scheduled",
    "cat shutdown.log",
    "git commit -m 'handle reboot'",
    "ls -la",
    "rm -rf /tmp/build",
    "rm -rf ./build",
    "rm -rf build/",
    "rm -f /tmp/x",
    "mkdir -p /srv/mako-zero/workdir/halt-notes",
    "python3 -c 'print(1)'",
    "man halt | head",
    "echo 'a; reboot' > notes.txt",
    "grep -r mkfs docs/",
    "curl -s https://example.com/shutdown",
    "rebooter --dry-run",
    "echo hi # reboot later",
    "find . -name '*.pyc' -delete",
]


@pytest.mark.parametrize("cmd,entry", DENIED)
def test_denylist_catches_commands(cmd, entry):
    assert denylist_match(cmd, DEFAULT_DENYLIST) == entry


@pytest.mark.parametrize("cmd", ALLOWED)
def test_denylist_lets_harmless_commands_through(cmd):
    assert denylist_match(cmd, DEFAULT_DENYLIST) is None


def test_denylist_custom_rm_entry_matches_its_target_only():
    entries = ["rm -rf /srv/data"]
    assert denylist_match("rm -fr /srv/data/", entries) == "rm -rf /srv/data"
    assert denylist_match("rm -rf /srv/data/old", entries) is None
    assert denylist_match("rm -rf /", entries) is None


def test_shell_denied_command_is_refused_and_not_run(ctx):
    marker = ctx.cfg.paths.workdir / "ran"
    r = run_action(ctx, {"type": "shell", "cmd": "touch ran; sudo reboot"})
    assert r["ok"] is False and r["status"] == "refused"
    assert r["denylist_entry"] == "reboot" and "reboot" in r["summary"]
    assert not marker.exists()


# -- http_get ----------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    routes = {}

    def do_GET(self):
        status, headers, body = self.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"nope"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.routes = {
        "/big": (200, {"Content-Type": "text/plain; charset=utf-8"}, b"x" * 20000),
        "/small": (200, {"Content-Type": "application/json"}, b'{"a": 1}'),
        "/moved": (302, {"Location": "/small"}, b""),
        "/leak": (200, {"Content-Type": "text/plain"}, f"key={PRIMARY_KEY}".encode()),
        "/fail": (500, {"Content-Type": "text/plain"}, b"boom"),
    }
    yield base
    server.shutdown()
    server.server_close()


def test_http_get_caps_the_body(ctx, web):
    r = run_action(ctx, {"type": "http_get", "url": web + "/big"})
    assert r["ok"] is True and r["status"] == "ok"
    assert r["http_status"] == 200 and r["truncated"] is True
    assert r["content_type"] == "text/plain; charset=utf-8"
    assert r["body"].startswith("x" * 8192) and r["body"][8192:] == "…[truncated more than 8192 bytes]"


def test_http_get_follows_redirects_and_reports_final_url(ctx, web):
    r = run_action(ctx, {"type": "http_get", "url": web + "/moved"})
    assert r["ok"] is True and r["final_url"] == web + "/small"
    assert r["body"] == '{"a": 1}' and r["truncated"] is False
    assert r["url"] == web + "/moved"


def test_http_get_scrubs_body_and_fails_on_errors(ctx, web):
    r = run_action(ctx, {"type": "http_get", "url": web + "/leak"})
    assert r["body"] == "key=<redacted>"
    assert_no_secret(r)
    r = run_action(ctx, {"type": "http_get", "url": web + "/fail"})
    assert r["ok"] is False and r["http_status"] == 500 and r["body"] == "boom"


def test_http_get_rejects_other_schemes_and_reports_connection_errors(ctx):
    r = run_action(ctx, {"type": "http_get", "url": "file:///etc/passwd"})
    assert r["ok"] is False and r["status"] == "error" and "http" in r["error"]
    r = run_action(ctx, {"type": "http_get", "url": f"http://127.0.0.1:1/?k={PRIMARY_KEY}"})
    assert r["ok"] is False and r["status"] == "error" and r["error"]
    assert_no_secret(r)


# -- files -------------------------------------------------------------------------------------------------

def test_write_file_writes_and_appends(ctx):
    r = run_action(ctx, {"type": "write_file", "path": "notes/plan.md", "content": "one\n"})
    assert r == {"type": "write_file", "ok": True, "status": "ok", "path": "notes/plan.md", "mode": "write",
                 "bytes": 4, "summary": "wrote 4 bytes to notes/plan.md"}
    r = run_action(ctx, {"type": "write_file", "path": "notes/plan.md", "content": "two\n", "mode": "append"})
    assert r["ok"] is True and r["mode"] == "append"
    assert (ctx.cfg.paths.notes / "plan.md").read_text() == "one\ntwo\n"


@pytest.mark.parametrize("action,status,words", [
    ({"path": "config.yaml", "content": "x"}, "refused", "protected"),
    ({"path": "../escape.txt", "content": "x"}, "refused", ".."),
    ({"path": "state/MISSION.md", "content": "x"}, "refused", "protected"),
    ({"path": "notes/a.md", "content": "x" * (1024 * 1024 + 1)}, "refused", "1 MB"),
    ({"path": "notes/a.md", "content": 5}, "error", "content"),
    ({"path": "notes/a.md", "content": "x", "mode": "overwrite"}, "error", "mode"),
    ({"content": "x"}, "error", "path"),
])
def test_write_file_refusals_and_errors(ctx, action, status, words):
    r = run_action(ctx, {"type": "write_file", **action})
    assert r["ok"] is False and r["status"] == status
    assert words in r["error"]
    assert not (ctx.cfg.paths.notes / "a.md").exists()


def test_read_file_reads_caps_and_scrubs(root):
    ctx = make_ctx(root, tick={"http_response_max_bytes": 64})
    (ctx.cfg.paths.notes / "k.md").write_text(f"the key is {PRIMARY_KEY}\n")
    (ctx.cfg.paths.notes / "long.md").write_text("y" * 1000)
    r = run_action(ctx, {"type": "read_file", "path": "notes/k.md"})
    assert r["ok"] is True and r["content"] == "the key is <redacted>\n" and r["truncated"] is False
    r = run_action(ctx, {"type": "read_file", "path": "notes/long.md"})
    assert r["content"] == "y" * 64 + "…[truncated 936 bytes]" and r["truncated"] is True


def test_read_file_refuses_config_and_secret_files(ctx):
    r = run_action(ctx, {"type": "read_file", "path": "config.yaml"})
    assert r["ok"] is False and r["status"] == "refused"
    assert_no_secret(r)
    (ctx.cfg.paths.workdir / "id_rsa").write_text("private")
    r = run_action(ctx, {"type": "read_file", "path": "workdir/id_rsa"})
    assert r["status"] == "refused" and "private" not in json.dumps(r)


# -- git ---------------------------------------------------------------------------------------------------

def test_git_init_add_commit_log(ctx):
    (ctx.cfg.paths.workdir / "site").mkdir()
    steps = ["init -q site", "-C site config user.email mako@example.invalid", "-C site config user.name Mako",
             "git -C site add -A", "-C site commit -q --allow-empty -m 'first commit'",
             "-C site log --oneline"]
    for cmd in steps:
        r = run_action(ctx, {"type": "git", "cmd": cmd})
        assert r["ok"] is True, (cmd, r)
        assert r["exit_code"] == 0 and r["timed_out"] is False
    assert "first commit" in r["stdout"]
    assert r["cmd"] == "-C site log --oneline"


def test_git_nonzero_exit_is_failed(ctx):
    r = run_action(ctx, {"type": "git", "cmd": "log"})
    assert r["ok"] is False and r["status"] == "error" and r["exit_code"] not in (0, None)
    assert "not a git repository" in r["stderr"]


@pytest.mark.parametrize("cmd,why", [
    ("push origin main", "push"),
    ("git push", "push"),
    ("-c core.pager=sh log", "-c"),
    ("-ccore.editor=x commit", "-c"),
    ("--config-env=core.pager=X log", "--config-env"),
    ("--exec-path=/tmp log", "--exec-path"),
    ("st", "not an allowed git subcommand"),
    ("config alias.x '!sh -c id'", "alias.x"),
    ("config --global core.editor vim", "--global"),
    ("config diff.foo.textconv cat", "textconv"),
    ("fetch origin", "network"),
    ("pull", "network"),
    ("remote add o https://example.com/r.git", "network"),
    ("clone --upload-pack=touch /tmp/x src dst", "upload-pack"),
    ("clone https://example.com/r.git", "URL"),
    ("clone -u evil src dst", "clone -u"),
    ("log --output=/tmp/x", "--output"),
    ("diff --ext-diff", "--ext-diff"),
    ("grep -Ovim x", "-O"),
    ("merge -s evil topic", "strategies"),
    ("-C /tmp status", "inside workdir"),
    ("--git-dir=/etc/.git status", "inside workdir"),
    ("--help", "not allowed"),
])
def test_git_refuses_dangerous_commands(ctx, cmd, why):
    r = run_action(ctx, {"type": "git", "cmd": cmd})
    assert r["ok"] is False and r["status"] == "refused", r
    assert why in r["error"]


def test_git_refusal_allows_safe_forms(tmp_path):
    (tmp_path / "repo").mkdir()
    for args in (["status"], ["-C", "repo", "log", "-p", "--", "--output"], ["commit", "-s", "-m", "x"],
                 ["config", "user.name", "Mako"], ["diff", "--no-ext-diff", "--stat"], ["--version"],
                 ["merge", "-s", "ort", "topic"], ["clone", "repo", "copy"]):
        assert git_refusal(args, tmp_path) is None, args


def test_git_bad_quoting_is_an_error(ctx):
    r = run_action(ctx, {"type": "git", "cmd": "commit -m 'unterminated"})
    assert r["ok"] is False and r["status"] == "error" and "split" in r["error"]


# -- gating ------------------------------------------------------------------------------------------------

def test_needs_approval_queues_instead_of_running(ctx):
    marker = ctx.cfg.paths.workdir / "ran"
    r = run_action(ctx, {"type": "shell", "cmd": "touch ran", "needs_approval": True})
    assert r["ok"] is True and r["status"] == "queued" and r["id"] == "q1"
    assert not marker.exists()
    entries = read_queue(ctx.cfg.paths.pending / "pending_actions.jsonl")
    assert [e["action"]["cmd"] for e in entries] == ["touch ran"] and entries[0]["tick"] == 7
    r = run_action(ctx, {"type": "shell", "cmd": "touch ran", "needs_approval": "yes"})
    assert r["status"] == "queued" and r["id"] == "q2" and not marker.exists()
    r = run_action(ctx, {"type": "shell", "cmd": "touch ran", "needs_approval": False})
    assert r["status"] == "ok" and marker.exists()


def test_gated_types_are_queued_with_a_ping(ctx):
    r = run_action(ctx, {"type": "email_send", "to": "a@example.com", "subject": "hello", "body": "b"})
    assert r["status"] == "queued" and r["id"] == "q1" and "q1" in r["summary"]
    text, thread = ctx.telegram.sent[-1]
    assert thread == THREADS["approvals"]
    assert text.splitlines()[:3] == ["⏸ q1 queued · email_send", "to: a@example.com", "subject: hello"]
    for kind in ("cf_api", "http_post", "http_put", "http_delete"):
        assert run_action(ctx, {"type": kind, "url": "https://example.com"})["status"] == "queued"
    assert [e["id"] for e in read_queue(ctx.cfg.paths.pending / "pending_actions.jsonl")] == \
        ["q1", "q2", "q3", "q4", "q5"]


def test_is_gated_rules():
    assert is_gated({"type": "spend", "amount_pence": 201, "reason": "x"}, 200)
    assert not is_gated({"type": "spend", "amount_pence": 200, "reason": "x"}, 200)
    assert is_gated({"type": "shell", "cmd": "x", "spend": {"amount_pence": 500, "reason": "x"}}, 200)
    assert is_gated({"type": "shell", "cmd": "x", "needs_approval": 1}, 200)
    assert is_gated({"type": "shell", "cmd": "x", "needs_approval": "true"}, 200)
    assert not is_gated({"type": "shell", "cmd": "x", "needs_approval": None}, 200)
    assert is_gated({"type": "read_file", "needs_approval": True}, 200)
    assert is_gated({"type": "http_delete"}, 200)
    assert not is_gated({"type": "http_get", "url": "x"}, 200)


def test_spend_under_threshold_is_recorded_over_is_queued(ctx):
    r = run_action(ctx, {"type": "spend", "amount_pence": 150, "reason": "domain"})
    assert r["ok"] is True and r["status"] == "ok" and r["amount_pence"] == 150
    assert ctx.ledger.month_spend() == 150
    r = run_action(ctx, {"type": "spend", "amount_pence": 250, "reason": "vps"})
    assert r["status"] == "queued"
    assert ctx.ledger.month_spend() == 150
    for bad in (True, -1, 1.5, "100"):
        r = run_action(ctx, {"type": "spend", "amount_pence": bad, "reason": "x"})
        assert r["status"] == "error" and "amount_pence" in r["error"]


def test_attached_spend_over_the_ceiling_stops_the_action(root):
    ctx = make_ctx(root, tick={"budget_ceiling_pence_month": 300})
    r = run_action(ctx, {"type": "shell", "cmd": "touch one", "spend": {"amount_pence": 200, "reason": "a"}})
    assert r["ok"] is True and (ctx.cfg.paths.workdir / "one").exists() and "200p" in r["spend"]
    r = run_action(ctx, {"type": "shell", "cmd": "touch two", "spend": {"amount_pence": 150, "reason": "b"}})
    assert r["ok"] is False and r["status"] == "refused" and "ceiling" in r["error"]
    assert not (ctx.cfg.paths.workdir / "two").exists()
    assert ctx.ledger.month_spend() == 200
    r = run_action(ctx, {"type": "shell", "cmd": "reboot", "spend": {"amount_pence": 50, "reason": "c"}})
    assert r["status"] == "refused" and ctx.ledger.month_spend() == 200
    r = run_action(ctx, {"type": "shell", "cmd": "exit 1", "spend": {"amount_pence": 50, "reason": "d"}})
    assert r["status"] == "error" and ctx.ledger.month_spend() == 250


# -- telegram ----------------------------------------------------------------------------------------------

def tg_ctx(root, **threads):
    """A context whose Telegram client is the real one, posting to the fake Bot API."""
    ctx = make_ctx(root, telegram={**threads})
    ctx.telegram = TelegramClient(ctx.cfg.telegram, ctx.redactor, deadline=ctx.deadline)
    return ctx


def test_telegram_post_and_ask_chris(root):
    ctx = tg_ctx(root)
    r = run_action(ctx, {"type": "telegram_post", "text": "hi"})
    assert r["ok"] is True and r["delivered"] is True and r["thread"] == "log"
    r = run_action(ctx, {"type": "telegram_post", "text": "d", "thread": "digest"})
    assert r["ok"] is True and r["thread"] == "digest"
    r = run_action(ctx, {"type": "telegram_post", "text": "n", "thread": 4242})
    assert r["ok"] is True and r["thread"] == 4242
    r = run_action(ctx, {"type": "ask_chris", "text": f"may I? {PRIMARY_KEY}"})
    assert r["ok"] is True and r["delivered"] is True
    sent = [(m["text"], m.get("message_thread_id")) for m in root.telegram.messages]
    assert sent == [("hi", THREADS["log"]), ("d", THREADS["digest"]), ("n", 4242),
                    ("may I? <redacted>", THREADS["requests"])]


def test_ask_chris_falls_back_to_the_log_thread(root):
    ctx = tg_ctx(root, requests_thread_id=0)
    assert run_action(ctx, {"type": "ask_chris", "text": "q"})["ok"] is True
    assert root.telegram.messages[-1]["message_thread_id"] == THREADS["log"]


def test_telegram_post_bad_thread_and_blank_text(root):
    ctx = tg_ctx(root)
    r = run_action(ctx, {"type": "telegram_post", "text": "x", "thread": "kitchen"})
    assert r["ok"] is False and r["status"] == "error" and "kitchen" in r["error"]
    r = run_action(ctx, {"type": "telegram_post", "text": "  "})
    assert r["ok"] is False and "text" in r["error"]
    assert root.telegram.messages == []


def test_telegram_undelivered_is_a_failed_action(root):
    ctx = tg_ctx(root)
    root.telegram.push("sendMessage", root.telegram.tg_error(400, "Bad Request: chat not found"))
    r = run_action(ctx, {"type": "ask_chris", "text": "anyone?"})
    assert r["ok"] is False and r["delivered"] is False and r["status"] == "error"


# -- the envelope ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action,words", [
    ("shell ls", "object"),
    ({"cmd": "ls"}, "type"),
    ({"type": "launch_rocket"}, "launch_rocket"),
    ({"type": "shell"}, "cmd"),
    ({"type": "shell", "cmd": ["ls"]}, "cmd"),
    ({"type": "shell", "cmd": "ls", "spend": {"amount_pence": 5}}, "reason"),
])
def test_malformed_actions_are_error_results(ctx, action, words):
    r = run_action(ctx, action)
    assert r["ok"] is False and r["status"] == "error" and words in r["error"]
    assert isinstance(r["summary"], str) and r["summary"]


def test_compaction_tick_runs_no_actions(root):
    ctx = make_ctx(root, compaction=True)
    r = run_action(ctx, {"type": "shell", "cmd": "touch ran"})
    assert r["status"] == "refused" and not (ctx.cfg.paths.workdir / "ran").exists()


def test_a_crash_inside_an_action_becomes_an_error_result(ctx):
    ctx.policy = None
    r = run_action(ctx, {"type": "write_file", "path": "notes/x.md", "content": f"{PRIMARY_KEY}"})
    assert r["ok"] is False and r["status"] == "error" and "AttributeError" in r["error"]
    assert r["path"] == "notes/x.md"
