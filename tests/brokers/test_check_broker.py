"""``optiondesk check-broker`` as a subprocess against both loopback servers, and its failure reporting."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from engine.brokers.check import STEPS, check_broker
from engine.brokers.config import BrokersConfig, IbkrConfig, TastytradeConfig
from engine.credentials import CredentialStore
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.brokers.fakes.tws_server import FakeTws

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIONDESK_")}
    full_env.update(env)
    full_env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"  # a headless box without a keyring
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "engine.cli", "check-broker", *args,
                                                "--timeout", "45",
                                                cwd=ROOT, env=full_env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


async def test_check_broker_tastytrade_passes_against_the_loopback_server():
    async with FakeTastytrade() as fake:
        code, out, err = await run_cli("tastytrade", "--json", env={
            "OPTIONDESK_TT_API_URL": fake.api_url, "OPTIONDESK_TT_STREAMER_URL": fake.streamer_url,
            "OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET, "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
        assert code == 0, out + err
        report = json.loads(out)
        assert report["ok"] and [s["name"] for s in report["steps"]] == list(STEPS)
        assert report["facts"]["quotes"] >= 5 and report["facts"]["accounts"] == ["****0042"]
        assert report["facts"]["preview"]["limit"].startswith("-")  # a put credit spread
        # a dry run, never an order
        posts = [p for m, p, b in fake.requests if m == "POST" and p.startswith("/accounts")]
        assert posts == [f"/accounts/{fake.account}/orders/dry-run"]
        for secret in (PROVIDER_SECRET, REFRESH_TOKEN, fake.account, fake.access_token):
            assert secret not in out and secret not in err


async def test_check_broker_ibkr_passes_against_the_loopback_tws():
    async with FakeTws() as tws:
        code, out, err = await run_cli("ibkr", "--host", "127.0.0.1", "--port", str(tws.port), "--client-id", "5",
                                       env={})
        assert code == 0, out + err
        assert "RESULT: OK" in out and "whatIf" not in err
        assert "****4567" in out and tws.account not in out and tws.account not in err
        assert not tws.orders  # whatIf only
        assert [f[2] for f in tws.requests if f[0] == "71"] == ["5"]  # startApi with our client id


async def test_check_broker_names_the_failed_step_and_exits_nonzero():
    async with FakeTastytrade() as fake:
        code, out, _err = await run_cli("tastytrade", env={
            "OPTIONDESK_TT_API_URL": fake.api_url, "OPTIONDESK_TT_STREAMER_URL": fake.streamer_url,
            "OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET, "OPTIONDESK_TT_REFRESH_TOKEN": "revoked"})
        assert code == 1
        assert "FAILED at step 'connect'" in out and "invalid_grant" in out


async def test_check_broker_without_credentials_exits_2_with_instructions():
    code, _out, err = await run_cli("tastytrade", env={})
    assert code == 2 and "OPTIONDESK_TT_REFRESH_TOKEN" in err


async def test_in_process_check_reports_the_quotes_step_when_the_chain_is_unknown():
    async with FakeTws() as tws:
        cfg = BrokersConfig(ibkr=IbkrConfig(port=tws.port, call_timeout_s=2, connect_timeout_s=2))
        report = await check_broker("ibkr", cfg, symbol="QQQ", step_timeout_s=3)
        assert not report.ok and report.failed_step == "chain"
        assert "QQQ" in report.steps[-1].detail
        assert [s.name for s in report.steps][:4] == ["connect", "accounts", "balances", "positions"]


async def test_in_process_check_unreachable_ibkr_fails_at_connect():
    cfg = BrokersConfig(ibkr=IbkrConfig(port=1, call_timeout_s=1, connect_timeout_s=1))
    report = await check_broker("ibkr", cfg, step_timeout_s=3)
    assert report.failed_step == "connect" and len(report.steps) == 1


def test_unknown_broker_is_a_value_error():
    with pytest.raises(ValueError, match="unknown broker"):
        asyncio.run(check_broker("etrade"))


def test_tastytrade_config_env_override_beats_settings():
    cfg = TastytradeConfig(api_url="http://settings", sandbox=True)
    assert cfg.endpoints({"OPTIONDESK_TT_API_URL": "http://env/"}) == ("http://env", "wss://streamer.cert.tastyworks.com")
    assert cfg.endpoints({}) == ("http://settings", "wss://streamer.cert.tastyworks.com")
    assert TastytradeConfig().endpoints({})[0] == "https://api.tastyworks.com"


def test_credentials_env_is_read_not_written():
    store = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": "s3cret-value",
                                               "OPTIONDESK_TT_REFRESH_TOKEN": "r3fresh-value"})
    creds = store.tastytrade()
    assert creds.provider_secret == "s3cret-value" and "environment" in creds.source
    assert "s3cret" not in repr(creds)
