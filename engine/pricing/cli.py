"""``optiondesk price``, ``optiondesk iv`` and ``optiondesk train-neural``. Imports stay light here.

Examples::

    optiondesk price --right p --spot 100 --strike 95 --days 30 --rate 0.045 --div 0.01 --vol 0.22 --american
    optiondesk iv --right c --spot 100 --strike 105 --days 30 --rate 0.045 --price 1.35
    optiondesk train-neural --param-sets 2000 --epochs 200     # saves under the data dir
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

#: the largest volatility accepted: 500 % a year. ``--vol 20`` is far more likely a percentage than 2,000 %.
MAX_VOL = 5.0

_REASON_TEXT = {
    "NAN_INPUT": "an input is not a number",
    "NONPOSITIVE_SPOT": "--spot must be positive",
    "NONPOSITIVE_STRIKE": "--strike must be positive",
    "NONPOSITIVE_TIME": "--days must be positive (the option has expired: no time value, no vol)",
    "NONPOSITIVE_VOL": "--vol must be positive",
    "NONPOSITIVE_PRICE": "--price must be positive",
    "BELOW_INTRINSIC": "--price is below the option's intrinsic value",
    "AT_INTRINSIC": "--price equals intrinsic value: no time value, so no implied vol",
    "ABOVE_MAXIMUM": "--price is at or above the no-arbitrage maximum",
    "NO_CONVERGENCE": "the solver did not converge",
    "PRICE_UNDERFLOW": "the price is too small to invert accurately",
}


def _market(p: argparse.ArgumentParser) -> None:
    p.add_argument("--right", required=True, help="c or p (call or put)")
    p.add_argument("--spot", type=float, required=True, help="underlying price")
    p.add_argument("--strike", type=float, required=True, help="strike")
    p.add_argument("--days", type=float, required=True, help="calendar days to expiry (ACT/365)")
    p.add_argument("--rate", type=float, default=0.0, help="continuous risk-free rate, e.g. 0.045")
    p.add_argument("--div", type=float, default=0.0, help="continuous dividend yield, e.g. 0.01")
    p.add_argument("--american", action="store_true", help="American exercise (ALO)")
    p.add_argument("--json", action="store_true", help="print JSON (a missing number is null)")


def _checked_market(args: argparse.Namespace) -> str:
    """Refuse input no pricer can answer meaningfully, naming the flag; returns the right as 'c' or 'p'.
    Values that are merely outside the model's domain (``--days 0``) are answered with a named reason."""
    from engine.cli_errors import CliError

    right = str(args.right).strip().lower()
    if right not in ("c", "p", "call", "put"):
        raise CliError(f"--right must be c or p (call or put), got {args.right!r}")
    for flag in ("spot", "strike", "days", "rate", "div"):
        if not math.isfinite(getattr(args, flag)):
            raise CliError(f"--{flag} must be a finite number, got {getattr(args, flag)!r}")
    return right[0]


def parse_vol(text: str) -> float:
    """``0.22`` or ``22%``. Above :data:`MAX_VOL` is refused with a hint: ``--vol 20`` means 20 % far more
    often than 2,000 %, and silently pricing 2,000 % (or ``1e308``, which prints 0.0) helps nobody."""
    from engine.cli_errors import CliError

    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise CliError(f"--vol must be a number like 0.22 or 22%, got {text!r}") from None
    if not math.isfinite(value):
        raise CliError(f"--vol must be a finite number like 0.22 or 22%, got {text!r}")
    vol = value / 100.0 if percent else value
    if vol > MAX_VOL:
        hint = f"; did you mean {value:g}%?" if not percent and value <= 100 * MAX_VOL else ""
        raise CliError(f"--vol {raw} is {vol:.0%} a year, above the {MAX_VOL:.0%} limit{hint} "
                       "(write 0.20 or 20%)")
    return vol


def _finish(out: dict[str, Any], reason_name: str, as_json: bool, command: str) -> int:
    """Print the result; a NaN answer is ``null`` in JSON, ``n/a`` in text, and its reason goes to stderr."""
    from engine.cli_errors import dumps_json

    if as_json:
        print(dumps_json(out))
    else:
        for k, v in out.items():
            if isinstance(v, float):
                print(f"{k:>18}  {v:.6g}" if math.isfinite(v) else f"{k:>18}  n/a")
            else:
                print(f"{k:>18}  {v}")
    if reason_name == "OK":
        return 0
    detail = _REASON_TEXT.get(reason_name, "")
    print(f"optiondesk {command}: no value: {reason_name}" + (f" ({detail})" if detail else ""), file=sys.stderr)
    return 2


def _cmd_price(args: argparse.Namespace) -> int:
    from engine.pricing import american, bsm
    from engine.pricing.inputs import Reason

    right = _checked_market(args)
    vol = parse_vol(args.vol)
    T = args.days / 365.0
    g, reason = bsm.greeks(right, args.spot, args.strike, T, args.rate, args.div, vol, return_reason=True)
    out: dict[str, Any] = {name: float(getattr(g, name)) for name in
                           ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga", "charm")}
    reason_name = Reason(int(reason)).name
    out["reason"] = reason_name
    if args.american:
        res = american.evaluate(right, args.spot, args.strike, T, args.rate, args.div, vol)
        out.update(american_price=float(res.price), american_delta=float(res.delta),
                   american_gamma=float(res.gamma), exercise_boundary=float(res.boundary))
    return _finish(out, reason_name, args.json, "price")


def _cmd_iv(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError
    from engine.pricing import american, bsm
    from engine.pricing.inputs import Reason

    right = _checked_market(args)
    if not math.isfinite(args.price):
        raise CliError(f"--price must be a finite number, got {args.price!r}")
    T = args.days / 365.0
    model = american if args.american else bsm
    vol, reason = model.implied_vol(args.price, right, args.spot, args.strike, T, args.rate, args.div,
                                    return_reason=True)
    reason_name = Reason(int(reason)).name
    out = {"implied_vol": float(vol), "reason": reason_name}
    if args.json:
        return _finish(out, reason_name, True, "iv")
    text = f"{float(vol):.6f}" if math.isfinite(float(vol)) else "n/a"
    print(f"implied vol {text} ({reason_name})")
    return _finish({}, reason_name, False, "iv")


def _cmd_train(args: argparse.Namespace) -> int:
    from engine.pricing import neural

    if not neural.available():
        print("torch is not installed: install the 'ml' extra to train the neural pricer")
        return 1
    pricer, report = neural.train(args.param_sets, epochs=args.epochs, seed=args.seed)
    path = pricer.save(args.out)
    from engine.cli_errors import dumps_json

    print(dumps_json({"saved": str(path), **report.__dict__}))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("price", help="BSM (and American) value and Greeks of one option")
    _market(p)
    p.add_argument("--vol", required=True, help="volatility: 0.22 or 22%% (above 5, i.e. 500%%, is refused)")
    p.set_defaults(func=_cmd_price)
    p = subparsers.add_parser("iv", help="implied vol of one option price")
    _market(p)
    p.add_argument("--price", type=float, required=True, help="option price")
    p.set_defaults(func=_cmd_iv)
    p = subparsers.add_parser("train-neural", help="train the neural Heston surrogate and save it")
    p.add_argument("--param-sets", type=int, default=2000, help="random Heston parameter sets (default 2000)")
    p.add_argument("--epochs", type=int, default=200, help="training epochs (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="file to write (default: <data dir>/models/heston_surrogate.pt; OPTIONDESK_HOME moves it)")
    p.set_defaults(func=_cmd_train)
