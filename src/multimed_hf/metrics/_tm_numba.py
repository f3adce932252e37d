"""The TMscore superposition search compiled with numba: one fused float64 loop per pair (see ``search_pairs``)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["search_pairs"]

_N_REFINE = 20  # refinement rounds after each seed fit (n_it in TMscore)
_N_STATS = 16  # x_a*y_b (9), x (3), y (3), 1
_EMPTY = -1


@njit(cache=True)
def _det3(a00, a01, a02, a10, a11, a12, a20, a21, a22):
    return a00 * (a11 * a22 - a12 * a21) - a01 * (a10 * a22 - a12 * a20) + a02 * (a10 * a21 - a11 * a20)


@njit(cache=True)
def _minor3(a, row, col):
    """Determinant of the 3x3 matrix left by removing row and col of the 4x4 a."""
    r0, r1, r2 = (1 if row == 0 else 0), (2 if row <= 1 else 1), (3 if row <= 2 else 2)
    c0, c1, c2 = (1 if col == 0 else 0), (2 if col <= 1 else 1), (3 if col <= 2 else 2)
    return _det3(a[r0, c0], a[r0, c1], a[r0, c2], a[r1, c0], a[r1, c1], a[r1, c2], a[r2, c0], a[r2, c1], a[r2, c2])


@njit(cache=True)
def _det4(a):
    s0 = a[0, 0] * a[1, 1] - a[1, 0] * a[0, 1]
    s1 = a[0, 0] * a[1, 2] - a[1, 0] * a[0, 2]
    s2 = a[0, 0] * a[1, 3] - a[1, 0] * a[0, 3]
    s3 = a[0, 1] * a[1, 2] - a[1, 1] * a[0, 2]
    s4 = a[0, 1] * a[1, 3] - a[1, 1] * a[0, 3]
    s5 = a[0, 2] * a[1, 3] - a[1, 2] * a[0, 3]
    c0 = a[2, 0] * a[3, 1] - a[3, 0] * a[2, 1]
    c1 = a[2, 0] * a[3, 2] - a[3, 0] * a[2, 2]
    c2 = a[2, 0] * a[3, 3] - a[3, 0] * a[2, 3]
    c3 = a[2, 1] * a[3, 2] - a[3, 1] * a[2, 2]
    c4 = a[2, 1] * a[3, 3] - a[3, 1] * a[2, 3]
    c5 = a[2, 2] * a[3, 3] - a[3, 2] * a[2, 3]
    return s0 * c5 - s1 * c4 + s2 * c3 + s3 * c2 - s4 * c1 + s5 * c0


@njit(cache=True)
def _kabsch_svd(h, rot):
    """Kabsch rotation from the covariance h (3, 3) by SVD, the reflection removed (as ``kabsch_svd``)."""
    u, _, vt = np.linalg.svd(h)
    v = vt.T.copy()
    prod = v @ u.T
    if _det3(prod[0, 0], prod[0, 1], prod[0, 2], prod[1, 0], prod[1, 1], prod[1, 2],
             prod[2, 0], prod[2, 1], prod[2, 2]) < 0:
        v[:, 2] = -v[:, 2]
    rot[:, :] = v @ u.T


@njit(cache=True)
def _rotation(h, rot, horn):
    """The rotation R (into rot) maximising sum y.(R x) for h[a, b] = sum x_a y_b: ``rotations`` of one problem
    (polished), with its quaternion and SVD fallback rules. horn is (4, 4) scratch."""
    sxx, sxy, sxz = h[0, 0], h[0, 1], h[0, 2]
    syx, syy, syz = h[1, 0], h[1, 1], h[1, 2]
    szx, szy, szz = h[2, 0], h[2, 1], h[2, 2]
    m00 = sxx * sxx + syx * syx + szx * szx
    m11 = sxy * sxy + syy * syy + szy * szy
    m22 = sxz * sxz + syz * syz + szz * szz
    o01 = sxx * sxy + syx * syy + szx * szy
    o02 = sxx * sxz + syx * syz + szx * szz
    o12 = sxy * sxz + syy * syz + szy * szz
    q = (m00 + m11 + m22) * (1.0 / 3.0)
    d0, d1, d2 = m00 - q, m11 - q, m22 - q
    p2 = (d0 * d0 + d1 * d1 + d2 * d2 + 2.0 * (o01 * o01 + o02 * o02 + o12 * o12)) * (1.0 / 6.0)
    p = math.sqrt(p2)
    det_b = d0 * (d1 * d2 - o12 * o12) - o01 * (o01 * d2 - o12 * o02) + o02 * (o01 * o12 - d1 * o02)
    half = min(max(det_b / (2.0 * max(p2 * p, 1e-300)), -1.0), 1.0)
    cos = math.cos(math.acos(half) * (1.0 / 3.0))
    sin = math.sqrt(max(1.0 - cos * cos, 0.0))
    two_p = 2.0 * p
    e1 = q + two_p * cos
    e3 = q - two_p * (0.5 * cos + 0.8660254037844386 * sin)
    e2 = 3.0 * q - e1 - e3
    det_h = _det3(sxx, sxy, sxz, syx, syy, syz, szx, szy, szz)
    s1 = math.sqrt(max(e1, 0.0))
    s2 = math.sqrt(max(e2, 0.0))
    s3 = math.sqrt(max(e3, 0.0))
    sign = 1.0 if det_h > 0 else (-1.0 if det_h < 0 else 0.0)
    lam = s1 + s2 + sign * s3
    horn[0, 0], horn[0, 1], horn[0, 2], horn[0, 3] = sxx + syy + szz, syz - szy, szx - sxz, sxy - syx
    horn[1, 1], horn[1, 2], horn[1, 3] = sxx - syy - szz, sxy + syx, szx + sxz
    horn[2, 2], horn[2, 3] = syy - sxx - szz, syz + szy
    horn[3, 3] = szz - sxx - syy
    for i in range(1, 4):
        for j in range(i):
            horn[i, j] = horn[j, i]
    c2 = -2.0 * (m00 + m11 + m22)
    c1 = -8.0 * det_h
    c0 = _det4(horn)
    for _ in range(2):
        lam2 = lam * lam
        slope = (4.0 * lam2 + 2.0 * c2) * lam + c1
        step = ((lam2 + c2) * lam2 + c1 * lam + c0) / (slope if slope > 0 else math.inf)
        if abs(step) < 1e-6 * abs(lam):
            lam = lam - step
    for i in range(4):
        horn[i, i] -= lam  # horn is now horn - lam: its adjugate's columns span the quaternion
    # the first column of the adjugate, unless the rotation is near 180 degrees (small w)
    w = _minor3(horn, 0, 0)
    x = -_minor3(horn, 0, 1)
    y = _minor3(horn, 0, 2)
    z = -_minor3(horn, 0, 3)
    norm2 = w * w + x * x + y * y + z * z
    if w * w < 0.05 * norm2:
        pick, top = 0, -1.0
        for i in range(4):
            value = abs(_minor3(horn, i, i))
            if value > top:
                pick, top = i, value
        sign_k = 1.0 if pick % 2 == 0 else -1.0
        # adj[i][pick] = (-1)^(i + pick) * minor(row pick, column i)
        w = sign_k * _minor3(horn, pick, 0)
        x = -sign_k * _minor3(horn, pick, 1)
        y = sign_k * _minor3(horn, pick, 2)
        z = -sign_k * _minor3(horn, pick, 3)
        norm2 = w * w + x * x + y * y + z * z
    tiny = 1e-6 * lam * lam * lam
    if lam > 0 and norm2 > tiny * tiny and s2 + s3 >= 0.01 * s1:
        two = 2.0 / norm2
        rot[0, 0] = 1.0 - two * (y * y + z * z)
        rot[0, 1] = two * (x * y - w * z)
        rot[0, 2] = two * (x * z + w * y)
        rot[1, 0] = two * (x * y + w * z)
        rot[1, 1] = 1.0 - two * (x * x + z * z)
        rot[1, 2] = two * (y * z - w * x)
        rot[2, 0] = two * (x * z - w * y)
        rot[2, 1] = two * (y * z + w * x)
        rot[2, 2] = 1.0 - two * (x * x + y * y)
    else:  # degenerate sets (collinear, one point): SVD with the reflection fix
        _kabsch_svd(h, rot)


@njit(cache=True)
def _fit(st, h, rot, t, horn):
    """Rotation (into rot) and translation t of the best fit of a set from its sums st (16,)."""
    n = st[15]
    inv_n = 1.0 / (n if n > 0 else 1.0)
    mx0, mx1, mx2 = st[9] * inv_n, st[10] * inv_n, st[11] * inv_n
    my0, my1, my2 = st[12] * inv_n, st[13] * inv_n, st[14] * inv_n
    mx = (mx0, mx1, mx2)
    my = (my0, my1, my2)
    for a in range(3):
        for b in range(3):
            h[a, b] = st[3 * a + b] * inv_n - mx[a] * my[b]
    _rotation(h, rot, horn)
    for i in range(3):
        t[i] = my[i] - rot[i, 0] * mx0 - rot[i, 1] * mx1 - rot[i, 2] * mx2


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _score(x0, x1, x2, y0, y1, y2, rot, t, d0sq, cut2, below):
    """One pass over the residues after a fit: the TM sum, the selection d^2 < cut2 (into below, as 0/1), its
    size and the GDT counts (1, 2, 4, 8 A)."""
    r00, r01, r02 = rot[0, 0], rot[0, 1], rot[0, 2]
    r10, r11, r12 = rot[1, 0], rot[1, 1], rot[1, 2]
    r20, r21, r22 = rot[2, 0], rot[2, 1], rot[2, 2]
    t0, t1, t2 = t[0], t[1], t[2]
    total = n_sel = g1 = g2 = g4 = g8 = 0.0
    for i in range(len(x0)):
        a, b, c = x0[i], x1[i], x2[i]
        dx = r00 * a + r01 * b + r02 * c + t0 - y0[i]
        dy = r10 * a + r11 * b + r12 * c + t1 - y1[i]
        dz = r20 * a + r21 * b + r22 * c + t2 - y2[i]
        d = dx * dx + dy * dy + dz * dz
        total += 1.0 / (d0sq + d)
        m = 1.0 if d < cut2 else 0.0
        below[i] = m
        n_sel += m
        g1 += 1.0 if d < 1.0 else 0.0
        g2 += 1.0 if d < 4.0 else 0.0
        g4 += 1.0 if d < 16.0 else 0.0
        g8 += 1.0 if d < 64.0 else 0.0
    return total * d0sq, int(n_sel), g1, g2, g4, g8


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _selection_stats(x0, x1, x2, y0, y1, y2, below, st):
    """Sums st (16,) over the selection below (0/1): x_a*y_b (9), x (3), y (3), 1."""
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = 0.0
    sx0 = sx1 = sx2 = sy0 = sy1 = sy2 = count = 0.0
    for i in range(len(x0)):
        m = below[i]
        a, b, c, p, q, r = m * x0[i], m * x1[i], m * x2[i], y0[i], y1[i], y2[i]
        s00 += a * p
        s01 += a * q
        s02 += a * r
        s10 += b * p
        s11 += b * q
        s12 += b * r
        s20 += c * p
        s21 += c * q
        s22 += c * r
        sx0 += a
        sx1 += b
        sx2 += c
        sy0 += m * p
        sy1 += m * q
        sy2 += m * r
        count += m
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8] = s00, s01, s02, s10, s11, s12, s20, s21, s22
    st[9], st[10], st[11], st[12], st[13], st[14], st[15] = sx0, sx1, sx2, sy0, sy1, sy2, count


@njit(cache=True)
def _relieve(x0, x1, x2, y0, y1, y2, rot, t, below, base):
    """Raise the cut from base (A) by 0.5 A until 3 residues pass, as TMscore's stepping loop does; returns the
    new selection's size."""
    n = len(x0)
    d2 = np.empty(n)
    for i in range(n):
        a, b, c = x0[i], x1[i], x2[i]
        dx = rot[0, 0] * a + rot[0, 1] * b + rot[0, 2] * c + t[0] - y0[i]
        dy = rot[1, 0] * a + rot[1, 1] * b + rot[1, 2] * c + t[1] - y1[i]
        dz = rot[2, 0] * a + rot[2, 1] * b + rot[2, 2] * c + t[2] - y2[i]
        d2[i] = dx * dx + dy * dy + dz * dz
    m1 = m2 = m3 = math.inf  # the three smallest squared distances
    for i in range(n):
        d = d2[i]
        if d < m3:
            if d < m2:
                m3 = m2
                if d < m1:
                    m2, m1 = m1, d
                else:
                    m2 = d
            else:
                m3 = d
    steps = max(math.floor((math.sqrt(max(m3, 0.0)) - base) / 0.5) + 1.0, 1.0)
    while steps > 1.0 and _count_below(d2, (base + 0.5 * (steps - 1.0)) ** 2) >= 3:
        steps -= 1.0
    while _count_below(d2, (base + 0.5 * steps) ** 2) < 3:
        steps += 1.0
    cut2 = (base + 0.5 * steps) ** 2
    count = 0
    for i in range(n):
        inside = d2[i] < cut2
        below[i] = 1.0 if inside else 0.0
        count += inside
    return count


@njit(cache=True)
def _count_below(d2, cut2):
    count = 0
    for i in range(len(d2)):
        count += d2[i] < cut2
    return count


@njit(cache=True)
def _pack(below, words):
    n = len(below)
    for j in range(len(words)):
        acc = np.uint64(0)
        for b in range(min(64, n - 64 * j)):
            if below[64 * j + b] > 0.0:
                acc |= np.uint64(1) << np.uint64(b)
        words[j] = acc


@njit(cache=True)
def _hash(words):
    key = np.uint64(0x9E3779B97F4A7C15)
    for j in range(len(words)):
        key = (key ^ words[j]) * np.uint64(0xBF58476D1CE4E5B9)
        key ^= key >> np.uint64(29)
    return key


@njit(cache=True)
def _lookup(table, store, words, key):
    """Slot of the table holding words, or the empty slot where they would go."""
    mask = np.uint64(len(table) - 1)
    slot = int(key & mask)
    n_words = len(words)
    while True:
        entry = table[slot]
        if entry == _EMPTY:
            return slot
        same = True
        for j in range(n_words):
            if store[entry, j] != words[j]:
                same = False
                break
        if same:
            return slot
        slot = int((np.uint64(slot) + np.uint64(1)) & mask)


@njit(cache=True)
def _fragment_lengths(n):
    shortest = min(4, n)
    out = np.empty(6, dtype=np.int64)
    k = 0
    for i in range(5):
        length = int(n / 2.0**i)
        if length <= shortest:
            out[k] = shortest
            return out[: k + 1]
        out[k] = length
        k += 1
    out[k] = shortest
    return out[: k + 1]


@njit(cache=True)
def _search_pair(x, y, d0sq, d0_search, gdt):
    """Best TM sum of one pair (x already superposed onto y, both centred), GDT counts into gdt (4,)."""
    n = x.shape[0]
    xs = np.ascontiguousarray(x.T)
    ys = np.ascontiguousarray(y.T)
    x0, x1, x2, y0, y1, y2 = xs[0], xs[1], xs[2], ys[0], ys[1], ys[2]
    prefix = np.zeros((n + 1, _N_STATS))  # running sums of the per-residue features, for the seed fragments
    for i in range(n):
        for a in range(3):
            for b in range(3):
                prefix[i + 1, 3 * a + b] = prefix[i, 3 * a + b] + xs[a, i] * ys[b, i]
            prefix[i + 1, 9 + a] = prefix[i, 9 + a] + xs[a, i]
            prefix[i + 1, 12 + a] = prefix[i, 12 + a] + ys[a, i]
        prefix[i + 1, 15] = prefix[i, 15] + 1.0
    cut_seed, cut_refine = d0_search - 1.0, d0_search + 1.0
    cut2_seed, cut2_refine = cut_seed * cut_seed, cut_refine * cut_refine
    long_enough = n > 3
    n_words = (n + 63) // 64
    capacity = 256  # distinct selections held before the table grows (a 7ok9 chain reaches ~500)
    table = np.full(2 * capacity, _EMPTY, dtype=np.int64)
    store = np.empty((capacity, n_words), dtype=np.uint64)
    first_round = np.empty(capacity, dtype=np.int64)
    n_stored = 0
    st = np.empty(_N_STATS)
    h = np.empty((3, 3))
    rot = np.empty((3, 3))
    t = np.empty(3)
    horn = np.empty((4, 4))
    below = np.empty(n)
    words = np.empty(n_words, dtype=np.uint64)
    best = -1.0
    for length in _fragment_lengths(n):
        for start in range(n - length + 1):
            for k in range(_N_STATS):
                st[k] = prefix[start + length, k] - prefix[start, k]
            for it in range(_N_REFINE + 1):
                _fit(st, h, rot, t, horn)
                cut, cut2 = (cut_seed, cut2_seed) if it == 0 else (cut_refine, cut2_refine)
                total, n_sel, g1, g2, g4, g8 = _score(x0, x1, x2, y0, y1, y2, rot, t, d0sq, cut2, below)
                best = max(best, total)
                gdt[0] = max(gdt[0], g1)
                gdt[1] = max(gdt[1], g2)
                gdt[2] = max(gdt[2], g4)
                gdt[3] = max(gdt[3], g8)
                if it == _N_REFINE:
                    break
                if n_sel < 3 and long_enough:
                    n_sel = _relieve(x0, x1, x2, y0, y1, y2, rot, t, below, cut)
                if n_sel == 0:
                    break
                # a selection fitted from this round or an earlier one has been (or is being) followed: stop
                _pack(below, words)
                slot = _lookup(table, store, words, _hash(words))
                entry = table[slot]
                if entry != _EMPTY:
                    if first_round[entry] <= it:
                        break
                    first_round[entry] = it
                else:
                    if n_stored == capacity:  # grow the store and rehash
                        capacity *= 2
                        grown = np.empty((capacity, n_words), dtype=np.uint64)
                        grown[:n_stored] = store[:n_stored]
                        store = grown
                        rounds = np.empty(capacity, dtype=np.int64)
                        rounds[:n_stored] = first_round[:n_stored]
                        first_round = rounds
                        table = np.full(2 * capacity, _EMPTY, dtype=np.int64)
                        for e in range(n_stored):
                            table[_lookup(table, store, store[e], _hash(store[e]))] = e
                        slot = _lookup(table, store, words, _hash(words))
                    store[n_stored] = words
                    first_round[n_stored] = it
                    table[slot] = n_stored
                    n_stored += 1
                _selection_stats(x0, x1, x2, y0, y1, y2, below, st)
    return best


@njit(cache=True)
def search_pairs(coords_x, coords_y, offsets, d0sq, d0_search):
    """The search over pairs given as concatenated observed coordinates (M, 3) with offsets (N + 1,).

    Each pair's search runs in one compiled loop: the seed fits from prefix sums, a float64 3x3 rotation per fit
    (the closed form of ``_tm_rotation.rotations`` with its Newton polish and its SVD fallback rules, scalar), and
    one pass over the residues per fit giving the TM sum, the four GDT counts and the next selection together; the
    sums for the next fit are taken only for a selection not yet followed. A selection already fitted at the same
    or an earlier refinement round is not fitted again (its future is the same, cut no later), so every
    superposition the reference program scores is scored, once. Kernels are compiled on first use and cached on
    disk (``cache=True``).

    Each pair is centred and its prediction superposed onto its reference by the least-squares fit over all its
    residues first (that fit also gives the RMSD). Returns the best TM sums (N,) (divide by the reference
    length), the best GDT counts (N, 4) at 1, 2, 4, 8 A and the mean squared deviations (N,) of the global fits.
    """
    n_pairs = len(offsets) - 1
    best = np.empty(n_pairs)
    gdt = np.zeros((n_pairs, 4))
    msd = np.empty(n_pairs)
    h = np.empty((3, 3))
    rot = np.empty((3, 3))
    horn = np.empty((4, 4))
    for p in range(n_pairs):
        lo, hi = offsets[p], offsets[p + 1]
        n = hi - lo
        x = coords_x[lo:hi].copy()
        y = coords_y[lo:hi].copy()
        for a in range(3):
            mx = 0.0
            my = 0.0
            for i in range(n):
                mx += x[i, a]
                my += y[i, a]
            mx /= n
            my /= n
            for i in range(n):
                x[i, a] -= mx
                y[i, a] -= my
        norms = 0.0
        for i in range(n):
            for a in range(3):
                norms += x[i, a] * x[i, a] + y[i, a] * y[i, a]
        for a in range(3):
            for b in range(3):
                total = 0.0
                for i in range(n):
                    total += x[i, a] * y[i, b]
                h[a, b] = total
        _rotation(h, rot, horn)
        value = 0.0
        for i in range(3):
            for j in range(3):
                value += rot[i, j] * h[j, i]
        msd[p] = max(norms - 2.0 * value, 0.0) / n
        moved = np.empty_like(x)
        for i in range(n):
            for a in range(3):
                moved[i, a] = rot[a, 0] * x[i, 0] + rot[a, 1] * x[i, 1] + rot[a, 2] * x[i, 2]
        best[p] = _search_pair(moved, y, d0sq[p], d0_search[p], gdt[p])
    return best, gdt, msd
