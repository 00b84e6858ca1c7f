"""A full-covariance Gaussian mixture fitted by expectation-maximisation, in numpy.

The regime detector and the ML regime features need a 2–3 state mixture on a few thousand 2-D points.
scikit-learn's ``GaussianMixture`` did that, but it is the only thing the app (without the ML extra)
imported scikit-learn for, and the frozen build carried 15 MB for it. This is the same model — k-means++
seeding, a few k-means steps, then EM with ``reg_covar`` on the diagonal, best of ``n_init`` starts by
log-likelihood — deterministic under ``seed``.
"""

from __future__ import annotations

import math

import numpy as np

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture:
    """``GaussianMixture(3, seed=7).fit(x)``; then ``means_``, ``covariances_``, ``weights_``,
    ``predict(x)``, ``predict_proba(x)``. ``x`` is (n, d) with finite values."""

    def __init__(self, n_components: int, *, seed: int = 0, n_init: int = 1, reg_covar: float = 1e-6,
                 max_iter: int = 200, tol: float = 1e-4) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be ≥ 1, got {n_components}")
        self.n_components = n_components
        self.seed = seed
        self.n_init = max(1, n_init)
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.tol = tol
        self.means_: np.ndarray | None = None
        self.covariances_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None
        self.converged_ = False
        self.lower_bound_ = -math.inf

    # ---- fitting ---------------------------------------------------------------------------------
    def fit(self, x: np.ndarray) -> GaussianMixture:
        x = self._check(x)
        if len(x) < self.n_components:
            raise ValueError(f"need at least {self.n_components} points to fit {self.n_components} components, "
                             f"got {len(x)}")
        rng = np.random.default_rng(self.seed)
        best: tuple[float, np.ndarray, np.ndarray, np.ndarray, bool] | None = None
        for _ in range(self.n_init):
            resp = self._initial_responsibilities(x, rng)
            w, mu, cov = self._m_step(x, resp)
            prev, converged = -math.inf, False
            for _it in range(self.max_iter):
                log_resp, ll = self._e_step(x, w, mu, cov)
                w, mu, cov = self._m_step(x, np.exp(log_resp))
                if abs(ll - prev) < self.tol:
                    converged = True
                    break
                prev = ll
            _, ll = self._e_step(x, w, mu, cov)
            if best is None or ll > best[0]:
                best = (ll, w, mu, cov, converged)
        assert best is not None
        self.lower_bound_, self.weights_, self.means_, self.covariances_, self.converged_ = best
        return self

    def _initial_responsibilities(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """k-means++ seeds refined by a few Lloyd steps, as hard assignments."""
        n, k = len(x), self.n_components
        centers = [x[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None, :] - np.asarray(centers)[None]) ** 2).sum(axis=2), axis=1)
            total = d2.sum()
            centers.append(x[rng.choice(n, p=d2 / total)] if total > 0 else x[rng.integers(n)])
        c = np.asarray(centers)
        for _ in range(10):
            label = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(axis=2), axis=1)
            new = np.array([x[label == j].mean(axis=0) if np.any(label == j) else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        label = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(axis=2), axis=1)
        resp = np.zeros((n, k))
        resp[np.arange(n), label] = 1.0
        return resp

    def _m_step(self, x: np.ndarray, resp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nk = resp.sum(axis=0) + 10 * np.finfo(float).eps
        mu = (resp.T @ x) / nk[:, None]
        d = x.shape[1]
        cov = np.empty((self.n_components, d, d))
        for j in range(self.n_components):
            diff = x - mu[j]
            cov[j] = (resp[:, j, None] * diff).T @ diff / nk[j]
            cov[j].flat[:: d + 1] += self.reg_covar
        return nk / len(x), mu, cov

    def _log_weighted(self, x: np.ndarray, w: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
        """log(w_j · N(x | mu_j, cov_j)) for every point and component, through Cholesky factors."""
        n, d = x.shape
        out = np.empty((n, self.n_components))
        for j in range(self.n_components):
            chol = np.linalg.cholesky(cov[j])
            z = np.linalg.solve(chol, (x - mu[j]).T)
            log_det = 2.0 * np.log(np.diag(chol)).sum()
            out[:, j] = math.log(w[j]) - 0.5 * (d * _LOG_2PI + log_det + (z * z).sum(axis=0))
        return out

    def _e_step(self, x: np.ndarray, w: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, float]:
        lw = self._log_weighted(x, w, mu, cov)
        top = lw.max(axis=1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(lw - top).sum(axis=1))
        return lw - norm[:, None], float(norm.mean())

    def fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights, means, covariances) of the fit: the attributes with the "fit first" check done once, so a
        caller ordering components by their means cannot index an unfitted mixture's None."""
        if self.means_ is None or self.covariances_ is None or self.weights_ is None:
            raise ValueError("fit the mixture before reading its components")
        return self.weights_, self.means_, self.covariances_

    # ---- prediction ------------------------------------------------------------------------------
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.means_ is None or self.covariances_ is None or self.weights_ is None:
            raise ValueError("fit the mixture before predicting")
        log_resp, _ = self._e_step(self._check(x), self.weights_, self.means_, self.covariances_)
        return np.exp(log_resp)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(x), axis=1)

    @staticmethod
    def _check(x: np.ndarray) -> np.ndarray:
        a = np.asarray(x, dtype=float)
        if a.ndim != 2:
            raise ValueError(f"expected a 2-D array (points × features), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("the points hold NaN or infinite values")
        return a


__all__ = ["GaussianMixture"]
