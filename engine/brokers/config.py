"""Broker endpoint and resilience settings (pure pydantic, no SDK imports).

Mounted by the lead as the ``[brokers]`` section of the settings file. Environment variables override
the tastytrade endpoints for testing and for pointing the app at a loopback server:
``OPTIONDESK_TT_API_URL`` (REST) and ``OPTIONDESK_TT_STREAMER_URL`` (account streamer websocket). The
DXLink market-data URL is not configured here: it comes from the ``/api-quote-tokens`` response.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TT_API_URL = "https://api.tastyworks.com"
TT_CERT_API_URL = "https://api.cert.tastyworks.com"
TT_STREAMER_URL = "wss://streamer.tastyworks.com"
TT_CERT_STREAMER_URL = "wss://streamer.cert.tastyworks.com"

ENV_TT_API_URL = "OPTIONDESK_TT_API_URL"
ENV_TT_STREAMER_URL = "OPTIONDESK_TT_STREAMER_URL"

#: IBKR socket ports of TWS and IB Gateway. "paper" ports reach a paper account: still a live account
#: on a paper server for our mode router (docs/architecture.md §6).
IBKR_PORT_PRESETS: dict[str, int] = {
    "tws-paper": 7497,
    "tws-live": 7496,
    "gateway-paper": 4002,
    "gateway-live": 4001,
}
IBKR_PAPER_PORTS = frozenset({7497, 4002})


class ReconnectConfig(BaseModel):
    """Exponential backoff with jitter: delay_n = min(max, initial × multiplier^n) × (1 ± jitter)."""

    model_config = ConfigDict(extra="forbid")
    initial_delay_s: float = Field(1.0, gt=0)
    max_delay_s: float = Field(60.0, gt=0)
    multiplier: float = Field(2.0, ge=1.0)
    jitter: float = Field(0.2, ge=0.0, le=1.0)
    max_attempts: int | None = Field(None, ge=1)


class CircuitBreakerConfig(BaseModel):
    """Consecutive transport failures that open the breaker, and how long it stays open before a probe."""

    model_config = ConfigDict(extra="forbid")
    failure_threshold: int = Field(3, ge=1)
    reset_timeout_s: float = Field(30.0, gt=0)


class TastytradeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sandbox: bool = False
    api_url: str | None = None
    streamer_url: str | None = None
    account: str | None = None  # account number to select; default: the first open account
    call_timeout_s: float = Field(10.0, gt=0)
    #: max symbols per DXLink subscription message (a too-large message closes the socket with 1009)
    subscribe_chunk: int = Field(200, ge=1)
    #: seconds between account-streamer heartbeats (each carries a currently valid auth token)
    account_heartbeat_s: float = Field(20.0, gt=0)

    def endpoints(self, env: Mapping[str, str] | None = None) -> tuple[str, str]:
        """(REST base URL, account-streamer URL): environment > settings > production/sandbox default."""
        env = os.environ if env is None else env
        api = env.get(ENV_TT_API_URL) or self.api_url or (TT_CERT_API_URL if self.sandbox else TT_API_URL)
        streamer = (
            env.get(ENV_TT_STREAMER_URL)
            or self.streamer_url
            or (TT_CERT_STREAMER_URL if self.sandbox else TT_STREAMER_URL)
        )
        return api.rstrip("/"), streamer


class IbkrConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(IBKR_PORT_PRESETS["tws-paper"], ge=1, le=65535)
    client_id: int = Field(17, ge=0)
    account: str | None = None
    call_timeout_s: float = Field(10.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    #: 1 live, 2 frozen, 3 delayed, 4 delayed-frozen
    market_data_type: Literal[1, 2, 3, 4] = 1
    #: market-data lines we allow ourselves (accounts usually have ~100; keep a margin)
    max_market_data_lines: int = Field(90, ge=1)

    @property
    def is_paper_port(self) -> bool:
        return self.port in IBKR_PAPER_PORTS

    @classmethod
    def preset(cls, name: str, **overrides: object) -> IbkrConfig:
        """A config for a named port preset (``tws-paper``, ``tws-live``, ``gateway-paper``, ``gateway-live``)."""
        if name not in IBKR_PORT_PRESETS:
            raise ValueError(f"unknown IBKR preset {name!r}; choose one of {sorted(IBKR_PORT_PRESETS)}")
        return cls(port=IBKR_PORT_PRESETS[name], **overrides)  # type: ignore[arg-type]


class BrokersConfig(BaseModel):
    """The ``[brokers]`` settings section."""

    model_config = ConfigDict(extra="forbid")
    tastytrade: TastytradeConfig = Field(default_factory=TastytradeConfig)
    ibkr: IbkrConfig = Field(default_factory=IbkrConfig)
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
