"""Bayesian optimisation behind the ask/tell adapter: a space-filling start, then a GP and an acquisition.

Every proposal is a function of (space, settings, observations, pending, n):

* hyperparameters are refitted on a fixed schedule of *prefixes* of the successful history (every success up
  to 64, then every 20 % growth), so a fresh process computes exactly what a long-lived one cached;
* random choices use generators seeded by (seed, history length, pending count, batch index).

See docs/optimizer.md for the design and its measurements. Long because one proposal's search (`_Step`)
reads the optimizer's fit cache and seeds, and is kept beside them.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController

from sdl.optimizer.acquisition import Acquisition, Feasibility, acquisition
from sdl.optimizer.api import Observation, OptimizerExhausted, OptimizerSettings, Proposal
from sdl.optimizer.baselines import DesignStream
from sdl.optimizer.cost import RecipeCost
from sdl.optimizer.encoding import Encoder
from sdl.optimizer.gp import Hyper, LengthScalePrior, Posterior, fit_hyper, loo_log_densities, sqdist
from sdl.optimizer.objectives import Scalariser
from sdl.optimizer.pareto import ParetoStep
from sdl.optimizer.restart import NOISE_FREE, SIDE, WINDOW, Restart, restart_in_force
from sdl.optimizer.warping import IDENTITY, LOG_GAP, log_jacobian, unwarp, warp

#: refit hyperparameters after every success up to this many, then at geometric checkpoints
REFIT_EVERY_UNTIL = 64
REFIT_GROWTH = 1.2
#: hyperparameters are fitted on at most this many points (the best quarter plus an even spread)
HYPER_FIT_POINTS = 160
#: a failed recipe blocks a ball of this radius (unit-cube distance) around it
FAILURE_RADIUS = 0.02
N_GLOBAL = 512
N_LOCAL_PARENTS = 5
N_LOCAL_EACH = 80
N_POLISH = 4
_LOCAL_SCALES = np.array([0.005, 0.02, 0.05, 0.15])
#: In up to LOW_DIM_PARAMS parameters the fit also tries a weak length-scale prior centred on 1 (Optuna's) and
#: keeps whichever predicts left-out points best: it halved Branin's and mixed's final regret on development
#: seeds, but in 6-D (Ackley, noisy Hartmann) the smoother models it picked cost half the successes. In more
#: parameters the fit tries an output warp instead (OUTPUT_WARPS), and a stalled campaign may restart once
#: (sdl/optimizer/restart.py): in fewer, the design and EI leave little unexplored and a restart only cost
#: refinement (SnAr's final regret, the colour-matching demo's target).
LOW_DIM_PARAMS = 4
LOW_DIM_PRIORS: tuple[LengthScalePrior, ...] = ("gamma", "optuna")
#: in more than LOW_DIM_PARAMS parameters the fit also models the log of the gap below the worst value
#: (sdl/optimizer/warping.py) and keeps it where it predicts left-out points better and fits them noise-free
OUTPUT_WARPS: tuple[str, ...] = (IDENTITY, LOG_GAP)

#: a trust region's bounds, (low, high) per encoded column
_Box = tuple[np.ndarray, np.ndarray]

_BLAS = ThreadpoolController()


def prior_mean(y: np.ndarray) -> float:
    """The GP's constant prior mean, in the units of the modelled values ``y``: the worst value seen.

    An unexplored region is expected to be no better than the worst experiment until data says otherwise.
    Centred on the sample mean instead, EI kept probing the corners of the cube once the incumbent's basin was
    refined (about one evaluation in six on Hartmann-6; docs/optimizer-history.md, first round)."""
    return float(y.max())


def blas_limit(threads: int | None) -> contextlib.AbstractContextManager[object]:
    """BLAS limited to ``threads`` threads while a proposal runs (None: as the process has it)."""
    if threads is None:
        return contextlib.nullcontext()
    return _BLAS.limit(limits=threads, user_api="blas")


def hyper_checkpoint(n_ok: int) -> int:
    """The prefix length whose hyperparameters serve a history of ``n_ok`` successes."""
    if n_ok <= REFIT_EVERY_UNTIL:
        return n_ok
    c = REFIT_EVERY_UNTIL
    while True:
        nxt = math.ceil(c * REFIT_GROWTH)
        if nxt > n_ok:
            return c
        c = nxt


def _fit_points(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points a fit is made on: all, or past HYPER_FIT_POINTS the best quarter and an even spread."""
    if len(y) <= HYPER_FIT_POINTS:
        return X, y
    order = np.argsort(y, kind="stable")
    n_best = HYPER_FIT_POINTS // 4
    rest = np.sort(order[n_best:])
    spread = rest[np.linspace(0, len(rest) - 1, HYPER_FIT_POINTS - n_best).astype(int)]
    idx = np.concatenate([order[:n_best], spread])
    return X[idx], y[idx]


def _standardise(y: np.ndarray, centre: float | None = None) -> tuple[np.ndarray, float, float]:
    """``(y - centre) / sd`` with the sample mean as the default centre; returns the centre and sd too."""
    mu = float(y.mean()) if centre is None else centre
    sd = float(y.std())
    sd = sd if sd > 1e-12 else 1.0
    return (y - mu) / sd, mu, sd


class BayesianOptimizer:
    def __init__(
        self, encoder: Encoder, settings: OptimizerSettings, scalariser: Scalariser | None = None
    ) -> None:
        self.enc = encoder
        self.s = settings
        self.scalariser = scalariser or Scalariser(None, settings.seed)
        obj = self.scalariser.objectives
        #: two-objective Pareto search: a GP per objective and expected hypervolume improvement
        self._hypervolume_search = obj is not None and obj.method == "pareto" and len(obj.specs) == 2
        d = encoder.n_params
        self.n_init = settings.initial_design or min(20, max(5, 2 * d + 2))
        self.design = DesignStream(encoder, settings, self.n_init)
        #: length-scale priors the hyperparameter fit chooses among (leave-one-out); see docs/optimizer.md
        self.priors: tuple[LengthScalePrior, ...] = LOW_DIM_PRIORS if d <= LOW_DIM_PARAMS else ("gamma",)
        self._hyper_cache: dict[str, Hyper] = {}
        self._warp_cache: dict[str, tuple[Hyper, str]] = {}
        #: what a recipe costs (sdl/optimizer/cost.py); None: every recipe costs the same
        self.cost = (
            RecipeCost(encoder.space, settings.cost, {b.param.name: b.start for b in encoder.blocks})
            if settings.cost is not None
            else None
        )

    # -- hyperparameters -----------------------------------------------------------------------------------
    def hyper_for(self, X: np.ndarray, y: np.ndarray, kind: str = IDENTITY) -> Hyper:
        """Hyperparameters for the values ``y`` warped by ``kind``, fitted on the schedule's prefix."""
        key = self._prefix_key(X, y, kind)
        hit = self._hyper_cache.get(key)
        if hit is not None:
            return hit
        c = hyper_checkpoint(len(y))
        Xc, yc = _fit_points(X[:c], y[:c])
        ys, _, _ = _standardise(warp(yc, kind))
        hyper = fit_hyper(Xc, ys, np.random.default_rng([self.s.seed, c]), priors=self.priors)
        if len(self._hyper_cache) > 64:
            self._hyper_cache.clear()
        self._hyper_cache[key] = hyper
        return hyper

    def fit_for(self, X: np.ndarray, y: np.ndarray) -> tuple[Hyper, str]:
        """Hyperparameters and the output warp they belong to (sdl/optimizer/warping.py): of the fits under
        each of OUTPUT_WARPS, the one whose model predicts each prefix point from the others best, as a
        density of the values themselves; a warp other than the identity only with a noise-free fit."""
        if self.enc.n_params <= LOW_DIM_PARAMS:
            return self.hyper_for(X, y), IDENTITY
        key = self._prefix_key(X, y, "warp")
        hit = self._warp_cache.get(key)
        if hit is not None:  # the choice costs two leave-one-out solves: a warm proposal reuses it too
            return hit
        c = hyper_checkpoint(len(y))
        Xc, yc = _fit_points(X[:c], y[:c])
        best: tuple[float, Hyper, str] | None = None
        for kind in OUTPUT_WARPS:
            hyper = self.hyper_for(X, y, kind)
            if kind != IDENTITY and hyper.noise / hyper.signal >= NOISE_FREE:
                continue
            ys, _, sd = _standardise(warp(yc, kind))
            score = float(np.mean(loo_log_densities(Xc, ys, hyper) + log_jacobian(yc, kind))) - math.log(sd)
            if best is None or score > best[0]:
                best = (score, hyper, kind)
        assert best is not None
        if len(self._warp_cache) > 64:
            self._warp_cache.clear()
        self._warp_cache[key] = (best[1], best[2])
        return best[1], best[2]

    def _prefix_key(self, X: np.ndarray, y: np.ndarray, kind: str) -> str:
        c = hyper_checkpoint(len(y))
        return hashlib.sha1(X[:c].tobytes() + y[:c].tobytes() + f"{self.s.seed} {kind}".encode()).hexdigest()

    # -- the adapter ---------------------------------------------------------------------------------------
    def propose(
        self, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]], n: int = 1
    ) -> list[Proposal]:
        with blas_limit(self.s.blas_threads):
            if n > 1 and self.scalariser.varies_per_proposal and not self._hypervolume_search:
                # A new random scalarisation per point: the batch spreads along the Pareto front.
                out: list[Proposal] = []
                for _ in range(n):
                    out += self._propose(observations, [*pending, *(p.recipe for p in out)], 1)
                return out
            return self._propose(observations, pending, n)

    def _propose(
        self, observations: Sequence[Observation], pending: Sequence[Mapping[str, Any]], n: int
    ) -> list[Proposal]:
        t0 = time.perf_counter()
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        enc = self.enc
        taken = {enc.key(o.recipe) for o in observations} | {enc.key(r) for r in pending}
        if len(taken) + n > enc.n_points():
            raise OptimizerExhausted(f"only {enc.n_points() - len(taken):.0f} unseen recipes are left")
        issued = len(observations) + len(pending)
        step: _Step | ParetoStep | None = None
        if self._hypervolume_search:
            assert self.scalariser.objectives is not None
            objectives = self.scalariser.objectives
            self.scalariser.require_measurements(observations)
            n_ok = int(np.all(np.isfinite(objectives.loss_matrix(observations)), axis=1).sum())
            if issued + n > self.n_init and n_ok >= 2:
                step = ParetoStep(self, objectives, observations, pending)
        else:
            values = self.scalariser.values(observations, issued)
            ok = [
                Observation(o.recipe, v) for o, v in zip(observations, values, strict=True) if v is not None
            ]
            bad = [o for o, v in zip(observations, values, strict=True) if v is None]
            if issued + n > self.n_init and len(ok) >= 2:
                step = _Step(self, ok, bad, pending)
        fantasies = [enc.encode(list(pending))] if pending else []
        seen = enc.encode([o.recipe for o in observations]) if enc.polytope is not None else None
        out: list[Proposal] = []
        for i in range(n):
            F = np.vstack(fantasies) if fantasies else np.zeros((0, enc.n_columns))
            prop = None
            if step is not None and issued + i >= self.n_init:
                rng = np.random.default_rng([self.s.seed, len(observations), len(pending), i, 7])
                if isinstance(step, ParetoStep):
                    prop = step.propose(F, taken, rng, self.cost)
                else:
                    restart = step.restart
                    prop = (
                        step.restart_step(F, taken, rng, restart, self.cost) if restart is not None else None
                    )
                    if prop is None:
                        prop = step.propose(F, taken, rng, self.cost)
            if prop is None:
                seen_now = np.vstack([seen, F]) if seen is not None else None
                recipe, kind = self.design.take(issued + i, taken, F, seen_now)
                prop = Proposal(recipe, kind, None, None, 0.0)
            taken.add(enc.key(prop.recipe))
            fantasies.append(enc.encode([prop.recipe]))
            out.append(prop)
        spent = time.perf_counter() - t0
        return [
            Proposal(p.recipe, p.model, p.acquisition, p.acquisition_value, spent / len(out)) for p in out
        ]


class _Step:
    """The model state shared by the proposals of one ``propose`` call."""

    def __init__(
        self,
        opt: BayesianOptimizer,
        ok: Sequence[Observation],
        bad: Sequence[Observation],
        pending: Sequence[Mapping[str, Any]],
    ) -> None:
        self.opt, self.enc, self.s = opt, opt.enc, opt.s
        self.X = self.enc.encode([o.recipe for o in ok])
        self.y_raw = np.array([float(o.value) for o in ok])  # type: ignore[arg-type]
        self.hyper, self.warp = opt.fit_for(self.X, self.y_raw)
        y_model = warp(self.y_raw, self.warp)
        # The GP's prior mean (zero in these units) is prior_mean's; hyperparameters are still fitted on
        # mean-centred values.
        self.y, self.y_mean, self.y_sd = _standardise(y_model, prior_mean(y_model))
        self.post = Posterior(self.X, self.y, self.hyper)
        self.mean_at_data = self.post.predict(self.X)[0]
        self.Xbad = self.enc.encode([o.recipe for o in bad]) if bad else np.zeros((0, self.enc.n_columns))
        self.feas: Feasibility | None = None
        if len(bad):
            self.feas = Feasibility.fitted(
                np.vstack([self.X, self.Xbad]),
                np.concatenate([np.ones(len(self.X)), np.zeros(len(self.Xbad))]),
                self.hyper.lengthscales,
            )
        self.Xall = np.vstack(
            [self.X, self.Xbad, self.enc.encode(list(pending))] if pending else [self.X, self.Xbad]
        )
        #: what a recipe costs, dividing the acquisition of the proposal being searched (None: no cost)
        self.cost: RecipeCost | None = None

    # -- candidates ----------------------------------------------------------------------------------------
    def _candidates(self, F: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        glob = self.enc.sobol_encoded(N_GLOBAL, rng)
        order = np.argsort(self.mean_at_data, kind="stable")[:N_LOCAL_PARENTS]
        parents = np.repeat(self.X[order], N_LOCAL_EACH, axis=0)
        scales = np.tile(_LOCAL_SCALES, len(parents) // len(_LOCAL_SCALES) + 1)[: len(parents)]
        local = self.enc.perturb(parents, scales, rng)
        return np.vstack([glob, local])

    def _blocked(self, Z: np.ndarray, F: np.ndarray) -> np.ndarray:
        """Candidates equal to a seen point, within the duplicate radius of a pending or batch point,
        inside a failed point's ball, or (by rounding) outside the linear constraints."""
        blocked = sqdist(Z, self.Xall).min(1) < 1e-18
        if len(F):
            blocked |= sqdist(Z, F).min(1) < max(self.s.duplicate_radius, 1e-9) ** 2
        if len(self.Xbad):
            blocked |= sqdist(Z, self.Xbad).min(1) < FAILURE_RADIUS**2
        if self.enc.polytope is not None:
            blocked |= ~self.enc.feasible(Z)
        return blocked

    # -- acquisition ---------------------------------------------------------------------------------------
    def _values(self, kind: Acquisition, Z: np.ndarray, best: float, post: Posterior) -> np.ndarray:
        mean, var = post.predict(Z)
        a = acquisition(kind, mean, var, best, self.s.xi, self.s.kappa)[0]
        if self.cost is not None:
            if kind == "lcb":  # per unit cost, the bound's improvement on the incumbent
                a = np.maximum(a + best, 0.0)
            a = a * self.cost.weight(Z)
            a = a * (self.feas(Z) if self.feas is not None else 1.0)
        elif self.feas is not None:
            p = self.feas(Z)
            a = a - 10.0 * (1.0 - p) if kind == "lcb" else a * p
        return a

    def _value_grad(
        self, kind: Acquisition, z: np.ndarray, best: float, post: Posterior
    ) -> tuple[float, np.ndarray]:
        mean, var, dmean, dvar = post.predict_grad(z)
        a, da_dm, da_dv = acquisition(kind, np.array([mean]), np.array([var]), best, self.s.xi, self.s.kappa)
        val, grad = float(a[0]), da_dm[0] * dmean + da_dv[0] * dvar
        if self.cost is not None:
            if kind == "lcb":
                val, grad = (val + best, grad) if val + best > 0.0 else (0.0, np.zeros_like(grad))
            factors = [self.cost.weight_with_grad(z)]
            factors += [self.feas.with_grad(z)] if self.feas is not None else []
            for f, df in factors:
                val, grad = val * f, grad * f + val * df
        elif self.feas is not None:
            p, dp = self.feas.with_grad(z)
            if kind == "lcb":
                val, grad = val - 10.0 * (1.0 - p), grad + 10.0 * dp
            else:
                val, grad = val * p, grad * p + val * dp
        return val, grad

    def _polish(
        self, kind: Acquisition, z0: np.ndarray, best: float, post: Posterior, box: _Box | None
    ) -> tuple[np.ndarray, float]:
        """L-BFGS on the acquisition from ``z0``, inside ``box`` (None: the unit cube)."""
        if self.enc.polytope is not None:
            return self._polish_constrained(kind, z0, best, post)
        cols = self.enc.real_columns
        base = z0.copy()
        low, high = (np.zeros(self.enc.n_columns), np.ones(self.enc.n_columns)) if box is None else box
        bounds = list(zip(low[cols], high[cols], strict=True))

        def negacq(v: np.ndarray) -> tuple[float, np.ndarray]:
            z = base.copy()
            z[cols] = v
            val, grad = self._value_grad(kind, z, best, post)
            return -val, -grad[cols]

        res = minimize(
            negacq,
            base[cols],
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 40},
        )
        z = base.copy()
        z[cols] = np.clip(res.x, 0.0, 1.0)
        return z, -float(res.fun)

    def _polish_constrained(
        self, kind: Acquisition, z0: np.ndarray, best: float, post: Posterior
    ) -> tuple[np.ndarray, float]:
        """SLSQP over the polytope's own coordinates (equalities hold by construction), then the furthest
        feasible point on the segment from the start to SLSQP's answer, so rounding cannot cross a side."""
        poly = self.enc.polytope
        assert poly is not None
        cols = self.enc.real_columns
        base = z0.copy()
        t0 = poly.to_t(base[cols])[0]

        def negacq(t: np.ndarray) -> tuple[float, np.ndarray]:
            z = base.copy()
            z[cols] = poly.to_u(t)[0]
            val, grad = self._value_grad(kind, z, best, post)
            return -val, -(poly.N.T @ grad[cols])

        res = minimize(
            negacq,
            t0,
            jac=True,
            method="SLSQP",
            constraints=[{"type": "ineq", "fun": lambda t: poly.h - poly.G @ t, "jac": lambda t: -poly.G}],
            options={"maxiter": 40},
        )
        t = poly.clamp_step(t0, res.x) if np.all(np.isfinite(res.x)) else t0
        z = base.copy()
        z[cols] = poly.to_u(t)[0]
        return z, self._value_grad(kind, z, best, post)[0]

    def _nominee(
        self,
        kind: Acquisition,
        Z: np.ndarray,
        open_: np.ndarray,
        best: float,
        F: np.ndarray,
        post: Posterior | None = None,
        box: _Box | None = None,
    ) -> tuple[np.ndarray, float] | None:
        """The best open candidate of Z by the acquisition under ``post`` (default: the step's), then
        polished inside ``box`` (default: the unit cube)."""
        post = self.post if post is None else post
        vals = np.where(open_, self._values(kind, Z, best, post), -np.inf)
        if not np.isfinite(vals).any():
            return None
        order = np.argsort(-vals, kind="stable")
        cands: list[tuple[np.ndarray, float]] = [(Z[order[0]], float(vals[order[0]]))]
        if len(self.enc.real_columns):
            for j in order[:N_POLISH]:
                if np.isfinite(vals[j]):
                    z, v = self._polish(kind, Z[j], best, post, box)
                    if not self._blocked(z[None, :], F)[0]:
                        cands.append((z, v))
        cands.sort(key=lambda c: -c[1])
        return cands[0]

    def _open_recipe(
        self, z: np.ndarray, F: np.ndarray, taken: set[tuple[Any, ...]]
    ) -> dict[str, Any] | None:
        """The recipe of encoded point ``z``, unless blocked, already taken or outside the constraints."""
        if self._blocked(z[None, :], F)[0]:
            return None
        recipe = self.enc.decode(z[None, :])[0]
        if self.enc.key(recipe) in taken or not self.enc.space.satisfies_constraints(recipe):
            return None
        return recipe

    # -- the restart (sdl/optimizer/restart.py) ------------------------------------------------------------
    def _noise_free(self, hyper: Hyper) -> bool:
        return hyper.noise / hyper.signal < NOISE_FREE

    @cached_property
    def restart(self) -> Restart | None:
        """The restart this step belongs to, if any. The stall must come with noise-free fits both at the
        stall and WINDOW successes before it: rugged objectives such as Ackley's reach the noise floor only
        briefly. Both fits are on the hyperparameter schedule, so a long-lived optimizer has them cached."""
        enc = self.enc
        if enc.n_params <= LOW_DIM_PARAMS:
            return None
        if enc.polytope is not None or len(enc.real_columns) != enc.n_columns:
            return None

        def noise_free(t: int) -> bool:
            return all(
                self._noise_free(self.opt.hyper_for(self.X[:u], self.y_raw[:u])) for u in (t, t - WINDOW)
            )

        return restart_in_force(self.X, self.y_raw, self.opt.n_init, noise_free)

    def restart_step(
        self,
        F: np.ndarray,
        taken: set[tuple[Any, ...]],
        rng: np.random.Generator,
        restart: Restart,
        cost: RecipeCost | None = None,
    ) -> Proposal | None:
        """Expected improvement on the restart region's best point, inside a box around it, under a GP of the
        points in reach of that box only."""
        self.cost = cost
        region = restart.region(self.X)
        if not len(region):
            return None
        centre = self.X[region[np.argmin(self.y[region])]]
        low, high = np.clip(centre - SIDE / 2, 0.0, 1.0), np.clip(centre + SIDE / 2, 0.0, 1.0)
        near = np.max(np.abs(self.X - centre), axis=1) <= SIDE
        local_y = self.y[near]
        local = Posterior(self.X[near], local_y - local_y.max(), self.hyper)
        local.set_fantasies(F)
        best = float(local.predict(centre[None, :])[0][0])
        Z = low + self.enc.sobol_encoded(N_GLOBAL, rng) * (high - low)  # all columns are real here
        open_ = ~self._blocked(Z, F)
        nominee = self._nominee("ei", Z, open_, best, F, local, (low, high))
        if nominee is None:
            return None
        recipe = self._open_recipe(nominee[0], F, taken)
        if recipe is None:
            return None
        return Proposal(recipe, "gp", _named("ei", cost), float(nominee[1]) * self.y_sd, 0.0)

    def propose(
        self,
        F: np.ndarray,
        taken: set[tuple[Any, ...]],
        rng: np.random.Generator,
        cost: RecipeCost | None = None,
    ) -> Proposal | None:
        self.cost = cost
        self.post.set_fantasies(F)
        best = float(self.mean_at_data.min())
        if len(F):
            best = min(best, float(self.post.predict(F)[0].min()))
        Z = self._candidates(F, rng)
        open_ = ~self._blocked(Z, F)
        kinds: list[Acquisition] = (
            ["ei", "pi", "lcb"] if self.s.acquisition == "gp_hedge" else [self.s.acquisition]
        )
        nominees: list[tuple[Acquisition, dict[str, Any], np.ndarray, float]] = []
        for kind in kinds:
            nom = self._nominee(kind, Z, open_, best, F)
            recipe = self._open_recipe(nom[0], F, taken) if nom is not None else None
            if nom is not None and recipe is not None:
                nominees.append((kind, recipe, nom[0], nom[1]))
        if not nominees:
            return None
        pick = 0
        if len(nominees) > 1:
            # GP-hedge's reward is the posterior mean at each nominee; with no state kept between calls the
            # portfolio draws from a softmax over the current means (seeded, so still deterministic).
            means = self.post.predict(np.vstack([z for _, _, z, _ in nominees]))[0]
            w = np.exp(-(means - means.min()))
            pick = int(rng.choice(len(nominees), p=w / w.sum()))
        kind, recipe, _, value = nominees[pick]
        # Reported in objective units: EI as an expected improvement (of the warped values, under a warp),
        # LCB as the bound itself, PI as is; under a cost, per unit of cost (LCB: its improvement).
        if kind == "ei" or (kind == "lcb" and cost is not None):
            value *= self.y_sd
        elif kind == "lcb":
            value = unwarp(self.y_mean - value * self.y_sd, self.y_raw, self.warp)
        return Proposal(recipe, "gp", _named(kind, cost), float(value), 0.0)


def _named(kind: str, cost: RecipeCost | None) -> str:
    """The acquisition's name in the record: ``ei``, or ``ei/cost`` when divided by a cost."""
    return kind if cost is None else f"{kind}/cost"
