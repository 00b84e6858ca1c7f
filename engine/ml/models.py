"""The classifiers: a logistic-regression baseline and XGBoost (native API), each calibrated.

Calibration is fitted on the last quarter of the training window (purged against the part the model was
fitted on), never on test data. Two maps compete there: Platt (a sigmoid: two parameters, cannot bend)
and isotonic regression (any monotone step function: fixes calibration of any shape, but overfits a small
slice). Which one a model keeps is decided by log loss on the later half of that slice after fitting both
on the earlier half (:func:`choose_calibration`), then the winner is refitted on the whole slice. Hyper-parameters are fixed (:data:`XGB_PARAMS`): nothing is tuned on a
test fold. xgboost is imported only when an XGBoost model is fitted or loaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODEL_KINDS = ("logistic", "xgboost", "lstm")
#: the models every evaluation reports beside the chosen one (the LSTM is evaluated when asked for: it is
#: the slowest to fit and needs torch)
BASELINE_KINDS = ("logistic", "xgboost")
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
class Isotonic:
    """Monotone non-decreasing step map from score to probability (pool-adjacent-violators), interpolated
    linearly between block centres and flat beyond the ends; stored as its knots (JSON, no pickle)."""

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def fit(self, score: np.ndarray, y: np.ndarray) -> Isotonic:
        s = np.asarray(score, float)
        t = np.asarray(y, float)
        if len(s) == 0:
            return self
        order = np.argsort(s, kind="stable")
        s, t = s[order], t[order]
        # merge tied scores first: PAV on the distinct score values
        ux, inv = np.unique(s, return_inverse=True)
        w = np.bincount(inv).astype(float)
        v = np.bincount(inv, weights=t) / w
        lvl, wt, lo, hi = [], [], [], []
        for i in range(len(ux)):
            lvl.append(v[i])
            wt.append(w[i])
            lo.append(ux[i])
            hi.append(ux[i])
            while len(lvl) > 1 and lvl[-2] >= lvl[-1]:  # a violation: pool the last two blocks
                w2 = wt[-2] + wt[-1]
                lvl[-2] = (lvl[-2] * wt[-2] + lvl[-1] * wt[-1]) / w2
                wt[-2] = w2
                hi[-2] = hi[-1]
                del lvl[-1], wt[-1], lo[-1], hi[-1]
        # knots at each block's ends keep the steps; probabilities kept off 0 and 1 so log loss stays finite
        xs, ys = [], []
        for a, b, p in zip(lo, hi, lvl, strict=True):
            p = float(np.clip(p, 1e-3, 1 - 1e-3))
            xs.extend([float(a), float(b)] if b > a else [float(a)])
            ys.extend([p, p] if b > a else [p])
        self.x, self.y = xs, ys
        return self

    def __call__(self, score: np.ndarray) -> np.ndarray:
        s = np.asarray(score, float)
        if not self.x:
            return np.full(s.shape, 0.5)
        return np.interp(s, self.x, self.y)


CALIBRATIONS = ("platt", "isotonic")


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log likelihood, probabilities clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    y = np.asarray(y, float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_calibration(score: np.ndarray, y: np.ndarray) -> tuple[str, dict[str, dict[str, float]]]:
    """Fit Platt and isotonic on the earlier half of the calibration slice, score both on the later half by
    log loss (Brier breaks a tie), and return the winner with both scores. Platt wins when the slice is too
    small or one-sided to judge: with two parameters it cannot overfit the way a step function can."""
    score = np.asarray(score, float)
    y = np.asarray(y)
    n = len(y)
    half = n // 2
    if half < 10 or n - half < 10 or len(np.unique(y[:half])) < 2 or len(np.unique(y[half:])) < 2:
        return "platt", {}
    out: dict[str, dict[str, float]] = {}
    for name, cal in (("platt", Platt()), ("isotonic", Isotonic())):
        cal.fit(score[:half], y[:half])
        p = cal(score[half:])
        out[name] = {"log_loss": log_loss(y[half:], p), "brier": float(np.mean((p - y[half:]) ** 2))}
    a, b = out["platt"], out["isotonic"]
    better = (b["log_loss"], b["brier"]) < (a["log_loss"], a["brier"])
    return ("isotonic" if better else "platt"), out


@dataclass
class Classifier:
    """A fitted model: ``kind``, its state, and its calibration map (``calibration`` names which one
    ``predict_proba`` applies). ``score`` is the uncalibrated margin."""

    kind: str
    seed: int = 7
    params: dict[str, Any] = field(default_factory=dict)
    platt: Platt = field(default_factory=Platt)
    isotonic: Isotonic | None = None
    calibration: str = "platt"
    calibration_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    _mean: np.ndarray | None = None
    _scale: np.ndarray | None = None
    _coef: np.ndarray | None = None
    _intercept: float = 0.0
    _booster: Any = None
    _net: Any = None  # engine.ml.lstm.LSTMNet

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
        elif self.kind == "lstm":
            from engine.ml.lstm import LSTM_PARAMS, LSTMNet

            self._net = LSTMNet(seed=self.seed).fit(X, y)
            self.params = dict(LSTM_PARAMS, seed=self.seed, epochs=self._net.epochs, best_epoch=self._net.best_epoch)
        else:
            raise ValueError(f"unknown model kind {self.kind!r} (known: {', '.join(MODEL_KINDS)})")
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "logistic":
            if self._coef is None:
                raise ValueError("model is not fitted")
            return ((X - self._mean) / self._scale) @ self._coef + self._intercept
        if self.kind == "lstm":
            if self._net is None:
                raise ValueError("model is not fitted")
            return self._net.margin(X)
        if self._booster is None:
            raise ValueError("model is not fitted")
        xgb = require_xgboost()
        return np.asarray(self._booster.predict(xgb.DMatrix(X), output_margin=True), float)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability that the candidate trade makes money."""
        return self.calibrate(self.score(X))

    def calibrate(self, score: np.ndarray) -> np.ndarray:
        """The chosen calibration map applied to margins."""
        if self.calibration == "isotonic" and self.isotonic is not None:
            return self.isotonic(score)
        return self.platt(score)

    def contributions(self, x: np.ndarray, names: list[str]) -> dict[str, float]:
        """Each feature's additive share of one row's margin (XGBoost ``pred_contribs``; logistic: coefficient ×
        standardised value), largest magnitude first: why the model rates this candidate as it does."""
        if self.kind == "lstm":
            return self._occlusion(x, names)
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

    def _occlusion(self, seq: np.ndarray, names: list[str]) -> dict[str, float]:
        """LSTM: each feature's share as the margin lost when its whole sequence is set to the training mean
        (the network has no additive decomposition; this says which inputs moved today's margin)."""
        s = np.asarray(seq, float)[None, ...]
        base = float(self.score(s)[0])
        out = {}
        for j, n in enumerate(names):
            t = s.copy()
            t[..., j] = np.nan  # NaN reads as the training mean
            out[n] = base - float(self.score(t)[0])
        return dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))

    def importance(self, names: list[str]) -> dict[str, float]:
        """|standardised coefficient| (logistic) or total gain (XGBoost) per feature, largest first."""
        if self.kind == "logistic" and self._coef is not None:
            vals = {n: float(abs(c)) for n, c in zip(names, self._coef, strict=True)}
        elif self.kind == "lstm" and self._net is not None:
            w = np.abs(self._net.weights["w_ih"]).sum(axis=0)  # input-weight mass per feature
            vals = {n: float(v) for n, v in zip(names, w, strict=True)}
        elif self._booster is not None:
            gain = self._booster.get_score(importance_type="total_gain")
            vals = {n: float(gain.get(f"f{i}", 0.0)) for i, n in enumerate(names)}
        else:
            vals = {}
        return dict(sorted(vals.items(), key=lambda kv: -kv[1]))

    # ---- persistence (JSON only: no pickles in the data folder) -------------------------------------
    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": self.kind, "seed": self.seed, "params": self.params,
                                 "platt": {"a": self.platt.a, "b": self.platt.b},
                                 "calibration": self.calibration,
                                 "calibration_scores": self.calibration_scores}
        if self.isotonic is not None:
            state["isotonic"] = {"x": self.isotonic.x, "y": self.isotonic.y}
        if self.kind == "logistic":
            if self._mean is None or self._scale is None or self._coef is None:
                raise ValueError("model is not fitted")
            state |= {"mean": self._mean.tolist(), "scale": self._scale.tolist(), "coef": self._coef.tolist(),
                      "intercept": self._intercept}
        elif self.kind == "lstm":
            state["lstm"] = self._net.to_state()
        else:
            state["booster"] = json.loads(bytes(self._booster.save_raw(raw_format="json")).decode())
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Classifier:
        m = cls(kind=state["kind"], seed=int(state.get("seed", 7)), params=dict(state.get("params", {})),
                platt=Platt(float(state["platt"]["a"]), float(state["platt"]["b"])),
                calibration=str(state.get("calibration", "platt")),
                calibration_scores=dict(state.get("calibration_scores", {})))
        if "isotonic" in state:
            m.isotonic = Isotonic(list(map(float, state["isotonic"]["x"])), list(map(float, state["isotonic"]["y"])))
        if m.kind == "logistic":
            m._mean = np.asarray(state["mean"], float)
            m._scale = np.asarray(state["scale"], float)
            m._coef = np.asarray(state["coef"], float)
            m._intercept = float(state["intercept"])
        elif m.kind == "lstm":
            from engine.ml.lstm import LSTMNet

            m._net = LSTMNet.from_state(state["lstm"], seed=m.seed)
        elif m.kind == "xgboost":
            xgb = require_xgboost()
            booster = xgb.Booster()
            booster.load_model(bytearray(json.dumps(state["booster"]).encode()))
            m._booster = booster
        else:
            raise ValueError(f"unknown model kind {m.kind!r}")
        return m


def fit_calibrated(kind: str, X: np.ndarray, y: np.ndarray, start: np.ndarray, end: np.ndarray, *,
                   seed: int = 7, calibration: str = "auto") -> Classifier:
    """Fit on the first 75 % of the (time-ordered) training rows, calibrate on the last 25 %; rows of the
    first part whose labels end inside the calibration slice are purged from the fit. ``calibration``:
    ``"auto"`` (Platt or isotonic by :func:`choose_calibration`), ``"platt"`` or ``"isotonic"``."""
    if calibration not in ("auto", *CALIBRATIONS):
        raise ValueError(f"unknown calibration {calibration!r} (known: auto, {', '.join(CALIBRATIONS)})")
    n = len(y)
    cut = int(n * (1 - CALIBRATION_FRAC))
    if cut < 20 or n - cut < 10:
        raise ValueError(f"{n} training samples are too few to fit and calibrate")
    fit_rows = np.nonzero(end[:cut] < start[cut])[0]
    if len(np.unique(y[fit_rows])) < 2:
        raise ValueError("the training window holds one outcome only; nothing to learn")
    model = Classifier(kind=kind, seed=seed).fit(X[fit_rows], y[fit_rows])
    cal_score = model.score(X[cut:])
    model.platt.fit(cal_score, y[cut:])
    model.isotonic = Isotonic().fit(cal_score, y[cut:])
    if calibration == "auto":
        model.calibration, model.calibration_scores = choose_calibration(cal_score, y[cut:])
    else:
        model.calibration = calibration
    return model


def finite_rows(X: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(X), axis=1)


def safe_float(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
