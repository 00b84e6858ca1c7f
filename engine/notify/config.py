"""Alert rules and notification destinations as data (the ``[notify]`` settings section).

Secrets are not here: an SMTP password, a Slack webhook URL (its path is the credential) and a Telegram bot
token live in the keyring under :func:`secret_name` (engine/credentials.py); the settings only name the
destination.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RuleKind = Literal[
    "drawdown", "daily_loss", "rejection_spike", "feed_stall", "heartbeat_missing",
    "kill_switch", "regime_high_vol", "strategy_disabled",
]
Level = Literal["info", "warning", "error", "critical"]

#: what ``threshold`` means for each rule kind (the editor shows it)
THRESHOLD_MEANING: dict[str, str] = {
    "drawdown": "fraction below peak equity (0.20 = 20 %)",
    "daily_loss": "today's loss as a fraction of net liquidation (0.03 = 3 %)",
    "rejection_spike": "broker rejections within the window",
    "feed_stall": "seconds without a quote while the market is open",
    "heartbeat_missing": "seconds without an engine heartbeat",
    "kill_switch": "(not used)",
    "regime_high_vol": "(not used)",
    "strategy_disabled": "(not used)",
}


class AlertRule(BaseModel):
    """One rule: when it fires, at what level, where it goes. ``name`` is its identity (de-duplication)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: RuleKind
    enabled: bool = True
    level: Level = "warning"
    threshold: float = Field(0.0, ge=0.0, description="Meaning depends on the kind (THRESHOLD_MEANING).")
    window_s: float = Field(300.0, gt=0.0, le=86_400.0, description="Counting window of rejection_spike.")
    #: destination names; empty means every enabled destination
    destinations: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _threshold_fits_kind(self) -> AlertRule:
        if self.kind in ("drawdown", "daily_loss") and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"rule {self.name!r}: a {self.kind} threshold is a fraction between 0 and 1, "
                             f"got {self.threshold}")
        if self.kind in ("rejection_spike", "feed_stall", "heartbeat_missing") and self.threshold <= 0:
            raise ValueError(f"rule {self.name!r}: a {self.kind} threshold must be positive")
        return self


def default_rules() -> list[AlertRule]:
    """The trading plan's rules: drawdown warning at 20 % and trip at 25 %, and the failure signals."""
    return [
        AlertRule(name="drawdown-warning", kind="drawdown", threshold=0.20, level="warning"),
        AlertRule(name="drawdown-trip", kind="drawdown", threshold=0.25, level="critical"),
        AlertRule(name="daily-loss", kind="daily_loss", threshold=0.03, level="error"),
        AlertRule(name="rejection-spike", kind="rejection_spike", threshold=5, window_s=300, level="error"),
        AlertRule(name="feed-stall", kind="feed_stall", threshold=60, level="error"),
        AlertRule(name="heartbeat-missing", kind="heartbeat_missing", threshold=30, level="critical"),
        AlertRule(name="kill-switch", kind="kill_switch", level="critical"),
        AlertRule(name="regime-high-vol", kind="regime_high_vol", level="warning"),
        AlertRule(name="strategy-disabled", kind="strategy_disabled", level="error"),
    ]


UserTarget = Literal["symbol", "position", "portfolio"]
UserMetric = Literal["last", "iv", "iv_rank", "delta", "gamma", "theta", "vega", "pnl_today"]
UserOperator = Literal["above", "below", "crosses"]

#: which metrics each target offers (what the engine publishes for it), and how the editor names them
USER_METRICS: dict[str, tuple[str, ...]] = {
    "symbol": ("last", "iv", "iv_rank"),
    "position": ("delta", "gamma", "theta", "vega"),
    "portfolio": ("delta", "gamma", "theta", "vega", "pnl_today"),
}
METRIC_LABEL: dict[str, str] = {
    "last": "last price ($)", "iv": "ATM IV (%)", "iv_rank": "IV rank (0–100)", "delta": "delta (shares)",
    "gamma": "gamma (shares per $1)", "theta": "theta ($/day)", "vega": "vega ($ per vol point)",
    "pnl_today": "P&L today ($)",
}


class UserAlertRule(BaseModel):
    """A trader's own condition: *target metric operator value*, e.g. ``SPY last below 590`` or ``portfolio
    delta above 500``. ``position`` means the positions of one underlying (``symbol``). ``once`` fires a single
    time and waits to be re-armed; ``every`` fires at each new crossing (the condition must clear in between).
    IV is in percent and IV rank 0–100, as the window shows them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$")
    enabled: bool = True
    target: UserTarget = "symbol"
    symbol: str = Field("", max_length=32, description="Underlying (symbol and position targets).")
    metric: UserMetric = "last"
    op: UserOperator = "crosses"
    value: float
    repeat: Literal["once", "every"] = "once"
    level: Level = "warning"
    #: destination names; empty means every enabled destination
    destinations: list[str] = Field(default_factory=list)

    @field_validator("symbol")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.strip().upper()

    @model_validator(mode="after")
    def _consistent(self) -> UserAlertRule:
        import math

        if self.metric not in USER_METRICS[self.target]:
            raise ValueError(f"rule {self.name!r}: a {self.target} has no {self.metric}; choose one of "
                             f"{', '.join(USER_METRICS[self.target])}")
        if self.target in ("symbol", "position") and not self.symbol:
            raise ValueError(f"rule {self.name!r}: a {self.target} rule needs a symbol")
        if self.target == "portfolio" and self.symbol:
            raise ValueError(f"rule {self.name!r}: a portfolio rule takes no symbol (got {self.symbol})")
        if not math.isfinite(self.value):
            raise ValueError(f"rule {self.name!r}: the value must be a number")
        if self.metric == "last" and self.value <= 0:
            raise ValueError(f"rule {self.name!r}: a price level must be positive, got {self.value}")
        if self.metric == "iv" and not 0 < self.value < 500:
            raise ValueError(f"rule {self.name!r}: IV is in percent (25 for 25 %), got {self.value}")
        if self.metric == "iv_rank" and not 0 <= self.value <= 100:
            raise ValueError(f"rule {self.name!r}: IV rank runs from 0 to 100, got {self.value}")
        return self

    def describe(self) -> str:
        who = "portfolio" if self.target == "portfolio" else (
            f"{self.symbol} positions" if self.target == "position" else self.symbol)
        return f"{who} {METRIC_LABEL[self.metric]} {self.op} {self.value:g}"


class _Destination(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$")
    enabled: bool = True
    min_level: Level = Field("warning", description="Notifications below this level are not sent here.")


class EmailDestination(_Destination):
    """SMTP with TLS: ``starttls`` (port 587) or ``ssl`` (implicit TLS, port 465). The password is in the
    keyring (``secret_name(name, "password")``); no password means no login."""

    type: Literal["email"] = "email"
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl"] = "starttls"
    username: str = ""
    sender: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")
    recipients: list[str] = Field(min_length=1)
    #: a PEM bundle to trust instead of the system's (a private relay with its own CA)
    ca_file: str = ""
    timeout_s: float = Field(15.0, gt=0, le=120)

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if "@" not in a or any(c.isspace() for c in a)]
        if bad:
            raise ValueError(f"not e-mail addresses: {', '.join(bad)}")
        return v


class WebhookDestination(_Destination):
    """An HTTP POST of JSON. ``slack``: ``{"text": ...}`` to the incoming-webhook URL stored in the keyring
    (``secret_name(name, "url")``). ``telegram``: ``sendMessage`` on ``{base_url}/bot{token}`` with the bot
    token from the keyring (``secret_name(name, "token")``) and ``chat_id``. ``generic``: the notification as
    JSON to ``url`` (not secret), with an optional bearer token from the keyring."""

    type: Literal["webhook"] = "webhook"
    format: Literal["slack", "telegram", "generic"] = "slack"
    url: str = Field("", description="generic: the endpoint (slack's URL is a secret and lives in the keyring).")
    base_url: str = Field("https://api.telegram.org", description="telegram: the Bot API server.")
    chat_id: str = ""
    timeout_s: float = Field(10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _complete(self) -> WebhookDestination:
        if self.format == "telegram" and not self.chat_id:
            raise ValueError(f"webhook {self.name!r}: telegram needs chat_id")
        if self.format == "generic" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook {self.name!r}: generic needs an http(s) url")
        if self.format == "slack" and self.url:
            raise ValueError(f"webhook {self.name!r}: a Slack webhook URL is a secret; store it in the keyring "
                             "(Alert rules dialog), not in the settings")
        return self


class DesktopDestination(_Destination):
    """The window's Alerts dock (and the tray for critical alerts) — what headless runs log instead."""

    type: Literal["desktop"] = "desktop"
    min_level: Level = "info"


Destination = Annotated[EmailDestination | WebhookDestination | DesktopDestination, Field(discriminator="type")]


def default_destinations() -> list[Destination]:
    return [DesktopDestination(name="desktop")]


class NotifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    rules: list[AlertRule] = Field(default_factory=default_rules)
    #: the trader's own price / IV / Greeks / P&L conditions (Alert rules dialog, *My alerts* tab)
    user_rules: list[UserAlertRule] = Field(default_factory=list)
    destinations: list[Destination] = Field(default_factory=default_destinations)
    #: the same rule is not sent again within this many seconds (it is counted and summarised instead)
    dedupe_s: float = Field(900.0, ge=0.0, le=86_400.0)
    #: at most this many notifications per destination per hour
    max_per_hour: int = Field(30, ge=1, le=3600)
    #: delivery attempts per notification and destination (backoff 1 s, 2 s, 4 s, ... between them)
    attempts: int = Field(4, ge=1, le=10)
    backoff_s: float = Field(1.0, gt=0.0, le=300.0)

    def all_rules(self) -> list[AlertRule | UserAlertRule]:
        """The built-in rules then the trader's own: both name destinations and are routed alike."""
        return [*self.rules, *self.user_rules]

    @model_validator(mode="after")
    def _names(self) -> NotifyConfig:
        rule_names = [r.name for r in self.rules] + [r.name for r in self.user_rules]
        for what, names in (("rule", rule_names), ("destination", [d.name for d in self.destinations])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} names: {', '.join(dupes)}")
        known = {d.name for d in self.destinations}
        for r in self.all_rules():
            missing = [d for d in r.destinations if d not in known]
            if missing:
                raise ValueError(f"rule {r.name!r} names unknown destinations: {', '.join(missing)}")
        return self


def secret_name(destination: str, field: str) -> str:
    """The keyring entry of a destination's secret (``password``, ``url`` or ``token``)."""
    return f"notify.{destination}.{field}"


class MonitoringConfig(BaseModel):
    """The Prometheus endpoint: off unless a port is set; always bound to 127.0.0.1."""

    model_config = ConfigDict(extra="forbid")

    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve /metrics on 127.0.0.1:PORT.")
    sample_interval_s: float = Field(1.0, gt=0.05, le=60.0)
