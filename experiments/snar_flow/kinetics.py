"""The SnAr flow reactor's kinetic model: space-time yield and E-factor of a recipe.

The SnAr of 2,4-difluoronitrobenzene (DFNB) with pyrrolidine in ethanol, four second-order steps, integrated
through an isothermal plug-flow reactor. Pure numpy/scipy: the procedure of this experiment computes its
measurements with it, and the optimizer benchmarks (benchmarks/_problems.py) use it as a test problem.
"""

from __future__ import annotations

import math

import numpy as np

#: Second-order rate constants at 90 °C (1e-2 M^-1 s^-1) and activation energies (kJ/mol) for
#: DFNB + pyrrolidine -> ortho (a), -> para (b); ortho + pyrrolidine -> bis (c);
#: para + pyrrolidine -> bis (d).
SNAR_K90 = (57.9, 2.70, 0.865, 1.63)
SNAR_EA = (33.3, 35.3, 38.9, 44.8)
_MW = (159.09, 71.12, 210.21, 210.21, 261.33)  # DFNB, pyrrolidine, ortho, para, bis (g/mol)
_REACTOR_ML = 3.0
_RHO_ETHANOL = 0.789  # g/mL


def snar(tau_min: float, equiv: float, conc_m: float, temp_c: float) -> tuple[float, float]:
    """Space-time yield (kg m^-3 h^-1) and E-factor of the SnAr of 2,4-difluoronitrobenzene with pyrrolidine
    in ethanol, in an isothermal plug-flow reactor of 3 mL.

    Kinetics from C. A. Hone, N. Holmes, G. R. Akien, R. A. Bourne, F. L. Muller, "Rapid multistep kinetic
    model generation from transient flow data", React. Chem. Eng. 2017, 2, 103–108
    (doi:10.1039/C6RE00109B): four second-order steps with k(90 °C) = 57.9, 2.70, 0.865, 1.63
    × 1e-2 M^-1 s^-1 and Ea = 33.3, 35.3, 38.9, 44.8 kJ/mol, in Arrhenius form about 90 °C.
    The reactor, molecular weights, STY and E-factor follow
    the "SnAr benchmark" of K. C. Felton, J. G. Rittig, A. A. Lapkin, "Summit: benchmarking machine learning
    methods for reaction optimisation", Chemistry–Methods 2021, 1, 116–122. Unlike that implementation, the
    para product forms with its own constant k_b and temperatures are converted with 273.15 K.
    """
    r_gas = 8.314e-3
    t_k, t_ref = temp_c + 273.15, 90.0 + 273.15
    # 1e-2 M^-1 s^-1 -> M^-1 min^-1
    ka, kb, kc, kd = (
        0.6 * k * math.exp(-ea / r_gas * (1 / t_k - 1 / t_ref))
        for k, ea in zip(SNAR_K90, SNAR_EA, strict=True)
    )

    def rates(_t: float, c: np.ndarray) -> np.ndarray:
        a, p, o, q, _ = np.maximum(c, 0.0)
        r1, r2, r3, r4 = ka * a * p, kb * a * p, kc * o * p, kd * q * p
        return np.array([-(r1 + r2), -(r1 + r2 + r3 + r4), r1 - r3, r2 - r4, r3 + r4])

    c0 = np.array([conc_m, equiv * conc_m, 0.0, 0.0, 0.0])
    from scipy.integrate import solve_ivp  # half a second to import; only this problem needs it

    sol = solve_ivp(rates, (0.0, tau_min), c0, method="LSODA", rtol=1e-8, atol=1e-10)
    c = np.maximum(sol.y[:, -1], 0.0)
    q_tot = _REACTOR_ML / tau_min  # mL/min
    sty = max(60.0 * _MW[2] * c[2] * q_tot / _REACTOR_ML, 1e-6)  # g/L/min * 60 -> kg m^-3 h^-1
    waste = q_tot * _RHO_ETHANOL + 1e-3 * q_tot * sum(_MW[i] * c[i] for i in (0, 1, 3, 4))
    product = 1e-3 * q_tot * _MW[2] * c[2]
    e_factor = min(waste / product, 1e3) if product > 1e-12 else 1e3
    return sty, e_factor
