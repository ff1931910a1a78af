"""Executors of the gated action types, run only once the operator approved the action (§19).

`http_post|http_put|http_delete` share `http_get`'s bounds (timeout, capped body read, http(s) only).
`email_send` speaks SMTP with TLS through the standard library (implicit TLS on port 465, STARTTLS
otherwise, never plain text). `cf_api` calls the Cloudflare API v4 with the configured token. Each is a
handler with the same shape as the tick's own (`handler(ctx, action) -> result`), so `run_action` runs it
with the tick's redaction and error handling.
"""

import json
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formataddr, getaddresses, make_msgid, parseaddr

from .actions import ActionFailed, _text_arg, _time_left, bounded_request, http_url
from .text import short

CF_API_BASE = "https://api.cloudflare.com/client/v4"
CF_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_MAX_BYTES = 1024 * 1024
# Ports that speak TLS from the first byte (SMTPS); any other port must offer STARTTLS.
IMPLICIT_TLS_PORTS = (465,)


def configured_problem(cfg, kind):
    """Why an approved action of `kind` cannot be carried out here, or None when it can."""
    if kind == "email_send" and not cfg.email.configured:
        unset = " and ".join(k for k, v in (("email.smtp_host", cfg.email.smtp_host), ("email.from", cfg.email.sender))
                             if not v)
        return f"no email executor configured ({unset} {'are' if ' and ' in unset else 'is'} empty)"
    if kind == "cf_api" and not cfg.cloudflare.configured:
        return "no Cloudflare executor configured (cloudflare.api_token is empty)"
    return None


# -- http_post / http_put / http_delete --------------------------------------------------------------------

def _body_kwargs(action):
    """A JSON body is sent as JSON, a string as text; an absent body sends nothing."""
    if "body" not in action or action["body"] is None:
        return {}
    body = action["body"]
    if isinstance(body, str):
        data = _text_arg(action, "body", allow_blank=True).encode("utf-8")
        kwargs = {"data": data, "headers": {"Content-Type": "text/plain; charset=utf-8"}}
    else:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8", "backslashreplace")
        kwargs = {"data": data, "headers": {"Content-Type": "application/json"}}
    if len(data) > BODY_MAX_BYTES:
        raise ActionFailed(f"body is {len(data)} bytes, over the {BODY_MAX_BYTES} byte limit", "refused")
    return kwargs


def do_http_write(ctx, action):
    kind = action["type"]
    method = kind.split("_", 1)[1].upper()
    url = http_url(action, kind)
    # A redirect would turn a POST into a GET elsewhere; report it instead of following it.
    status, _, content_type, text, cut = bounded_request(ctx, method, url, allow_redirects=False,
                                                         **_body_kwargs(action))
    ok = status < 400
    return {"type": kind, "ok": ok, "status": "ok" if ok else "error", "url": url, "http_status": status,
            "content_type": content_type, "body": text, "truncated": cut,
            "summary": short(f"{method} {short(url, 100)} → {status}"
                             + (f": {short(text, 80)}" if text.strip() else ""))}


# -- cf_api ------------------------------------------------------------------------------------------------

def _cf_path(ctx, action):
    path = _text_arg(action, "path").strip()
    path = path.replace("{account_id}", ctx.cfg.cloudflare.account_id)
    # The token must only ever go to the API host: a path can't name another host or climb out.
    if not path.startswith("/") or path.startswith("//") or "@" in path or "\\" in path \
            or any(part in (".", "..") for part in path.split("?")[0].split("/")) \
            or any(ord(c) < 33 or c == "\x7f" for c in path):
        raise ActionFailed(f"cf_api path must be an API path like /zones/<id>/dns_records, got "
                           f"{short(path, 80)!r}", "refused", path=path)
    if path.startswith("/client/v4/"):
        path = path[len("/client/v4"):]
    return path


def do_cf_api(ctx, action):
    method = action.get("method") or "GET"
    if not isinstance(method, str) or method.upper() not in CF_METHODS:
        raise ActionFailed(f"cf_api method must be one of {', '.join(CF_METHODS)}")
    method = method.upper()
    path = _cf_path(ctx, action)
    kwargs = _body_kwargs(action)
    headers = kwargs.pop("headers", {})
    headers["Authorization"] = f"Bearer {ctx.cfg.cloudflare.api_token}"
    status, _, content_type, text, cut = bounded_request(ctx, method, CF_API_BASE + path, headers=headers,
                                                         allow_redirects=False, **kwargs)
    success, detail = None, ""
    try:
        envelope = json.loads(text) if not cut else None
    except ValueError:
        envelope = None
    if isinstance(envelope, dict):
        success = envelope.get("success")
        errors = envelope.get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0]
            detail = (f"{first.get('code', '')} {first.get('message', '')}".strip()
                      if isinstance(first, dict) else str(first))
    ok = status < 400 and success is not False
    return {"type": "cf_api", "ok": ok, "status": "ok" if ok else "error", "method": method, "path": path,
            "http_status": status, "content_type": content_type, "body": text, "truncated": cut,
            "summary": short(f"CF {method} {short(path, 80)} → {status}"
                             + (f" success={str(success).lower()}" if success is not None else "")
                             + (f": {detail}" if detail else ""))}


# -- email_send --------------------------------------------------------------------------------------------

def _addresses(action, key):
    """(To header, [addresses]) for one address or a comma-separated list; any bad one refuses them all."""
    value = _text_arg(action, key).strip()
    pairs = getaddresses([value]) if not any(c in value for c in "\r\n") else []
    if not pairs or any("@" not in addr or any(c.isspace() for c in addr) for _, addr in pairs):
        raise ActionFailed(f"'{key}' is not an email address: {short(value, 80)!r}", "refused")
    header = ", ".join(formataddr((name, addr)) if name else addr for name, addr in pairs)
    return header, [addr for _, addr in pairs]


def _message(cfg, action):
    to_header, to_addrs = _addresses(action, "to")
    subject = _text_arg(action, "subject")
    body = _text_arg(action, "body", allow_blank=True)
    if any(c in subject for c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
        subject = " ".join(subject.split())
    msg = EmailMessage()
    msg["From"] = cfg.email.sender
    msg["To"] = to_header
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=parseaddr(cfg.email.sender)[1].rpartition("@")[2] or None)
    msg.set_content(body)
    return msg, to_addrs


def do_email_send(ctx, action):
    cfg = ctx.cfg.email
    msg, to_addrs = _message(ctx.cfg, action)
    timeout = _time_left(ctx, ctx.cfg.tick.http_timeout_s)
    tls = ssl.create_default_context()
    try:
        if cfg.smtp_port in IMPLICIT_TLS_PORTS:
            client = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=timeout, context=tls)
        else:
            client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=timeout)
        with client:
            if cfg.smtp_port not in IMPLICIT_TLS_PORTS:
                client.ehlo()
                if not client.has_extn("starttls"):
                    raise ActionFailed(f"{cfg.smtp_host}:{cfg.smtp_port} offers no STARTTLS; not sending "
                                       "in plain text")
                client.starttls(context=tls)
                client.ehlo()
            if cfg.username:
                client.login(cfg.username, cfg.password)
            refused = client.send_message(msg, from_addr=parseaddr(cfg.sender)[1], to_addrs=to_addrs)
    except smtplib.SMTPResponseException as e:
        message = e.smtp_error.decode("utf-8", "replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
        raise ActionFailed(f"SMTP {e.smtp_code}: {short(message, 200)}", smtp_code=e.smtp_code) from None
    except smtplib.SMTPRecipientsRefused as e:
        raise ActionFailed(f"recipient refused: {short(str(e.recipients), 200)}") from None
    except (smtplib.SMTPException, ssl.SSLError, socket.timeout, OSError) as e:
        raise ActionFailed(f"{e.__class__.__name__}: {short(str(e), 200)}") from None
    if refused:
        raise ActionFailed(f"recipient refused: {short(str(refused), 200)}")
    return {"type": "email_send", "ok": True, "status": "ok", "to": ", ".join(to_addrs),
            "message_id": msg["Message-ID"], "summary": short(f"emailed {', '.join(to_addrs)}: {msg['Subject']}")}


EXECUTORS = {
    "http_post": do_http_write,
    "http_put": do_http_write,
    "http_delete": do_http_write,
    "cf_api": do_cf_api,
    "email_send": do_email_send,
}
