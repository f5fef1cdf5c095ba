"""Kinematics of the simulated arm: Universal Robots' published DH parameters, poses as UR writes them.

A pose is ``(x, y, z, rx, ry, rz)``: metres and a rotation vector (axis times angle, radians), in the
base frame, as ``get_actual_tcp_pose()`` and RTDE's ``actual_TCP_pose`` give it. Inverse kinematics
is numeric (damped least squares from a nearby joint vector), which picks the solution closest to
``qnear`` as URScript's ``get_inverse_kin(x, qnear)`` does; the controller's own solver is analytic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Pose = tuple[float, float, float, float, float, float]
Joints = tuple[float, ...]
Matrix = NDArray[np.float64]
IDENTITY_POSE: Pose = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Arm:
    """Standard DH parameters (Universal Robots, "DH parameters for calculations of kinematics")."""

    model: str
    d: tuple[float, ...]
    a: tuple[float, ...]
    alpha: tuple[float, ...]


HALF_PI = math.pi / 2
ARMS = {
    "UR5": Arm("UR5", (0.089159, 0, 0, 0.10915, 0.09465, 0.0823), (0, -0.425, -0.39225, 0, 0, 0),
               (HALF_PI, 0, 0, HALF_PI, -HALF_PI, 0)),
    "UR5e": Arm("UR5e", (0.1625, 0, 0, 0.1333, 0.0997, 0.0996), (0, -0.425, -0.3922, 0, 0, 0),
                (HALF_PI, 0, 0, HALF_PI, -HALF_PI, 0)),
}  # fmt: skip


# -- rotations ----------------------------------------------------------------------------------


def rotation_matrix(rotvec: Sequence[float]) -> Matrix:
    v = np.asarray(rotvec, dtype=float)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)


def rotation_vector(r: Matrix) -> tuple[float, float, float]:
    cosine = max(-1.0, min(1.0, (float(np.trace(r)) - 1) / 2))
    angle = math.acos(cosine)
    if angle < 1e-9:
        return (0.0, 0.0, 0.0)
    w = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2  # sin(angle) * axis
    if angle < HALF_PI:
        axis = w / math.sin(angle)
    else:
        # Towards a half turn sin(angle) vanishes: the symmetric part, (1 - cos) * axis axisᵀ, stays
        # well conditioned; the antisymmetric part only picks the sign.
        b = (r + r.T) / 2 - cosine * np.eye(3)
        column = b[:, int(np.argmax(np.diag(b)))]
        axis = column / np.linalg.norm(column)
        if float(axis @ w) < 0:
            axis = -axis
    return (float(axis[0] * angle), float(axis[1] * angle), float(axis[2] * angle))


def matrix(pose: Sequence[float]) -> Matrix:
    t = np.eye(4)
    t[:3, :3] = rotation_matrix(pose[3:6])
    t[:3, 3] = pose[:3]
    return t


def pose_of(t: Matrix) -> Pose:
    rx, ry, rz = rotation_vector(t[:3, :3])
    return (float(t[0, 3]), float(t[1, 3]), float(t[2, 3]), rx, ry, rz)


def pose_trans(base: Sequence[float], relative: Sequence[float]) -> Pose:
    return pose_of(matrix(base) @ matrix(relative))


def pose_inv(pose: Sequence[float]) -> Pose:
    return pose_of(np.linalg.inv(matrix(pose)))


def pose_add(first: Sequence[float], second: Sequence[float]) -> Pose:
    """URScript ``pose_add``: positions added, rotations composed (first, then second)."""
    r = rotation_matrix(first[3:6]) @ rotation_matrix(second[3:6])
    rx, ry, rz = rotation_vector(r)
    return (first[0] + second[0], first[1] + second[1], first[2] + second[2], rx, ry, rz)


def pose_sub(to: Sequence[float], start: Sequence[float]) -> Pose:
    """URScript ``pose_sub``: the position difference and the rotation from ``start`` to ``to``."""
    r = rotation_matrix(start[3:6]).T @ rotation_matrix(to[3:6])
    rx, ry, rz = rotation_vector(r)
    return (to[0] - start[0], to[1] - start[1], to[2] - start[2], rx, ry, rz)


def pose_distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.dist(a[:3], b[:3])


def interpolate_pose(start: Sequence[float], end: Sequence[float], fraction: float) -> Pose:
    """Straight line between positions, the shortest rotation between orientations."""
    r0 = rotation_matrix(start[3:6])
    step = rotation_vector(r0.T @ rotation_matrix(end[3:6]))
    r = r0 @ rotation_matrix([c * fraction for c in step])
    rx, ry, rz = rotation_vector(r)
    position = [a + (b - a) * fraction for a, b in zip(start[:3], end[:3], strict=True)]
    return (position[0], position[1], position[2], rx, ry, rz)


def rotation_angle(start: Sequence[float], end: Sequence[float]) -> float:
    return float(np.linalg.norm(rotation_vector(rotation_matrix(start[3:6]).T @ rotation_matrix(end[3:6]))))


# -- forward and inverse kinematics -------------------------------------------------------------


def _frames(q: Sequence[float], arm: Arm) -> list[Matrix]:
    """Base-to-joint transforms T0..T6 (T0 is the base)."""
    frames = [np.eye(4)]
    t = np.eye(4)
    for theta, d, a, alpha in zip(q, arm.d, arm.a, arm.alpha, strict=True):
        ct, st, ca, sa = math.cos(theta), math.sin(theta), math.cos(alpha), math.sin(alpha)
        step = np.array([[ct, -st * ca, st * sa, a * ct], [st, ct * ca, -ct * sa, a * st], [0, sa, ca, d],
                         [0, 0, 0, 1.0]])  # fmt: skip
        t = t @ step
        frames.append(t)
    return frames


def forward_matrix(q: Sequence[float], arm: Arm, tcp: Sequence[float] = IDENTITY_POSE) -> Matrix:
    return _frames(q, arm)[-1] @ matrix(tcp)


def forward(q: Sequence[float], arm: Arm, tcp: Sequence[float] = IDENTITY_POSE) -> Pose:
    return pose_of(forward_matrix(q, arm, tcp))


def elbow(q: Sequence[float], arm: Arm) -> tuple[float, float, float]:
    """Position of the elbow joint (RTDE ``elbow_position``)."""
    t = _frames(q, arm)[3]
    return (float(t[0, 3]), float(t[1, 3]), float(t[2, 3]))


def jacobian(q: Sequence[float], arm: Arm, tcp: Sequence[float] = IDENTITY_POSE) -> Matrix:
    """Geometric Jacobian of the TCP (linear; angular) in the base frame."""
    frames = _frames(q, arm)
    end = (frames[-1] @ matrix(tcp))[:3, 3]
    j = np.zeros((6, 6))
    for i in range(6):
        z = frames[i][:3, 2]
        origin = frames[i][:3, 3]
        j[:3, i] = np.cross(z, end - origin)
        j[3:, i] = z
    return j


def inverse(
    pose: Sequence[float],
    qnear: Sequence[float],
    arm: Arm,
    tcp: Sequence[float] = IDENTITY_POSE,
    *,
    position_tolerance: float = 1e-9,
    orientation_tolerance: float = 1e-9,
    iterations: int = 100,
) -> Joints | None:
    """Joints that put the TCP at ``pose``, found from ``qnear``; None if none is found near it."""
    target = matrix(pose)
    q = np.asarray(qnear, dtype=float).copy()
    damping = 1e-3
    for _ in range(iterations):
        current = forward_matrix(q, arm, tcp)
        dp = target[:3, 3] - current[:3, 3]
        dr = np.asarray(rotation_vector(target[:3, :3] @ current[:3, :3].T))
        if (
            float(np.linalg.norm(dp)) <= position_tolerance
            and float(np.linalg.norm(dr)) <= orientation_tolerance
        ):
            return tuple(float(x) for x in q)
        error = np.concatenate([dp, dr])
        j = jacobian(q, arm, tcp)
        step = j.T @ np.linalg.solve(j @ j.T + damping**2 * np.eye(6), error)
        largest = float(np.max(np.abs(step)))
        if largest > 0.5:  # keep each step small, so the solver stays on the branch it started on
            step *= 0.5 / largest
        q += step
    return None
