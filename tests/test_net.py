"""mako's own HTTP client (net.Connection): verified TLS, the proxy variables, and a tick that goes through
them end to end. The http actions use requests and are tested with the actions."""

import base64
import json
import os
import shutil
import ssl
import subprocess
import time

import pytest

from conftest import BOT_TOKEN, Root, reply
from fakes import FakeOllama, FakeOpenAI, FakeProxy, FakeTelegram, RawServer, drip
from mako.net import Connection, proxy_for

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert file, server-side context)."""
    if not shutil.which("openssl"):
        pytest.fail("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(crt, key)
    return crt, server


@pytest.fixture
def clean_proxy_env(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def proxy():
    with FakeProxy() as p:
        yield p


def get_me(conn, url):
    resp = conn.request("POST", url, b"{}", {"Content-Type": "application/json"}, 5, 5, 1 << 20)
    return resp.status, resp.body


@pytest.mark.parametrize("no_proxy, host, port, bypass", [
    ("", "api.example.com", 443, False),
    ("*", "api.example.com", 443, True),
    ("example.com", "api.example.com", 443, True),
    (".example.com", "api.example.com", 443, True),
    ("example.com", "example.com", 443, True),
    ("example.com", "badexample.com", 443, False),
    ("api.example.com:8443", "api.example.com", 443, False),
    ("api.example.com:443", "api.example.com", 443, True),
    (" other.org , example.com ", "api.example.com", 443, True),
    ("127.0.0.0/8", "127.0.0.1", 80, True),
    ("10.0.0.0/8", "127.0.0.1", 80, False),
    ("127.0.0.1", "127.0.0.1", 8080, True),
    ("not a network/99", "127.0.0.1", 80, False),
])
def test_proxy_for_follows_no_proxy(no_proxy, host, port, bypass):
    env = {"HTTPS_PROXY": "http://proxy.internal:3128", "http_proxy": "http://proxy.internal:3128",
           "NO_PROXY": no_proxy}
    assert proxy_for("https", host, port, env) == (None if bypass else "http://proxy.internal:3128")


def test_proxy_for_lower_case_wins_and_all_proxy_is_the_fallback():
    assert proxy_for("https", "h", 443, {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:1"}) == "http://a:1"
    assert proxy_for("https", "h", 443, {"ALL_PROXY": "http://c:1"}) == "http://c:1"
    assert proxy_for("http", "h", 80, {"https_proxy": "http://a:1"}) is None
    assert proxy_for("https", "h", 443, {}) is None


def test_tls_is_verified_against_the_ca_store(cert, clean_proxy_env):
    crt, server = cert
    with FakeTelegram(token=BOT_TOKEN, tls=server) as tg:
        url = f"{tg.url}/bot{BOT_TOKEN}/getMe"
        # Not trusted: the handshake is refused before any request is sent.
        with pytest.raises(ssl.SSLCertVerificationError):
            get_me(Connection(tg.url), url)
        assert tg.requests == []
        clean_proxy_env.setenv("SSL_CERT_FILE", str(crt))  # trusted the way an operator adds a CA
        assert get_me(Connection(tg.url), url)[0] == 200
        assert [r.route for r in tg.requests] == [f"/bot{BOT_TOKEN}/getMe"]


def test_http_proxy_gets_the_absolute_url_with_its_credentials(proxy, clean_proxy_env):
    with FakeTelegram(token=BOT_TOKEN) as tg:
        clean_proxy_env.setenv("HTTP_PROXY", f"http://ops%40site:p%3Ass@127.0.0.1:{proxy.port}")
        url = f"{tg.url}/bot{BOT_TOKEN}/getMe"
        assert get_me(Connection(tg.url), url)[0] == 200
        assert proxy.seen == [(f"POST {url} HTTP/1.1", "Basic " + base64.b64encode(b"ops@site:p:ss").decode())]
        assert len(tg.requests) == 1
        # no_proxy: the same call goes straight to the server.
        clean_proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
        assert get_me(Connection(tg.url), url)[0] == 200
        assert len(proxy.seen) == 1 and len(tg.requests) == 2


def test_unsupported_proxy_scheme_is_a_clear_error(clean_proxy_env):
    clean_proxy_env.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="socks5"):
        get_me(Connection("https://api.example.com"), "https://api.example.com/x")


def test_connection_refuses_a_url_of_another_origin(clean_proxy_env):
    with pytest.raises(ValueError, match="origin"):
        Connection("http://127.0.0.1:1").request("GET", "http://127.0.0.2:1/x")


def test_tick_through_an_https_proxy_tunnel(tmp_path, cert, proxy):
    """A whole tick as the supervisor runs it, with HTTPS_PROXY set and a private CA: the provider call and
    the Telegram post both go through CONNECT tunnels, and TLS is verified end to end."""
    crt, server = cert
    with FakeOllama(tls=server) as ollama, FakeOpenAI() as openai, FakeTelegram(token=BOT_TOKEN, tls=server) as tg:
        root = Root(tmp_path / "root", ollama, openai, tg)
        ollama.reply_content(reply(work_done="reached through the proxy"))
        env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
        env.update(HTTPS_PROXY=f"http://u:pw@127.0.0.1:{proxy.port}", SSL_CERT_FILE=str(crt))
        proc = root.run("tick.py", env=env)
        assert proc.returncode == 0, proc.stderr
        tunnels = [line for line, auth in proxy.seen if auth == "Basic " + base64.b64encode(b"u:pw").decode()]
        assert f"CONNECT 127.0.0.1:{ollama.port} HTTP/1.0" in tunnels
        assert f"CONNECT 127.0.0.1:{tg.port} HTTP/1.0" in tunnels
        assert root.payload(1)["llm_attempts"][0]["ok"] is True
        assert any("reached through the proxy" in t for t in tg.texts())
        assert openai.requests == []


@pytest.mark.parametrize("head", [None, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"], ids=["headers", "body"])
def test_a_dripping_server_is_cut_at_the_deadline(head, clean_proxy_env):
    """A read timeout restarts with every byte; the exchange as a whole still ends at its deadline."""
    server = RawServer(drip(head, every=0.1))
    try:
        conn = Connection(server.url)
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="within 1.0s"):
            conn.request("POST", server.url + "/x", b"{}", {}, 1, 1.0, 1 << 20)
        assert server.hits == 1 and time.monotonic() - began < 2.5  # against hours at a byte per 0.1 s
        assert conn.conn is None  # a cut connection is never reused
    finally:
        server.close()


def test_a_body_cut_short_of_its_length_is_an_error_not_a_shorter_body(clean_proxy_env):
    from http.client import IncompleteRead
    server = RawServer(lambda conn, stop: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
                                                        b'{"ok": true}'))
    try:
        conn = Connection(server.url)
        with pytest.raises(IncompleteRead):
            conn.request("POST", server.url + "/x", b"{}", {}, 1, 5, 1 << 20)
        assert server.hits == 1
    finally:
        server.close()


def test_a_kept_alive_connection_the_server_closed_is_not_sent_on(clean_proxy_env):
    """Between two posts the server may drop the idle connection; the next post connects again instead of
    failing on the dead one."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"

    def respond(conn, stop):
        conn.sendall(answer)  # keep-alive by default in HTTP/1.1 ...
        stop.wait(0.2)  # ... then closed while idle

    server = RawServer(respond)
    try:
        conn = Connection(server.url)
        assert conn.request("POST", server.url + "/a", b"{}", {}, 1, 5, 1 << 20).body == b'{"ok":true}'
        assert conn.conn is not None  # kept for the next exchange
        time.sleep(0.6)
        assert conn.request("POST", server.url + "/b", b"{}", {}, 1, 5, 1 << 20).body == b'{"ok":true}'
        assert server.hits == 2
    finally:
        server.close()


def test_a_proxy_password_in_the_environment_is_scrubbed_like_a_configured_secret(root, proxy):
    """The unit's HTTPS_PROXY may carry a password; a shell action that prints its environment must not
    put it in the records, the posts or the next prompt."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env.update(HTTPS_PROXY=f"http://ops:pr0xy-s3cret%21@127.0.0.1:{proxy.port}", NO_PROXY="127.0.0.1")
    root.ollama.reply_content(reply(actions=[{"type": "shell", "cmd": "echo proxy=$HTTPS_PROXY"}]))
    proc = root.run("tick.py", env=env)
    assert proc.returncode == 0, proc.stderr
    results = root.read("state/LAST_RESULTS.md")
    assert "proxy=http://ops:<redacted>@127.0.0.1" in results  # the action printed it
    seen = results + json.dumps(root.payload(1)) + json.dumps(root.telegram.messages) + proc.stderr
    assert "pr0xy-s3cret" not in seen
    assert proxy.seen == []  # NO_PROXY: the calls to 127.0.0.1 went straight


def test_a_compressed_body_that_does_not_decode_is_a_refused_encoding(clean_proxy_env):
    from mako.net import EncodingRefused
    server = RawServer(lambda conn, stop: conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\nnot gzip at!"))
    try:
        with pytest.raises(EncodingRefused, match="does not decode"):
            Connection(server.url).request("POST", server.url + "/x", b"{}", {}, 1, 5, 1 << 20)
        assert server.hits == 1
    finally:
        server.close()


@pytest.mark.parametrize("name", ["https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                                  "ALL_PROXY"])
def test_every_proxy_variable_gives_up_its_password_as_a_secret(name):
    from mako.config import proxy_passwords
    assert proxy_passwords({name: "http://ops:p%40ss-w0rd@proxy.internal:3128"}) == {"p%40ss-w0rd", "p@ss-w0rd"}
    assert proxy_passwords({name: "proxy.internal:3128"}) == set()  # no userinfo: nothing to hide
    assert proxy_passwords({name: "socks5://only-a-user@proxy.internal:1080"}) == set()
