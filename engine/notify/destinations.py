"""Blocking senders for the notifier's worker threads: SMTP with TLS and JSON webhooks.

They run in :class:`engine.notify.notifier.Notifier`'s own thread pool, never on the loop, each with a socket
timeout so a destination that never answers ends the attempt. A non-2xx answer or a refused TLS handshake
raises :class:`DeliveryError` with a message fit for the Alerts dock (secrets redacted).
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from engine.credentials import redactor
from engine.notify.config import EmailDestination, WebhookDestination, secret_name
from engine.notify.rules import Notification

Secrets = Callable[[str], "str | None"]


class DeliveryError(RuntimeError):
    """A destination did not take the notification."""


def _tls_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


def email_message(dest: EmailDestination, n: Notification) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"Optiondesk {n.level}: {n.title}"
    msg["From"] = dest.sender
    msg["To"] = ", ".join(dest.recipients)
    msg.set_content(n.text())
    return msg


def send_email(dest: EmailDestination, n: Notification, secrets: Secrets) -> None:
    """One delivery attempt: TLS first (implicit or STARTTLS, certificate verified), then login, then send."""
    password = secrets(secret_name(dest.name, "password"))
    ctx = _tls_context(dest.ca_file)
    try:
        if dest.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(dest.host, dest.port, timeout=dest.timeout_s, context=ctx)
        else:
            smtp = smtplib.SMTP(dest.host, dest.port, timeout=dest.timeout_s)
        with smtp:
            if dest.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"{dest.host}:{dest.port} does not offer STARTTLS; refusing to send "
                                        "in clear text")
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if password:
                smtp.login(dest.username or dest.sender, password)
            smtp.send_message(email_message(dest, n))
    except DeliveryError:
        raise
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(redactor().redact(f"e-mail via {dest.host}:{dest.port}: {type(exc).__name__}: {exc}")) from exc


def webhook_request(dest: WebhookDestination, n: Notification, secrets: Secrets) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(url, JSON body, extra headers) for a destination; raises DeliveryError when its secret is missing."""
    headers: dict[str, str] = {}
    if dest.format == "slack":
        url = secrets(secret_name(dest.name, "url")) or ""
        if url:
            redactor().register(url)  # the webhook URL is the credential
        if not url.startswith(("http://", "https://")):
            raise DeliveryError(f"webhook {dest.name}: no Slack webhook URL in the keyring "
                                f"({secret_name(dest.name, 'url')})")
        icon = {"critical": ":rotating_light:", "error": ":x:", "warning": ":warning:"}.get(n.level, ":information_source:")
        body: dict[str, Any] = {"text": f"{icon} *{n.title}*\n{n.message}"}
    elif dest.format == "telegram":
        token = secrets(secret_name(dest.name, "token")) or ""
        if not token:
            raise DeliveryError(f"webhook {dest.name}: no Telegram bot token in the keyring "
                                f"({secret_name(dest.name, 'token')})")
        redactor().register(token)
        url = f"{dest.base_url.rstrip('/')}/bot{token}/sendMessage"
        body = {"chat_id": dest.chat_id, "text": f"{n.level.upper()}: {n.title}\n{n.message}",
                "disable_web_page_preview": True}
    else:
        url = dest.url
        bearer = secrets(secret_name(dest.name, "token"))
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        body = {"rule": n.rule, "kind": n.kind, "level": n.level, "title": n.title, "message": n.message,
                "ts": n.ts.isoformat()}
    return url, body, headers


def send_webhook(dest: WebhookDestination, n: Notification, secrets: Secrets) -> None:
    """One POST; any answer but 2xx is a failure (the notifier retries)."""
    url, body, headers = webhook_request(dest, n, secrets)
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "optiondesk", **headers})
    try:
        with urllib.request.urlopen(req, timeout=dest.timeout_s) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"webhook {dest.name}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(redactor().redact(f"webhook {dest.name}: {type(exc).__name__}: {reason}")) from exc
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook {dest.name}: HTTP {status}")
