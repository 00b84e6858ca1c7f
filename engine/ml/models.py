"""The classifiers: a logistic-regression baseline and XGBoost (native API), each Platt-calibrated.

Calibration is fitted on the last quarter of the training window (purged against the part the model was
fitted on), never on test data. Hyper-parameters are fixed (:data:`XGB_PARAMS`): nothing is tuned on a
test fold. xgboost is imported only when an XGBoost model is fitted or loaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODEL_KINDS = ("logistic", "xgboost")
XGB_PARAMS: dict[str, Any] = {"objective": "binary:logistic", "eta": 0.05, "max_depth": 3, "subsample": 0.8,
                              "colsample_bytree": 0.8, "min_child_weight": 5, "lambda": 1.0,
                              "tree_method": "hist", "nthread": 2, "eval_metric": "logloss"}
XGB_ROUNDS = 150
LOGISTIC_C = 0.5
CALIBRATION_FRAC = 0.25


class MLDependencyError(RuntimeError):
    """An optional ML dependency is missing; the message says which extra installs it."""


def require_xgboost() -> Any:
    """The xgboost module, or MLDependencyError naming the extra that installs it."""
    try:
        import xgboost
    except ImportError as exc:
        raise MLDependencyError("XGBoost models need the 'ml' extra: pip install 'optiondesk[ml]' "
                                f"({exc})") from None
    return xgboost


def logistic_regression(**kw: Any) -> Any:
    """A scikit-learn ``LogisticRegression``, or MLDependencyError naming the extra that installs it (the
    lite desktop build and a plain ``pip install`` leave scikit-learn out with the rest of the ML stack)."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise MLDependencyError("ML models need the 'ml' extra: pip install 'optiondesk[ml]' "
                                f"({exc})") from None
    return LogisticRegression(**kw)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


@dataclass
class Platt:
    """p = σ(a·score + b), fitted by regularised logistic regression on a held-out slice."""

    a: float = 1.0
    b: float = 0.0

    def fit(self, score: np.ndarray, y: np.ndarray) -> Platt:
        if len(np.unique(y)) < 2:  # one class only: keep the identity map, the base rate comes from the model
            return self
        lr = logistic_regression(C=1.0).fit(np.asarray(score, float).reshape(-1, 1), y)
        self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    def __call__(self, score: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a * np.asarray(score, float) + self.b)


@dataclass
class Classifier:
    """A fitted model: ``kind``, its state, and its Platt map. ``score`` is the uncalibrated margin."""

    kind: str
    seed: int = 7
    params: dict[str, Any] = field(default_factory=dict)
    platt: Platt = field(default_factory=Platt)
    _mean: np.ndarray | None = None
    _scale: np.ndarray | None = None
    _coef: np.ndarray | None = None
    _intercept: float = 0.0
    _booster: Any = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> Classifier:
        if self.kind == "logistic":
            self._mean = X.mean(axis=0)
            sd = X.std(axis=0)
            self._scale = np.where(sd > 1e-12, sd, 1.0)
            lr = logistic_regression(C=LOGISTIC_C, max_iter=2000).fit((X - self._mean) / self._scale, y)
            self._coef = lr.coef_[0].copy()
            self._intercept = float(lr.intercept_[0])
            self.params = {"C": LOGISTIC_C}
        elif self.kind == "xgboost":
            xgb = require_xgboost()
            self.params = dict(XGB_PARAMS, seed=self.seed)
            self._booster = xgb.train(self.params, xgb.DMatrix(X, label=y), num_boost_round=XGB_ROUNDS)
            self.params["rounds"] = XGB_ROUNDS
        else:
            raise ValueError(f"unknown model kind {self.kind!r} (known: {', '.join(MODEL_KINDS)})")
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "logistic":
            if self._coef is None:
                raise ValueError("model is not fitted")
            return ((X - self._mean) / self._scale) @ self._coef + self._intercept
        if self._booster is None:
            raise ValueError("model is not fitted")
        xgb = require_xgboost()
        return np.asarray(self._booster.predict(xgb.DMatrix(X), output_margin=True), float)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability that the candidate trade makes money."""
        return self.platt(self.score(X))

    def contributions(self, x: np.ndarray, names: list[str]) -> dict[str, float]:
        """Each feature's additive share of one row's margin (XGBoost ``pred_contribs``; logistic: coefficient ×
        standardised value), largest magnitude first: why the model rates this candidate as it does."""
        row = np.asarray(x, float).reshape(1, -1)
        if self.kind == "logistic":
            if self._coef is None:
                raise ValueError("model is not fitted")
            vals = ((row[0] - self._mean) / self._scale) * self._coef
        else:
            if self._booster is None:
                raise ValueError("model is not fitted")
            xgb = require_xgboost()
            vals = np.asarray(self._booster.predict(xgb.DMatrix(row), pred_contribs=True))[0, :-1]
        out = {n: float(v) for n, v in zip(names, vals, strict=True)}
        return dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))

    def importance(self, names: list[str]) -> dict[str, float]:
        """|standardised coefficient| (logistic) or total gain (XGBoost) per feature, largest first."""
        if self.kind == "logistic" and self._coef is not None:
            vals = {n: float(abs(c)) for n, c in zip(names, self._coef, strict=True)}
        elif self._booster is not None:
            gain = self._booster.get_score(importance_type="total_gain")
            vals = {n: float(gain.get(f"f{i}", 0.0)) for i, n in enumerate(names)}
        else:
            vals = {}
        return dict(sorted(vals.items(), key=lambda kv: -kv[1]))

    # ---- persistence (JSON only: no pickles in the data folder) -------------------------------------
    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": self.kind, "seed": self.seed, "params": self.params,
                                 "platt": {"a": self.platt.a, "b": self.platt.b}}
        if self.kind == "logistic":
            state |= {"mean": self._mean.tolist(), "scale": self._scale.tolist(), "coef": self._coef.tolist(),
                      "intercept": self._intercept}
        else:
            state["booster"] = json.loads(bytes(self._booster.save_raw(raw_format="json")).decode())
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Classifier:
        m = cls(kind=state["kind"], seed=int(state.get("seed", 7)), params=dict(state.get("params", {})),
                platt=Platt(float(state["platt"]["a"]), float(state["platt"]["b"])))
        if m.kind == "logistic":
            m._mean = np.asarray(state["mean"], float)
            m._scale = np.asarray(state["scale"], float)
            m._coef = np.asarray(state["coef"], float)
            m._intercept = float(state["intercept"])
        elif m.kind == "xgboost":
            xgb = require_xgboost()
            booster = xgb.Booster()
            booster.load_model(bytearray(json.dumps(state["booster"]).encode()))
            m._booster = booster
        else:
            raise ValueError(f"unknown model kind {m.kind!r}")
        return m


def fit_calibrated(kind: str, X: np.ndarray, y: np.ndarray, start: np.ndarray, end: np.ndarray, *,
                   seed: int = 7) -> Classifier:
    """Fit on the first 75 % of the (time-ordered) training rows, Platt-calibrate on the last 25 %; rows of
    the first part whose labels end inside the calibration slice are purged from the fit."""
    n = len(y)
    cut = int(n * (1 - CALIBRATION_FRAC))
    if cut < 20 or n - cut < 10:
        raise ValueError(f"{n} training samples are too few to fit and calibrate")
    fit_rows = np.nonzero(end[:cut] < start[cut])[0]
    if len(np.unique(y[fit_rows])) < 2:
        raise ValueError("the training window holds one outcome only; nothing to learn")
    model = Classifier(kind=kind, seed=seed).fit(X[fit_rows], y[fit_rows])
    model.platt.fit(model.score(X[cut:]), y[cut:])
    return model


def finite_rows(X: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(X), axis=1)


def safe_float(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
