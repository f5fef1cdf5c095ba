"""The feasible set of linear constraints on the unit cube: sampling, local moves and exact step limits.

The set ``{u in [0, 1]^k : A_ub u <= b_ub, A_eq u = b_eq}`` is parameterised as ``u = u0 + N t`` with ``N`` an
orthonormal basis of the null space of ``A_eq``, so equalities hold by construction and only the inequalities
``G t <= h`` (box sides included) remain. Every point this module produces is reached by a step along a line
whose feasible segment is computed exactly, so it satisfies the inequalities up to rounding.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import null_space
from scipy.optimize import linprog

#: a polytope whose largest inscribed ball (in the unit cube) is smaller than this leaves no room to search
MIN_ROOM = 1e-6


class NoRoom(ValueError):
    """The constraints leave no feasible point, or none with room around it."""


class Polytope:
    def __init__(
        self,
        A_ub: np.ndarray,
        b_ub: np.ndarray,
        A_eq: np.ndarray,
        b_eq: np.ndarray,
        k: int,
    ) -> None:
        A_ub = np.asarray(A_ub, dtype=float).reshape(-1, k)
        A_eq = np.asarray(A_eq, dtype=float).reshape(-1, k)
        b_ub = np.asarray(b_ub, dtype=float).reshape(-1)
        b_eq = np.asarray(b_eq, dtype=float).reshape(-1)
        self.k = k
        self.A_ub, self.b_ub, self.A_eq, self.b_eq = A_ub, b_ub, A_eq, b_eq
        if len(A_eq):
            u0 = np.linalg.lstsq(A_eq, b_eq, rcond=None)[0]
            if np.abs(A_eq @ u0 - b_eq).max() > 1e-9 * max(1.0, np.abs(b_eq).max()):
                raise NoRoom("the equality constraints contradict each other")
            N = null_space(A_eq)
        else:
            u0, N = np.zeros(k), np.eye(k)
        if N.shape[1] == 0:
            raise NoRoom(
                "the equality constraints fix every constrained parameter; nothing is left to search"
            )
        self.u0, self.N = u0, N
        G = np.vstack([N, -N, A_ub @ N])
        h = np.concatenate([1.0 - u0, u0, b_ub - A_ub @ u0])
        norms = np.linalg.norm(G, axis=1)
        flat = norms < 1e-12
        if np.any(h[flat] < -1e-9):
            raise NoRoom("the constraints admit no point inside the parameter bounds")
        self.G, self.h, self.norms = G[~flat], h[~flat], norms[~flat]
        m = N.shape[1]
        res = linprog(
            np.concatenate([np.zeros(m), [-1.0]]),
            A_ub=np.hstack([self.G, self.norms[:, None]]),
            b_ub=self.h,
            bounds=[(None, None)] * m + [(0.0, None)],
            method="highs",
        )
        if res.status != 0:
            raise NoRoom("the constraints admit no point inside the parameter bounds")
        self.centre, self.radius = res.x[:m], float(res.x[m])
        if self.radius < MIN_ROOM:
            raise NoRoom(
                "the constraints leave (almost) no room inside the parameter bounds: the largest ball that "
                f"fits has radius {self.radius:.2g} in units of the parameter ranges"
            )

    @property
    def dim(self) -> int:
        return self.N.shape[1]

    # -- coordinates ---------------------------------------------------------------------------------------
    def to_u(self, T: np.ndarray) -> np.ndarray:
        return np.clip(self.u0 + np.atleast_2d(T) @ self.N.T, 0.0, 1.0)

    def to_t(self, U: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(U) - self.u0) @ self.N

    def contains(self, U: np.ndarray, tol: float = 1e-9) -> np.ndarray:
        U = np.atleast_2d(U)
        ok = np.all((-tol <= U) & (1.0 + tol >= U), axis=1)
        if len(self.A_ub):
            ok &= np.all(self.b_ub + tol >= U @ self.A_ub.T, axis=1)
        if len(self.A_eq):
            ok &= np.all(np.abs(U @ self.A_eq.T - self.b_eq) <= tol, axis=1)
        return ok

    # -- lines ---------------------------------------------------------------------------------------------
    def segment(self, T: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each row, the interval of ``s`` with ``T + s D`` feasible (contains 0 for feasible ``T``)."""
        slack = self.h[None, :] - T @ self.G.T  # >= 0 inside
        rate = D @ self.G.T
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.maximum(slack, 0.0) / rate
        up = np.where(rate > 1e-15, ratio, np.inf).min(axis=1)
        down = np.where(rate < -1e-15, ratio, -np.inf).max(axis=1)
        return np.minimum(down, 0.0), np.maximum(up, 0.0)

    def _directions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        D = rng.standard_normal((n, self.dim))
        return D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-300)

    def sample(self, n: int, rng: np.random.Generator, steps: int | None = None) -> np.ndarray:
        """``n`` points spread over the polytope (hit-and-run chains from its centre), as ``u`` rows."""
        steps = steps if steps is not None else 12 + 3 * self.dim
        T = np.repeat(self.centre[None, :], n, axis=0)
        for _ in range(steps):
            D = self._directions(n, rng)
            lo, hi = self.segment(T, D)
            T = T + (lo + rng.random(n) * (hi - lo))[:, None] * D
        return self.to_u(T)

    def perturb(self, U: np.ndarray, scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gaussian steps of per-row ``scale`` along random feasible lines through the rows of ``U``."""
        T = self.to_t(U)
        D = self._directions(len(T), rng)
        lo, hi = self.segment(T, D)
        s = np.clip(scale * rng.standard_normal(len(T)), lo, hi)
        return self.to_u(T + s[:, None] * D)

    def clamp_step(self, t_from: np.ndarray, t_to: np.ndarray) -> np.ndarray:
        """The point of the segment from feasible ``t_from`` towards ``t_to`` that goes furthest while
        staying feasible (``t_to`` itself when it is)."""
        d = t_to - t_from
        length = float(np.linalg.norm(d))
        if length == 0.0:
            return t_from
        _, hi = self.segment(t_from[None, :], (d / length)[None, :])
        return t_from + min(1.0, float(hi[0]) / length) * d
