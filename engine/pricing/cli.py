"""``optiondesk price``, ``optiondesk iv`` and ``optiondesk train-neural``. Imports stay light here.

Examples::

    optiondesk price --right p --spot 100 --strike 95 --days 30 --rate 0.045 --div 0.01 --vol 0.22 --american
    optiondesk iv --right c --spot 100 --strike 105 --days 30 --rate 0.045 --price 1.35
    optiondesk train-neural --param-sets 3000 --epochs 300     # saves under the user data dir
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _market(p: argparse.ArgumentParser) -> None:
    p.add_argument("--right", required=True, help="c or p")
    p.add_argument("--spot", type=float, required=True, help="underlying price")
    p.add_argument("--strike", type=float, required=True, help="strike")
    p.add_argument("--days", type=float, required=True, help="calendar days to expiry (ACT/365)")
    p.add_argument("--rate", type=float, default=0.0, help="continuous risk-free rate, e.g. 0.045")
    p.add_argument("--div", type=float, default=0.0, help="continuous dividend yield, e.g. 0.01")
    p.add_argument("--american", action="store_true", help="American exercise (ALO)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _cmd_price(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.pricing import american, bsm

    T = args.days / 365.0
    g, reason = bsm.greeks(args.right, args.spot, args.strike, T, args.rate, args.div, args.vol, return_reason=True)
    out: dict[str, Any] = {name: float(getattr(g, name)) for name in
                           ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga", "charm")}
    out["reason"] = int(reason)
    if args.american:
        res = american.evaluate(args.right, args.spot, args.strike, T, args.rate, args.div, args.vol)
        out.update(american_price=float(res.price), american_delta=float(res.delta),
                   american_gamma=float(res.gamma), exercise_boundary=float(res.boundary))
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>18}  {v:.6g}" if isinstance(v, float) and np.isfinite(v) else f"{k:>18}  {v}")
    return 0 if out["reason"] == 0 else 2


def _cmd_iv(args: argparse.Namespace) -> int:
    from engine.pricing import american, bsm
    from engine.pricing.inputs import Reason

    T = args.days / 365.0
    model = american if args.american else bsm
    vol, reason = model.implied_vol(args.price, args.right, args.spot, args.strike, T, args.rate, args.div,
                                    return_reason=True)
    out = {"implied_vol": float(vol), "reason": Reason(int(reason)).name}
    print(json.dumps(out) if args.json else f"implied vol {float(vol):.6f} ({out['reason']})")
    return 0 if int(reason) == 0 else 2


def _cmd_train(args: argparse.Namespace) -> int:
    from engine.pricing import neural

    if not neural.available():
        print("torch is not installed: install the 'ml' extra to train the neural pricer")
        return 1
    pricer, report = neural.train(args.param_sets, epochs=args.epochs, seed=args.seed)
    path = pricer.save(args.out)
    print(json.dumps({"saved": str(path), **report.__dict__}))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("price", help="BSM (and American) value and Greeks of one option")
    _market(p)
    p.add_argument("--vol", type=float, required=True, help="volatility, e.g. 0.22")
    p.set_defaults(func=_cmd_price)
    p = subparsers.add_parser("iv", help="implied vol of one option price")
    _market(p)
    p.add_argument("--price", type=float, required=True, help="option price")
    p.set_defaults(func=_cmd_iv)
    p = subparsers.add_parser("train-neural", help="train the neural Heston surrogate and save it")
    p.add_argument("--param-sets", type=int, default=3000, help="random Heston parameter sets (default 3000)")
    p.add_argument("--epochs", type=int, default=300, help="training epochs (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="file to write (default: <user data dir>/optiondesk/models/heston_surrogate.pt)")
    p.set_defaults(func=_cmd_train)
