"""Optimal superposition of many residue sets at once: a vectorised closed-form 3x3 rotation solve."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kabsch_svd", "rotations"]


def _namespace(array):
    """numpy for numpy arrays, torch for tensors (imported only when a tensor is passed)."""
    if isinstance(array, np.ndarray):
        return np
    import torch

    return torch


def _copy(array):
    return array.copy() if isinstance(array, np.ndarray) else array.clone()


def rotations(h, *, with_value: bool = True, polish: bool = True):
    """Rotations R maximising sum y.(R x), and that maximum, for covariances h[a][b] = sum x_a y_b.

    h and R are 3x3 nested lists of (M,) numpy arrays or torch tensors: many small problems solved together,
    component by component, with no per-problem linear algebra calls. Returns (R, maximum), the maximum None
    unless ``with_value``. Pass float64: in float32 an ill-conditioned problem (s2 + s3 well under s1, common
    for short fragments) loses its rotation, by up to radians, since h^T h squares the condition number.
    ``polish`` refines the top eigenvalue by Newton steps, to the last digits (without: about 1e-8 relative).
    """
    xp = _namespace(h[0][0])
    # The maximum is the top eigenvalue of Horn's 4x4 matrix, s1 + s2 + sign(det h) s3 over the singular values
    # of h: a closed form (eigenvalues of h^T h, trigonometric solution), polished by Newton steps on the
    # characteristic quartic of Horn's matrix (as in the QCP method, Theobald 2005).
    at_least, at_most = (np.maximum, np.minimum) if xp is np else (xp.clamp_min, xp.clamp_max)
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = h
    m00 = sxx * sxx + syx * syx + szx * szx
    m11 = sxy * sxy + syy * syy + szy * szy
    m22 = sxz * sxz + syz * syz + szz * szz
    o01 = sxx * sxy + syx * syy + szx * szy
    o02 = sxx * sxz + syx * syz + szx * szz
    o12 = sxy * sxz + syy * syz + szy * szz
    q = (m00 + m11 + m22) * (1.0 / 3.0)
    d0, d1, d2 = m00 - q, m11 - q, m22 - q
    p2 = (d0 * d0 + d1 * d1 + d2 * d2 + 2.0 * (o01 * o01 + o02 * o02 + o12 * o12)) * (1.0 / 6.0)
    p = xp.sqrt(p2)
    det_b = d0 * (d1 * d2 - o12 * o12) - o01 * (o01 * d2 - o12 * o02) + o02 * (o01 * o12 - d1 * o02)
    half = at_most(at_least(det_b / (2.0 * at_least(p2 * p, 1e-300 if _is_double(q) else 1e-30)), -1.0), 1.0)
    cos = xp.cos(xp.arccos(half) * (1.0 / 3.0))  # the angle lies in [0, pi/3]
    sin = xp.sqrt(at_least(1.0 - cos * cos, 0.0))
    two_p = 2.0 * p
    e1 = q + two_p * cos
    e3 = q - two_p * (0.5 * cos + 0.8660254037844386 * sin)
    e2 = 3.0 * q - e1 - e3
    det_h = _det3(h)
    s1, s2, s3 = (xp.sqrt(at_least(e, 0.0)) for e in (e1, e2, e3))
    lam = s1 + s2 + xp.sign(det_h) * s3  # sign 0 on planar sets: their s3 is rounding noise
    horn = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [None, sxx - syy - szz, sxy + syx, szx + sxz],
        [None, None, syy - sxx - szz, syz + szy],
        [None, None, None, szz - sxx - syy],
    ]
    for i in range(1, 4):
        for j in range(i):
            horn[i][j] = horn[j][i]
    if polish:  # the closed form loses digits when two singular values nearly coincide
        c2 = -2.0 * (m00 + m11 + m22)
        c1 = -8.0 * det_h
        c0 = _det4(horn)
        for _ in range(2):
            lam2 = lam * lam
            slope = (4.0 * lam2 + 2.0 * c2) * lam + c1
            step = ((lam2 + c2) * lam2 + c1 * lam + c0) / xp.where(slope > 0, slope, math.inf)
            lam = lam - xp.where(xp.abs(step) < 1e-6 * xp.abs(lam), step, 0.0)  # near a double root: no wild steps
    # the rotation's quaternion spans the null space of horn - lam: a column of the adjugate, the first one
    # unless the rotation is near 180 degrees (small w), where the largest one is taken instead
    a = [[horn[i][j] - lam if i == j else horn[i][j] for j in range(4)] for i in range(4)]
    quat = _adjugate4_column0(a)
    w, x, y, z = quat
    norm2 = w * w + x * x + y * y + z * z
    weak = w * w < 0.05 * norm2
    if bool(weak.any()):
        adj = _adjugate4([[entry[weak] for entry in row] for row in a])
        pick = xp.argmax(xp.stack([xp.abs(adj[i][i]) for i in range(4)], axis=-1), axis=-1)
        for i in range(4):
            column = adj[i][3]
            for k in (2, 1, 0):
                column = xp.where(pick == k, adj[i][k], column)
            quat[i] = _copy(quat[i])
            quat[i][weak] = column
        w, x, y, z = quat
        norm2 = w * w + x * x + y * y + z * z
    tiny = 1e-6 * lam * lam * lam
    # nearly collinear sets (s2 and s3 both tiny against s1) make the closed form's two small roots a double
    # root it resolves only to sqrt(eps): SVD solves those (well under 0.1% of a search's fits)
    good = (lam > 0) & (norm2 > tiny * tiny) & (s2 + s3 >= 0.01 * s1)
    two = 2.0 / xp.where(good, norm2, 1.0)  # R of the unnormalised quaternion, scaled by 2 / |q|^2 at the end
    wx, wy, wz, xy, xz, yz = w * x, w * y, w * z, x * y, x * z, y * z
    xx, yy, zz = x * x, y * y, z * z
    rot = [
        [1.0 - two * (yy + zz), two * (xy - wz), two * (xz + wy)],
        [two * (xy + wz), 1.0 - two * (xx + zz), two * (yz - wx)],
        [two * (xz - wy), two * (yz + wx), 1.0 - two * (xx + yy)],
    ]
    if not bool(good.all()):  # degenerate sets (collinear, one point): SVD with the reflection fix instead
        bad = ~good
        stacked = xp.stack([xp.stack([h[i][j][bad] for j in range(3)], axis=-1) for i in range(3)], axis=1)
        fixed = kabsch_svd(stacked)
        for i in range(3):
            for j in range(3):
                rot[i][j] = _copy(rot[i][j])
                rot[i][j][bad] = fixed[:, i, j]
    if not with_value:
        return rot, None
    lam = sum(rot[i][j] * h[j][i] for i in range(3) for j in range(3))  # the fit's own value, exact for the MSD
    return rot, lam


def _is_double(array) -> bool:
    return str(array.dtype).endswith("float64")


def kabsch_svd(h):
    """Kabsch rotations from covariances h (M, 3, 3) by SVD, reflections removed."""
    xp = _namespace(h)
    u, _, vt = xp.linalg.svd(h)
    v = xp.swapaxes(vt, 1, 2)
    ut = xp.swapaxes(u, 1, 2)
    prod = v @ ut
    sign = xp.where(_det3([[prod[:, i, j] for j in range(3)] for i in range(3)]) < 0, -1.0, 1.0)
    v = xp.concatenate([v[:, :, :2], v[:, :, 2:] * sign[:, None, None]], axis=-1)
    return v @ ut


def _det3(m):
    """Determinants of 3x3 matrices given as nested lists of arrays."""
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def _minors(a, top: int, bottom: int):
    """The 2x2 minors of rows top and bottom of 4x4 matrices (nested lists), columns 01 02 03 12 13 23."""
    pairs = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
    return [a[top][i] * a[bottom][j] - a[bottom][i] * a[top][j] for i, j in pairs]


def _det4(a):
    """Determinants of 4x4 matrices given as nested lists of arrays."""
    s, c = _minors(a, 0, 1), _minors(a, 2, 3)
    return s[0] * c[5] - s[1] * c[4] + s[2] * c[3] + s[3] * c[2] - s[4] * c[1] + s[5] * c[0]


def _adjugate4_column0(a):
    """First column of the adjugates of 4x4 matrices given as nested lists of arrays."""
    c = _minors(a, 2, 3)
    r = a[1]
    return [
        r[1] * c[5] - r[2] * c[4] + r[3] * c[3],
        -r[0] * c[5] + r[2] * c[2] - r[3] * c[1],
        r[0] * c[4] - r[1] * c[2] + r[3] * c[0],
        -r[0] * c[3] + r[1] * c[1] - r[2] * c[0],
    ]


def _adjugate4(a):
    """Adjugates of 4x4 matrices (nested lists of arrays): [i][k] is the signed minor without row k and column i."""
    return [
        [(-1) ** (i + k) * _det3([[a[r][c] for c in range(4) if c != i] for r in range(4) if r != k]) for k in range(4)]
        for i in range(4)
    ]
