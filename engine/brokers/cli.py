"""``optiondesk check-broker tastytrade|ibkr [--sandbox] [--json] [--host --port --client-id]``.

Connects, lists accounts, balances and positions, loads the SPY chain, waits for at least 5 quotes,
runs a dry-run (tastytrade) / whatIf (IBKR) of a 1-lot SPY put spread, disconnects and prints a report.
Exit code 0 when every step passed, 1 naming the failed step, 2 for bad arguments or missing credentials.
Endpoints: ``OPTIONDESK_TT_API_URL`` / ``OPTIONDESK_TT_STREAMER_URL`` for tastytrade; ``--host/--port/
--client-id`` (or ``--preset``) for IBKR. Credentials: the keyring, or ``OPTIONDESK_TT_PROVIDER_SECRET`` /
``OPTIONDESK_TT_REFRESH_TOKEN``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("check-broker", help="test a broker connection end to end (no order is placed)")
    p.add_argument("broker", choices=["tastytrade", "ibkr"])
    p.add_argument("--sandbox", action="store_true",
                   help="tastytrade: the sandbox (cert) environment; ibkr: the paper port preset of --preset")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--host", default=None, help="ibkr: TWS/Gateway host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="ibkr: socket port (TWS 7497 paper / 7496 live, "
                                                          "Gateway 4002 paper / 4001 live)")
    p.add_argument("--preset", default=None, choices=["tws-paper", "tws-live", "gateway-paper", "gateway-live"],
                   help="ibkr: port preset")
    p.add_argument("--client-id", type=int, default=None, help="ibkr: API client id (default 17)")
    p.add_argument("--account", default=None, help="account to select (default: the first)")
    p.add_argument("--symbol", default="SPY", help="underlying for the chain/quotes/preview steps (default SPY)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds allowed per step (default 20)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    from engine.brokers.config import IBKR_PORT_PRESETS, BrokersConfig, IbkrConfig, TastytradeConfig

    cfg = BrokersConfig()
    if args.broker == "tastytrade":
        cfg.tastytrade = TastytradeConfig(**{**cfg.tastytrade.model_dump(), "sandbox": args.sandbox or
                                             cfg.tastytrade.sandbox, "account": args.account})
    else:
        data = cfg.ibkr.model_dump()
        preset = args.preset or ("tws-paper" if args.sandbox else None)
        if preset:
            data["port"] = IBKR_PORT_PRESETS[preset]
        if args.port is not None:
            data["port"] = args.port
        if args.host is not None:
            data["host"] = args.host
        if args.client_id is not None:
            data["client_id"] = args.client_id
        if args.account:
            data["account"] = args.account
        cfg.ibkr = IbkrConfig(**data)
    return cfg


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from engine.brokers.check import check_broker
    from engine.credentials import (
        CredentialsMissing,
        CredentialStore,
        install_log_redaction,
        quiet_sdk_loggers,
    )

    install_log_redaction()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    quiet_sdk_loggers()
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"check-broker: {exc}", file=sys.stderr)
        return 2
    store = CredentialStore()
    if args.broker == "tastytrade":
        try:
            store.tastytrade(args.sandbox)
        except CredentialsMissing as exc:
            print(f"check-broker: {exc}", file=sys.stderr)
            return 2
    report = asyncio.run(check_broker(args.broker, config, credentials=store, symbol=args.symbol.upper(),
                                      step_timeout_s=args.timeout))
    if args.json:
        print(report.to_json())
    else:
        print(report.format_text())
        if not store.status().backend_available and args.broker == "tastytrade":
            print(f"note: {store.status().detail}", file=sys.stderr)
    return 0 if report.ok else 1
