"""Executors of approved gated actions (§19) against local fake servers: HTTP writes, SMTP with TLS,
Cloudflare API v4; their failures bounded by the tick's timeouts and recorded as the decision's result."""

import json
import logging
import time

import pytest
from conftest import THREADS
from fake_smtp import FakeSMTP, closed_smtp_port, make_cert
from fakes import FakeServer, Reply

from mako import decisions, executors
from mako.approvals import ApprovalQueue
from mako.paths import ensure_layout
from mako.redact import Redactor
from mako.telegram import TelegramClient

APPROVALS = THREADS["approvals"]
SMTP_PASSWORD = "smtp-secret-pass-0123456789"
CF_TOKEN = "cf-secret-token-abcdefghij0123"


@pytest.fixture(autouse=True)
def no_stale_log_handler():
    logging.getLogger().handlers.clear()


@pytest.fixture
def web():
    with FakeServer() as fake:
        yield fake


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    made = make_cert(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("openssl is needed to make the fake SMTP server's certificate")
    return made


@pytest.fixture
def trust(cert, monkeypatch):
    """Trust the fake server's self-signed certificate the way an operator would trust a private CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    return cert


def approve(root, action, **kw):
    cfg = root.cfg()
    ensure_layout(cfg)
    redactor = Redactor(cfg.secrets())
    qid = ApprovalQueue(cfg, redactor, TelegramClient(cfg.telegram, redactor)).enqueue(action, 1)
    return decisions.decide(root.cfg(), qid, "approved", "cli", **kw)


def last_decision(root):
    return json.loads(root.read("pending/decisions.jsonl").splitlines()[-1])


# -- http_post / http_put / http_delete --------------------------------------------------------------------

def test_http_post_sends_json_body_as_json(root, web):
    web.push("/hook", Reply(201, {"created": True}))
    out = approve(root, {"type": "http_post", "url": web.url + "/hook", "body": {"name": "Grüße", "n": 1}})
    assert (out.ok, out.code) == (True, 0)
    req = web.requests_to("/hook")[0]
    assert req.method == "POST" and req.header("Content-Type") == "application/json"
    assert req.json == {"name": "Grüße", "n": 1}
    assert out.message.startswith(f"✅ q1 approved · http_post · ok: POST {web.url}/hook → 201")
    assert last_decision(root)["result"]["output"] == 'body: {"created": true}'
    assert root.telegram.texts(APPROVALS)[-1] == out.message


def test_http_put_sends_a_string_as_text_and_delete_sends_nothing(root, web):
    web.push("/doc", Reply(200, "stored"), Reply(204, b""))
    assert approve(root, {"type": "http_put", "url": web.url + "/doc", "body": "plain words"}).ok
    assert approve(root, {"type": "http_delete", "url": web.url + "/doc"}).ok
    put, delete = web.requests_to("/doc")
    assert put.method == "PUT" and put.body == b"plain words"
    assert put.header("Content-Type") == "text/plain; charset=utf-8"
    assert delete.method == "DELETE" and delete.body == b""


def test_http_write_5xx_is_a_failed_result_posted_and_recorded(root, web):
    web.push("/hook", Reply(503, "upstream down"))
    out = approve(root, {"type": "http_post", "url": web.url + "/hook", "body": {}})
    assert (out.ok, out.code) == (False, 1)
    assert out.message.startswith("✅ q1 approved · http_post · failed: POST") and "→ 503" in out.message
    result = last_decision(root)["result"]
    assert result["ok"] is False and result["status"] == "error" and "upstream down" in result["output"]
    assert root.telegram.texts(APPROVALS)[-1] == out.message


def test_http_write_slow_server_is_bounded_by_the_http_timeout(root, web):
    root.write_config(tick={"http_timeout_s": 1})
    web.push("/slow", Reply(200, "x" * 50, mode="drip", delay_s=0.2))
    started = time.monotonic()
    out = approve(root, {"type": "http_post", "url": web.url + "/slow", "body": "b"})
    assert time.monotonic() - started < 5
    assert out.code == 1 and "no complete answer within 1s" in last_decision(root)["result"]["summary"]


def test_http_write_does_not_follow_a_redirect(root, web):
    web.push("/moved", Reply(302, "", headers={"Location": web.url + "/elsewhere"}))
    out = approve(root, {"type": "http_post", "url": web.url + "/moved", "body": {"a": 1}})
    assert out.ok and "→ 302" in out.message
    assert web.requests_to("/elsewhere") == []


def test_http_write_refuses_a_non_http_url(root):
    out = approve(root, {"type": "http_delete", "url": "file:///etc/passwd"})
    assert out.code == 1 and "http_delete takes an http:// or https:// URL" in out.message


# -- cf_api ------------------------------------------------------------------------------------------------

@pytest.fixture
def cloudflare(root, web, monkeypatch):
    root.write_config(cloudflare={"api_token": CF_TOKEN, "account_id": "acc123"})
    monkeypatch.setattr(executors, "CF_API_BASE", web.url + "/client/v4")
    return web


def test_cf_api_calls_v4_with_the_token_and_reports_the_envelope(root, cloudflare):
    cloudflare.push("/client/v4/accounts/acc123/workers/scripts",
                    Reply(200, {"success": True, "errors": [], "messages": [], "result": {"id": "w"}}))
    out = approve(root, {"type": "cf_api", "method": "post", "path": "/accounts/{account_id}/workers/scripts",
                         "body": {"name": "w"}})
    assert out.ok, out.message
    req = cloudflare.requests_to("/client/v4/accounts/acc123/workers/scripts")[0]
    assert req.method == "POST" and req.header("Authorization") == f"Bearer {CF_TOKEN}" and req.json == {"name": "w"}
    assert "CF POST /accounts/acc123/workers/scripts → 200 success=true" in out.message
    for _, data in root.all_files_text():
        assert CF_TOKEN.encode() not in data


def test_cf_api_error_envelope_is_a_failure(root, cloudflare):
    cloudflare.push("/client/v4/zones", Reply(400, {"success": False, "errors": [{"code": 1061,
                                                                                  "message": "zone exists"}]}))
    out = approve(root, {"type": "cf_api", "method": "POST", "path": "/zones", "body": {"name": "x.dev"}})
    assert out.code == 1 and "→ 400 success=false: 1061 zone exists" in out.message


@pytest.mark.parametrize("path", ["https://evil.example/x", "//evil.example/x", "/zones/../../x", "/zones@evil",
                                  "/zones\n/x", "zones"])
def test_cf_api_path_cannot_send_the_token_elsewhere(root, cloudflare, path):
    out = approve(root, {"type": "cf_api", "method": "GET", "path": path})
    assert out.code == 1 and "cf_api path must be an API path" in out.message
    assert cloudflare.requests == []


def test_cf_api_without_token_is_refused_before_anything_is_recorded(root):
    out = approve(root, {"type": "cf_api", "method": "GET", "path": "/zones"})
    assert out.code == 1 and "cloudflare.api_token is empty" in out.message and "approve.py done q1" in out.message
    assert not root.p("pending/decisions.jsonl").exists()


# -- email_send --------------------------------------------------------------------------------------------

def email_config(root, port, username="mako", password=SMTP_PASSWORD):
    root.write_config(email={"smtp_host": "127.0.0.1", "smtp_port": port, "username": username,
                             "password": password, "from": "Mako <mako@example.com>"})


EMAIL = {"type": "email_send", "to": "Ed <ed@example.com>", "subject": "Draft ready", "body": "Grüße,\nsee it."}


def test_email_send_over_starttls_with_auth(root, trust):
    with FakeSMTP(*trust, tls="starttls", username="mako", password=SMTP_PASSWORD) as smtp:
        email_config(root, smtp.port)
        out = approve(root, dict(EMAIL))
        assert out.ok, out.message
        assert out.message == "✅ q1 approved · email_send · ok: emailed ed@example.com: Draft ready"
        (msg,) = smtp.messages
        assert msg["tls"] is True and msg["auth"] == "mako"
        assert msg["mail_from"].startswith("<mako@example.com>") and msg["rcpt_to"][0].startswith("<ed@example.com>")
        text = msg["data"].decode()
        assert "Subject: Draft ready" in text and "To: Ed <ed@example.com>" in text and "Message-ID:" in text
    for _, data in root.all_files_text():
        assert SMTP_PASSWORD.encode() not in data


def test_email_send_over_implicit_tls(root, trust, monkeypatch):
    with FakeSMTP(*trust, tls="implicit") as smtp:
        monkeypatch.setattr(executors, "IMPLICIT_TLS_PORTS", (465, smtp.port))
        email_config(root, smtp.port, username="")
        out = approve(root, dict(EMAIL))
        assert out.ok, out.message
        assert smtp.messages[0]["tls"] is True and smtp.commands[0] == "EHLO"


def test_email_send_never_falls_back_to_plain_text(root, trust):
    with FakeSMTP(*trust, tls="none") as smtp:
        email_config(root, smtp.port, username="")
        out = approve(root, dict(EMAIL))
        assert out.code == 1 and "offers no STARTTLS; not sending in plain text" in out.message
        assert smtp.messages == [] and "EHLO" in smtp.commands


def test_email_send_server_refusals_are_the_result(root, trust):
    with FakeSMTP(*trust, username="mako", password="other") as smtp:
        email_config(root, smtp.port)
        out = approve(root, dict(EMAIL))
        assert out.code == 1 and "SMTP 535" in out.message
    with FakeSMTP(*trust, replies={"RCPT": "550 5.1.1 no such user here"}) as smtp:
        email_config(root, smtp.port, username="")
        out = approve(root, dict(EMAIL, subject="again"))
        assert out.code == 1 and "no such user here" in out.message
        assert smtp.messages == []
    assert [json.loads(x)["result"]["ok"] for x in root.read("pending/decisions.jsonl").splitlines()
            if json.loads(x).get("result")] == [False, False]


def test_email_send_hanging_server_is_bounded(root, trust):
    root.write_config(tick={"http_timeout_s": 1})
    with FakeSMTP(*trust, hang=True) as smtp:
        email_config(root, smtp.port, username="")
        root.write_config(tick={"http_timeout_s": 1}, email={"smtp_host": "127.0.0.1", "smtp_port": smtp.port,
                                                             "from": "mako@example.com"})
        started = time.monotonic()
        out = approve(root, dict(EMAIL))
        assert time.monotonic() - started < 5
        assert out.code == 1 and "failed" in out.message


def test_email_send_refused_connection_is_a_failed_result(root, trust):
    email_config(root, closed_smtp_port(), username="")
    out = approve(root, dict(EMAIL))
    assert out.code == 1 and "ConnectionRefusedError" in out.message


def test_email_send_header_injection_is_refused(root, trust):
    with FakeSMTP(*trust) as smtp:
        email_config(root, smtp.port, username="")
        out = approve(root, dict(EMAIL, to="ed@example.com\r\nBcc: all@example.com"))
        assert out.code == 1 and "is not an email address" in out.message
        out = approve(root, dict(EMAIL, subject="Hi\r\nBcc: all@example.com"))
        assert out.ok
        data = smtp.messages[0]["data"].decode()
        assert "\nBcc:" not in data and "Subject: Hi Bcc: all@example.com" in data


def test_email_send_to_several_addresses_reaches_each(root, trust):
    with FakeSMTP(*trust) as smtp:
        email_config(root, smtp.port, username="")
        out = approve(root, dict(EMAIL, to="ed@example.com, Ann <ann@example.com>"))
        assert out.ok and "emailed ed@example.com, ann@example.com" in out.message
        assert [r.split()[0] for r in smtp.messages[0]["rcpt_to"]] == ["<ed@example.com>", "<ann@example.com>"]
        out = approve(root, dict(EMAIL, to="ed@example.com, not an address"))
        assert out.code == 1 and "is not an email address" in out.message and len(smtp.messages) == 1
