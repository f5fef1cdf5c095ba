"""A small Gaussian-process surrogate tuned for proposal latency.

Matérn-5/2 kernel with one length scale per encoded column, a signal variance and a Gaussian noise variance,
on standardised objective values. Hyperparameters are maximum-a-posteriori estimates (Gamma(3, 6) prior on the
length scales in the unit cube, as BoTorch uses for low-dimensional problems), fitted with analytic gradients.

Why not scikit-learn's ``GaussianProcessRegressor``: it refits hyperparameters on every call, has no
priors, and its prediction cannot give gradients or pending-point (fantasy) variances, which the
acquisition search below needs thousands of times per proposal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize

_S5 = np.sqrt(5.0)
_JITTER = 1e-8
_LS_BOUNDS = (np.log(0.01), np.log(20.0))
_SIG_BOUNDS = (np.log(0.05), np.log(20.0))
_NOISE_BOUNDS = (np.log(1e-6), np.log(1.0))
#: Gamma(shape, rate) prior on every length scale (unit-cube inputs)
LS_PRIOR = (3.0, 6.0)
#: Gamma(shape, rate) on the signal variance (standardised units); the noise variance has a flat prior in log
#: space
SIGNAL_PRIOR = (2.0, 0.15)

#: a length-scale prior: "gamma", LS_PRIOR on each length scale; "optuna", log p = -0.1 (l^2 + l^-2), a weak
#: prior centred on l = 1 (Optuna's)
LengthScalePrior = Literal["gamma", "optuna"]


@dataclass(frozen=True)
class Hyper:
    lengthscales: np.ndarray
    signal: float  # variance, standardised units
    noise: float  # variance, standardised units


def sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d2, 0.0)


def _matern(r: np.ndarray) -> np.ndarray:
    return (1.0 + _S5 * r + (5.0 / 3.0) * r * r) * np.exp(-_S5 * r)


def _neg_log_posterior(
    theta: np.ndarray, X: np.ndarray, y: np.ndarray, prior: LengthScalePrior
) -> tuple[float, np.ndarray]:
    d = X.shape[1]
    ls = np.exp(theta[:d])
    s2, n2 = np.exp(theta[d]), np.exp(theta[d + 1])
    Xs = X / ls
    r = np.sqrt(sqdist(Xs, Xs))
    e = np.exp(-_S5 * r)
    M = (1.0 + _S5 * r + (5.0 / 3.0) * r * r) * e
    K = s2 * M
    K[np.diag_indices_from(K)] += n2 + _JITTER
    try:
        L = cholesky(K, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return 1e10, np.zeros_like(theta)
    alpha = cho_solve((L, True), y, check_finite=False)
    n = len(y)
    lml = -0.5 * y @ alpha - np.log(np.diag(L)).sum() - 0.5 * n * np.log(2 * np.pi)
    W = np.outer(alpha, alpha) - cho_solve((L, True), np.eye(n), check_finite=False)
    # dK/dlog(l_j) = s2 * 5/3 (1 + sqrt5 r) e^{-sqrt5 r} * (dx_j / l_j)^2; sum over pairs without a 3-D tensor
    G = W * (s2 * (5.0 / 3.0) * (1.0 + _S5 * r) * e)
    rs = G.sum(1)
    g_ls = 0.5 * (2.0 * rs @ (Xs * Xs) - 2.0 * np.einsum("aj,aj->j", Xs, G @ Xs))
    g_s2 = 0.5 * np.sum(W * K) - 0.5 * (n2 + _JITTER) * np.trace(W)
    g_n2 = 0.5 * n2 * np.trace(W)
    lp, g_lp = _log_prior(theta, d, prior)
    grad = np.concatenate([g_ls, [g_s2, g_n2]]) + g_lp
    return -(lml + lp), -grad


def _log_prior(theta: np.ndarray, d: int, prior: LengthScalePrior) -> tuple[float, np.ndarray]:
    """Log prior density of the log-parameters (up to a constant) and its gradient."""
    ls = np.exp(theta[:d])
    s2 = np.exp(theta[d])
    if prior == "optuna":
        lp = -0.1 * np.sum(ls**2 + ls**-2)
        g_ls = -0.2 * (ls**2 - ls**-2)
    else:  # Gamma(a, b) on each length scale: log p = (a - 1) log l - b l
        a, b = LS_PRIOR
        lp = np.sum((a - 1.0) * theta[:d] - b * ls)
        g_ls = (a - 1.0) - b * ls
    sa, sb = SIGNAL_PRIOR
    lp += (sa - 1.0) * theta[d] - sb * s2
    g_s2 = (sa - 1.0) - sb * s2
    return float(lp), np.concatenate([g_ls, [g_s2, 0.0]])


def loo_log_density(X: np.ndarray, y: np.ndarray, hyper: Hyper) -> float:
    """Mean leave-one-out log predictive density of ``y`` (closed form, Rasmussen & Williams eq. 5.10)."""
    return float(np.mean(loo_log_densities(X, y, hyper)))


def loo_log_densities(X: np.ndarray, y: np.ndarray, hyper: Hyper) -> np.ndarray:
    """Each point's leave-one-out log predictive density (−inf everywhere for a singular kernel matrix)."""
    ls = hyper.lengthscales
    K = hyper.signal * _matern(np.sqrt(sqdist(X / ls, X / ls)))
    K[np.diag_indices_from(K)] += hyper.noise + _JITTER
    try:
        L = cholesky(K, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return np.full(len(y), -np.inf)
    Kinv = cho_solve((L, True), np.eye(len(y)), check_finite=False)
    alpha = Kinv @ y
    var = 1.0 / np.maximum(np.diag(Kinv), 1e-300)
    resid = alpha * var
    return -0.5 * np.log(2 * np.pi * var) - 0.5 * resid**2 / var


def fit_hyper(
    X: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    restarts: int = 1,
    priors: tuple[LengthScalePrior, ...] = ("gamma",),
) -> Hyper:
    """MAP hyperparameters for standardised ``y``; starts from a fixed point plus ``restarts`` random ones.

    With several length-scale priors, each prior's MAP is fitted and the one whose model predicts held-out
    points best (leave-one-out log density) is used."""
    if len(priors) == 1:
        return _fit_one(X, y, rng, restarts, priors[0])
    fits = [_fit_one(X, y, rng, restarts, prior) for prior in priors]
    scores = [loo_log_density(X, y, h) for h in fits]
    return fits[int(np.argmax(scores))]


def _fit_one(
    X: np.ndarray, y: np.ndarray, rng: np.random.Generator, restarts: int, prior: LengthScalePrior
) -> Hyper:
    d = X.shape[1]
    bounds = [_LS_BOUNDS] * d + [_SIG_BOUNDS, _NOISE_BOUNDS]
    starts = [np.concatenate([np.full(d, np.log(0.5)), [0.0, np.log(1e-3)]])]
    for _ in range(restarts):
        starts.append(
            np.concatenate(
                [rng.uniform(np.log(0.1), np.log(2.0), d), [rng.uniform(-1, 1), rng.uniform(-9, -3)]]
            )
        )
    best: tuple[float, np.ndarray] | None = None
    for theta0 in starts:
        res = minimize(
            _neg_log_posterior,
            theta0,
            args=(X, y, prior),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 200},
        )
        if best is None or res.fun < best[0]:
            best = (float(res.fun), res.x)
    assert best is not None
    theta = best[1]
    return Hyper(np.exp(theta[:d]), float(np.exp(theta[d])), float(np.exp(theta[d + 1])))


class Posterior:
    """The GP conditioned on (X, y) with fixed hyperparameters, plus optional pending-point fantasies.

    Fantasies follow the *kriging believer*: a pending point is believed to return the posterior mean, which
    leaves the mean unchanged and shrinks the variance around it — so only variances need updating.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, hyper: Hyper) -> None:
        self.X, self.h = X, hyper
        self.ls2 = hyper.lengthscales**2
        self.Xs = X / hyper.lengthscales
        K = self.k(X, X)
        K[np.diag_indices_from(K)] += hyper.noise + _JITTER
        self.L = cholesky(K, lower=True, check_finite=False)
        self.alpha = cho_solve((self.L, True), y, check_finite=False)
        self.F = np.zeros((0, X.shape[1]))
        self._VF = np.zeros((len(X), 0))
        self._QF = np.zeros((len(X), 0))
        self._Sinv = np.zeros((0, 0))

    def k(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        ls = self.h.lengthscales
        return self.h.signal * _matern(np.sqrt(sqdist(A / ls, B / ls)))

    def set_fantasies(self, F: np.ndarray) -> None:
        self.F = np.asarray(F, dtype=float).reshape(-1, self.X.shape[1])
        if len(self.F) == 0:
            self._Sinv = np.zeros((0, 0))
            return
        KXF = self.k(self.X, self.F)
        self._VF = solve_triangular(self.L, KXF, lower=True, check_finite=False)
        self._QF = solve_triangular(self.L.T, self._VF, lower=False, check_finite=False)
        S = self.k(self.F, self.F) - self._VF.T @ self._VF
        S[np.diag_indices_from(S)] += self.h.noise + _JITTER
        self._Sinv = np.linalg.inv(S)

    def predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of the latent objective at the rows of ``Z``."""
        Kxz = self.k(self.X, Z)
        mean = Kxz.T @ self.alpha
        V = solve_triangular(self.L, Kxz, lower=True, check_finite=False)
        var = self.h.signal - np.einsum("ij,ij->j", V, V)
        if len(self.F):
            C = self.k(self.F, Z) - self._VF.T @ V
            var -= np.einsum("ij,ij->j", C, self._Sinv @ C)
        return mean, np.maximum(var, 1e-12 * self.h.signal)

    def predict_grad(self, z: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        """Mean, variance and their gradients at one point ``z``."""
        diff = z[None, :] - self.X
        r = np.sqrt(np.maximum(((diff / self.h.lengthscales) ** 2).sum(1), 0.0))
        e = np.exp(-_S5 * r)
        kz = self.h.signal * (1.0 + _S5 * r + (5.0 / 3.0) * r * r) * e
        # dk/dz = -s2 * 5/3 (1 + sqrt5 r) e^{-sqrt5 r} (z - x) / l^2  (smooth at r = 0)
        dk = -(self.h.signal * (5.0 / 3.0) * (1.0 + _S5 * r) * e)[:, None] * diff / self.ls2
        mean = float(kz @ self.alpha)
        dmean = dk.T @ self.alpha
        v = solve_triangular(self.L, kz, lower=True, check_finite=False)
        w = solve_triangular(self.L.T, v, lower=False, check_finite=False)
        var = self.h.signal - float(v @ v)
        dvar = -2.0 * dk.T @ w
        if len(self.F):
            fdiff = z[None, :] - self.F
            rf = np.sqrt(((fdiff / self.h.lengthscales) ** 2).sum(1))
            ef = np.exp(-_S5 * rf)
            kf = self.h.signal * (1.0 + _S5 * rf + (5.0 / 3.0) * rf * rf) * ef
            dkf = -(self.h.signal * (5.0 / 3.0) * (1.0 + _S5 * rf) * ef)[:, None] * fdiff / self.ls2
            c = kf - self._VF.T @ v
            dc = dkf - self._QF.T @ dk
            sc = self._Sinv @ c
            var -= float(c @ sc)
            dvar -= 2.0 * dc.T @ sc
        return mean, max(var, 1e-12 * self.h.signal), dmean, dvar
