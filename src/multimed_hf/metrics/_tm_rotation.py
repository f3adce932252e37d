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


def rotations(h, *, with_value: bool = True, polish: bool = True):
    """Rotations R maximising sum y.(R x), and that maximum, for covariances h[a][b] = sum x_a y_b.

    h and R are 3x3 nested lists of (M,) numpy arrays or torch tensors: many small problems solved together,
    component by component, with no per-problem linear algebra calls. Returns (R, maximum), the maximum None
    unless ``with_value``. Pass float64: in float32 an ill-conditioned problem (s2 + s3 well under s1, common
    for short fragments) loses its rotation, by up to radians, since h^T h squares the condition number.
    ``polish`` refines the top eigenvalue by Newton steps, to the last digits (without: about 1e-8 relative).
    """
    stacked = rotation_stack(h, polish=polish)
    rot = [[stacked[i][j] for j in range(3)] for i in range(3)]
    if not with_value:
        return rot, None
    lam = sum(rot[i][j] * h[j][i] for i in range(3) for j in range(3))  # the fit's own value, exact for the MSD
    return rot, lam


def rotation_stack(h, *, polish: bool = True):
    """The rotations of ``rotations`` as one (3, 3, M) array. Components that share a formula are computed as
    stacks, one array operation for several (few launches on a GPU), each element by the same operations in the
    same order as component by component: the results are the same to the bit."""
    xp = _namespace(h[0][0])
    # The maximum is the top eigenvalue of Horn's 4x4 matrix, s1 + s2 + sign(det h) s3 over the singular values
    # of h: a closed form (eigenvalues of h^T h, trigonometric solution), polished by Newton steps on the
    # characteristic quartic of Horn's matrix (as in the QCP method, Theobald 2005).
    at_least, at_most = (np.maximum, np.minimum) if xp is np else (xp.clamp_min, xp.clamp_max)
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = h
    rows = [xp.stack(row) for row in h]  # rows[a][b] = h[a][b]
    m = rows[0] * rows[0] + rows[1] * rows[1] + rows[2] * rows[2]  # m00, m11, m22: h^T h's diagonal
    left = [xp.stack((r[0], r[0], r[1])) for r in h]
    right = [xp.stack((r[1], r[2], r[2])) for r in h]
    o = left[0] * right[0] + left[1] * right[1] + left[2] * right[2]  # o01, o02, o12: its upper triangle
    m00, m11, m22 = m[0], m[1], m[2]
    o01, o02, o12 = o[0], o[1], o[2]
    q = (m00 + m11 + m22) * (1.0 / 3.0)
    d = m - q
    d0, d1, d2 = d[0], d[1], d[2]
    dd, oo = d * d, o * o
    p2 = (dd[0] + dd[1] + dd[2] + 2.0 * (oo[0] + oo[1] + oo[2])) * (1.0 / 6.0)
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
    s1, s2, s3 = xp.sqrt(at_least(xp.stack((e1, e2, e3)), 0.0))
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
        c0 = _det4(horn, xp)
        for _ in range(2):
            lam2 = lam * lam
            slope = (4.0 * lam2 + 2.0 * c2) * lam + c1
            step = ((lam2 + c2) * lam2 + c1 * lam + c0) / xp.where(slope > 0, slope, math.inf)
            lam = lam - xp.where(xp.abs(step) < 1e-6 * xp.abs(lam), step, 0.0)  # near a double root: no wild steps
    # the rotation's quaternion spans the null space of horn - lam: a column of the adjugate, the first one
    # unless the rotation is near 180 degrees (small w), where the largest one is taken instead
    a = [[horn[i][j] - lam if i == j else horn[i][j] for j in range(4)] for i in range(4)]
    quat = _adjugate4_column0(a, xp)  # (4, M): w, x, y, z
    squares = quat * quat
    norm2 = squares[0] + squares[1] + squares[2] + squares[3]
    weak = _indices(squares[0] < 0.05 * norm2)  # indices, not a mask: one read-back of a device array, not one per use
    if len(weak):
        adj = _adjugate4([[entry[weak] for entry in row] for row in a], xp)  # (4, 4, n): [i][k]
        pick = xp.argmax(xp.abs(xp.stack([adj[i][i] for i in range(4)])), axis=0)
        if xp is np:
            column = np.take_along_axis(adj, np.broadcast_to(pick, (4, 1, len(pick))), axis=1)[:, 0]
        else:
            column = xp.gather(adj, 1, pick.expand(4, 1, -1))[:, 0]
        quat[:, weak] = column
        squares = quat * quat
        norm2 = squares[0] + squares[1] + squares[2] + squares[3]
    w, x, y, z = quat[0], quat[1], quat[2], quat[3]
    tiny = 1e-6 * lam * lam * lam
    # nearly collinear sets (s2 and s3 both tiny against s1) make the closed form's two small roots a double
    # root it resolves only to sqrt(eps): SVD solves those (well under 0.1% of a search's fits)
    good = (lam > 0) & (norm2 > tiny * tiny) & (s2 + s3 >= 0.01 * s1)
    two = 2.0 / xp.where(good, norm2, 1.0)  # R of the unnormalised quaternion, scaled by 2 / |q|^2 at the end
    prod = xp.stack((x, y, z, x, x, y, w, w, w)) * xp.stack((x, y, z, y, z, z, x, y, z))
    xx, yy, zz, xy, xz, yz, wx, wy, wz = (prod[k] for k in range(9))
    diagonal = 1.0 - two * (xp.stack((yy, xx, xx)) + xp.stack((zz, zz, yy)))  # r00, r11, r22
    minus = two * (xp.stack((xy, yz, xz)) - xp.stack((wz, wx, wy)))  # r01, r12, r20
    plus = two * (xp.stack((xz, xy, yz)) + xp.stack((wy, wz, wx)))  # r02, r10, r21
    rot = xp.stack((diagonal[0], minus[0], plus[0], plus[1], diagonal[1], minus[1], minus[2], plus[2],
                      diagonal[2])).reshape(3, 3, -1)
    bad = _indices(~good)
    if len(bad):  # degenerate sets (collinear, one point): SVD with the reflection fix instead
        stacked = xp.stack([xp.stack([h[i][j][bad] for j in range(3)], axis=-1) for i in range(3)], axis=1)
        fixed = kabsch_svd(stacked)  # (n, 3, 3)
        rot[:, :, bad] = xp.moveaxis(fixed, 0, -1)
    return rot


def _indices(mask):
    """Positions of the true values of a 1-d mask (numpy array or tensor)."""
    if isinstance(mask, np.ndarray):
        return np.flatnonzero(mask)
    return mask.nonzero().squeeze(1)


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


def _minors(a, top: int, bottom: int, xp):
    """The 2x2 minors (6, M) of rows top and bottom of 4x4 matrices (nested lists), columns 01 02 03 12 13 23."""
    t, b = a[top], a[bottom]
    return (xp.stack((t[0], t[0], t[0], t[1], t[1], t[2])) * xp.stack((b[1], b[2], b[3], b[2], b[3], b[3]))
            - xp.stack((b[0], b[0], b[0], b[1], b[1], b[2])) * xp.stack((t[1], t[2], t[3], t[2], t[3], t[3])))


def _det4(a, xp):
    """Determinants of 4x4 matrices given as nested lists of arrays."""
    s, c = _minors(a, 0, 1, xp), _minors(a, 2, 3, xp)
    t = s * xp.stack((c[5], c[4], c[3], c[2], c[1], c[0]))
    return t[0] - t[1] + t[2] + t[3] - t[4] + t[5]


def _adjugate4_column0(a, xp):
    """First column (4, M) of the adjugates of 4x4 matrices given as nested lists of arrays."""
    c = _minors(a, 2, 3, xp)
    r = a[1]
    # entry k: first two terms (r1 c5 - r2 c4, -r0 c5 + r2 c2, r0 c4 - r1 c2, -r0 c3 + r1 c1), then the third
    first = xp.stack((r[1], r[2], r[0], r[1])) * xp.stack((c[5], c[2], c[4], c[1])) - xp.stack(
        (r[2], r[0], r[1], r[0])) * xp.stack((c[4], c[5], c[2], c[3]))
    third = xp.stack((r[3], r[3], r[3], r[2])) * xp.stack((c[3], c[1], c[0], c[0]))
    even, odd = first[0::2] + third[0::2], first[1::2] - third[1::2]
    return xp.stack((even[0], odd[0], even[1], odd[1]))


def _adjugate4(a, xp):
    """Adjugates (4, 4, M) of 4x4 matrices (nested lists of arrays): [i][k] is the signed minor without row k and
    column i, all 16 minors' determinants as one stacked 3x3 determinant."""
    order = [(i, k) for i in range(4) for k in range(4)]
    minor = [[xp.stack([a[[rr for rr in range(4) if rr != k][r]][[cc for cc in range(4) if cc != i][c]]
                          for i, k in order]) for c in range(3)] for r in range(3)]
    det = _det3(minor)  # (16, M)
    negated = -det
    return xp.stack([negated[n] if (i + k) % 2 else det[n] for n, (i, k) in enumerate(order)]).reshape(4, 4, -1)
