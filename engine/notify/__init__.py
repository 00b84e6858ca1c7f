"""Notifications that leave the window: alert rules evaluated from bus events, delivered to the desktop,
e-mail (SMTP with TLS) and webhooks (Slack, Telegram, generic JSON). See docs/operations.md."""

from engine.notify.config import AlertRule, MonitoringConfig, NotifyConfig, default_rules, secret_name

__all__ = ["AlertRule", "MonitoringConfig", "NotifyConfig", "default_rules", "secret_name"]
