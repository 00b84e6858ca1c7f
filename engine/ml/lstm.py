"""A small LSTM classifier over sequences of the daily features (torch, CPU, seeded, bounded).

Why a sequence model at all: the tabular models see one day's row; a trade's outcome may depend on how the
state got there (vol rising for a week vs one spike). The LSTM reads the :data:`SEQ_LEN` sessions ending on
the decision day — nothing after it — and is validated by the same purged walk-forward as XGBoost and the
logistic baseline, with the same verdict rules. It is deliberately small (one layer, 16 units, ~3.5 k
weights for ~1,000 overlapping samples) and stops early on a held-out, gap-separated tail of its training
rows; every choice is fixed in code, so no test fold can tune it.

Inference is numpy-only (the weights are stored as JSON lists), so scoring a live candidate needs no torch;
training imports torch lazily and, without the ``ml`` extra, fails with a message naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEQ_LEN = 20
HIDDEN = 16
MAX_EPOCHS = 80
PATIENCE = 10
LEARNING_RATE = 0.01
WEIGHT_DECAY = 1e-3
#: tail of the training rows held out for early stopping, and the gap before it (≈ a label's holding
#: period: rows just before the tail share its outcomes)
VALID_FRAC = 0.2
VALID_GAP = 25
LSTM_PARAMS: dict[str, Any] = {"seq_len": SEQ_LEN, "hidden": HIDDEN, "max_epochs": MAX_EPOCHS,
                               "patience": PATIENCE, "lr": LEARNING_RATE, "weight_decay": WEIGHT_DECAY,
                               "valid_frac": VALID_FRAC, "valid_gap": VALID_GAP}


def require_torch() -> Any:
    """The torch module, or MLDependencyError naming the extra that installs it."""
    from engine.ml.models import MLDependencyError

    try:
        import torch
    except ImportError as exc:
        raise MLDependencyError(f"LSTM models need the 'ml' extra: pip install 'optiondesk[ml]' ({exc})") from None
    return torch


def sequences(frame_X: np.ndarray, rows: np.ndarray, length: int = SEQ_LEN) -> np.ndarray:
    """(samples, length, features): for each decision row, the ``length`` day rows ending on it. Days before
    the history's start are NaN (the model reads NaN as the training mean)."""
    frame_X = np.asarray(frame_X, float)
    rows = np.asarray(rows, np.int64)
    n_days, n_feat = frame_X.shape
    padded = np.vstack([np.full((length - 1, n_feat), np.nan), frame_X])
    idx = rows[:, None] + np.arange(length)[None, :]  # padded index of day (row - length + 1 + k)
    if len(rows) and (rows.max() >= n_days or rows.min() < 0):
        raise ValueError("decision rows outside the feature matrix")
    return padded[idx]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


@dataclass
class LSTMNet:
    """Fitted weights (numpy) plus the input standardisation; ``margin`` runs the recurrence in numpy."""

    seed: int = 7
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    epochs: int = 0
    best_epoch: int = 0
    valid_loss: float = float("nan")

    def _prep(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, float) - self.mean) / self.scale
        return np.where(np.isfinite(Z), np.clip(Z, -8, 8), 0.0)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LSTMNet:
        torch = require_torch()
        X = np.asarray(X, float)
        y = np.asarray(y, float)
        flat = X.reshape(-1, X.shape[-1])
        self.mean = np.nanmean(flat, axis=0)
        sd = np.nanstd(flat, axis=0)
        self.mean = np.where(np.isfinite(self.mean), self.mean, 0.0)
        self.scale = np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0)
        Z = self._prep(X)
        n = len(y)
        n_valid = max(10, int(n * VALID_FRAC))
        fit_end = n - n_valid - VALID_GAP
        if fit_end < 30:
            fit_end, n_valid = n, 0  # too few rows to hold any out: a fixed number of epochs instead
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # 2-core boxes: the engine's own work keeps the other core
        try:
            lstm = torch.nn.LSTM(Z.shape[-1], HIDDEN, batch_first=True)
            head = torch.nn.Linear(HIDDEN, 1)
            params = list(lstm.parameters()) + list(head.parameters())
            opt = torch.optim.Adam(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
            xt = torch.tensor(Z, dtype=torch.float32)
            yt = torch.tensor(y, dtype=torch.float32)
            pos = float(y[:fit_end].mean()) if fit_end else 0.5
            with torch.no_grad():  # start at the base rate: the first epochs learn structure, not the prior
                head.bias.fill_(float(np.log(max(pos, 1e-3) / max(1 - pos, 1e-3))))
            loss_fn = torch.nn.BCEWithLogitsLoss()

            def logits(xb: Any) -> Any:
                out, _ = lstm(xb)
                return head(out[:, -1, :]).squeeze(-1)

            best, best_state, bad = float("inf"), None, 0
            epochs = MAX_EPOCHS if n_valid else 30
            for epoch in range(epochs):
                lstm.train()
                perm = torch.randperm(fit_end, generator=gen)
                for b in range(0, fit_end, 64):
                    idx = perm[b:b + 64]
                    opt.zero_grad()
                    loss = loss_fn(logits(xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
                self.epochs = epoch + 1
                if not n_valid:
                    continue
                with torch.no_grad():
                    v = float(loss_fn(logits(xt[n - n_valid:]), yt[n - n_valid:]))
                if v < best - 1e-4:
                    best, bad, self.best_epoch = v, 0, epoch + 1
                    best_state = [p.detach().clone() for p in params]
                else:
                    bad += 1
                    if bad >= PATIENCE:
                        break
            if best_state is not None:
                with torch.no_grad():
                    for p, b in zip(params, best_state, strict=True):
                        p.copy_(b)
                self.valid_loss = best
            else:
                self.best_epoch = self.epochs
            self.weights = {"w_ih": lstm.weight_ih_l0.detach().numpy().astype(float).copy(),
                            "w_hh": lstm.weight_hh_l0.detach().numpy().astype(float).copy(),
                            "b": (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy().astype(float).copy(),
                            "w_out": head.weight.detach().numpy().astype(float)[0].copy(),
                            "b_out": head.bias.detach().numpy().astype(float).copy()}
        finally:
            torch.set_num_threads(threads)
        return self

    def margin(self, X: np.ndarray) -> np.ndarray:
        """The logit of each sequence (numpy forward pass of torch's LSTM cell: gates i, f, g, o)."""
        if not self.weights:
            raise ValueError("model is not fitted")
        Z = self._prep(X)
        w_ih, w_hh, b = self.weights["w_ih"], self.weights["w_hh"], self.weights["b"]
        n = Z.shape[0]
        h = np.zeros((n, HIDDEN))
        c = np.zeros((n, HIDDEN))
        for t in range(Z.shape[1]):
            g = Z[:, t, :] @ w_ih.T + h @ w_hh.T + b
            i, f, gg, o = np.split(g, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
            h = _sigmoid(o) * np.tanh(c)
        return h @ self.weights["w_out"] + float(self.weights["b_out"][0])

    def to_state(self) -> dict[str, Any]:
        if self.mean is None or self.scale is None:
            raise ValueError("LSTM is not fitted")
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "epochs": self.epochs,
                "best_epoch": self.best_epoch, "valid_loss": self.valid_loss,
                "weights": {k: v.tolist() for k, v in self.weights.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], seed: int = 7) -> LSTMNet:
        return cls(seed=seed, mean=np.asarray(state["mean"], float), scale=np.asarray(state["scale"], float),
                   weights={k: np.asarray(v, float) for k, v in state["weights"].items()},
                   epochs=int(state.get("epochs", 0)), best_epoch=int(state.get("best_epoch", 0)),
                   valid_loss=float(state.get("valid_loss", float("nan"))))
