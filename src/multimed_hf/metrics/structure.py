"""Protein structure metrics for residue-matched pairs: TM-score (TMscore's search), RMSD and GDT-TS."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "fragment_lengths",
    "structure_scores",
    "tm_align_scores",
    "tm_d0",
    "tm_d0_search",
    "tm_score",
]

_N_REFINE = 20  # refinement rounds after each seed fit (n_it in TMscore)
_GDT_CUTOFFS = (1.0, 2.0, 4.0, 8.0)  # GDT-TS distance cut-offs in Angstrom
_BIG = 1e30  # squared distance given to padding residues: scores 0, never selected
_N_FEATURES = 18  # per residue: x_a*y_b (9), x (3), y (3), 1, |x|^2, |y|^2
_ROW_BUDGET = 1 << 21  # seed fits x residues per batch on a CPU (8x more on a GPU)


def tm_d0(length: float) -> float:
    """TM-score distance scale d0 for a reference of ``length`` residues (0.5 A floor, 0.5 A for L <= 21)."""
    d0 = 1.24 * (length - 15.0) ** (1.0 / 3.0) - 1.8 if length > 21 else 0.5
    return max(d0, 0.5)


def tm_d0_search(length: float) -> float:
    """Distance scale of the superposition search: d0 clamped to [4.5, 8] A."""
    return min(max(tm_d0(length), 4.5), 8.0)


def fragment_lengths(n_aligned: int) -> list[int]:
    """Seed fragment lengths of the search: n, n/2, n/4, ... down to 4 (at most 6 lengths)."""
    shortest = min(4, n_aligned)
    lengths = []
    for i in range(5):
        length = int(n_aligned / 2.0**i)
        if length <= shortest:
            lengths.append(shortest)
            return lengths
        lengths.append(length)
    lengths.append(shortest)
    return lengths


# ----------------------------------------------------------------------------------------------------------------
# input checks


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _split(value, name: str) -> list:
    if value is None:
        raise ValueError(f"{name} is None; expected a sequence of (L, 3) coordinate arrays")
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} is a string; expected a sequence of (L, 3) coordinate arrays")
    if hasattr(value, "shape") or hasattr(value, "detach"):
        array = _to_numpy(value)
        if array.ndim not in (3, 4):
            raise ValueError(
                f"{name} as one array must have shape (N, L, 3) or (N, L, 4|3, 3), got shape {array.shape}"
            )
        return list(array)
    try:
        return list(value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of coordinate arrays, got {type(value).__name__}") from None


def _calpha(value, label: str) -> np.ndarray:
    """C-alpha coordinates (L, 3) of one structure; label names it in errors, e.g. "predictions[3]"."""
    try:
        array = _to_numpy(value).astype(np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{label} is not a numeric coordinate array ({error})") from None
    if array.ndim == 3 and array.shape[1] in (3, 4) and array.shape[2] == 3:
        array = array[:, 1]  # backbone in N, CA, C(, O) order: keep the C-alpha
    elif array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(
            f"{label} has shape {array.shape}; expected (L, 3) C-alpha coordinates "
            "or an (L, 4, 3) / (L, 3, 3) backbone in N, CA, C(, O) order"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{label} has no residues (shape {array.shape}); expected at least 1")
    return array


def _prepare(predictions, references, masks) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    preds = _split(predictions, "predictions")
    refs = _split(references, "references")
    if not preds:
        raise ValueError("predictions is empty; expected at least one structure")
    if len(preds) != len(refs):
        raise ValueError(
            f"predictions has {len(preds)} structures but references has {len(refs)}; expected equal counts"
        )
    if masks is not None:
        masks = list(_to_numpy(masks)) if hasattr(masks, "shape") else list(masks)
        if len(masks) != len(refs):
            raise ValueError(
                f"masks has {len(masks)} entries but references has {len(refs)}; expected one mask per pair"
            )
    pairs = []
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        x = _calpha(pred, f"predictions[{i}]")
        y = _calpha(ref, f"references[{i}]")
        if len(x) != len(y):
            raise ValueError(
                f"predictions[{i}] has {len(x)} residues but references[{i}] has {len(y)}; "
                "residue correspondence needs equal lengths (use tm_align_scores for unmatched structures)"
            )
        observed = np.ones(len(y), dtype=bool)
        if masks is not None:
            mask = _to_numpy(masks[i])
            if mask.ndim != 1 or len(mask) != len(y):
                raise ValueError(
                    f"masks[{i}] has shape {mask.shape}; expected ({len(y)},), the length of references[{i}]"
                )
            if mask.dtype != bool:
                if not np.isin(mask, (0, 1)).all():
                    shown = np.unique(mask)[:5]
                    raise ValueError(f"masks[{i}] must hold booleans (True = residue observed), got values {shown}")
                mask = mask.astype(bool)
            observed = mask
        if not observed.any():
            raise ValueError(
                f"masks[{i}] marks none of the {len(y)} residues as observed; expected at least one True"
            )
        for name, coords in (("predictions", x), ("references", y)):
            bad = ~np.isfinite(coords[observed]).all(axis=1)
            if bad.any():
                residue = int(np.flatnonzero(observed)[np.argmax(bad)])
                raise ValueError(
                    f"{name}[{i}] has NaN or inf coordinates at residue {residue} ({int(bad.sum())} residues in all); "
                    "expected finite values wherever the mask marks a residue observed"
                )
        pairs.append((x, y, observed))
    return pairs


# ----------------------------------------------------------------------------------------------------------------
# backends: the same code runs on numpy or torch arrays


class _Ops:
    """The few calls where numpy and torch differ."""

    def __init__(self, backend: str, device=None, dtype=None):
        self.name = backend
        self._buffers = {}
        if backend == "numpy":
            self.xp = np
            self.float64 = np.float64
            self.dtype = np.dtype(dtype or np.float64).type
            if self.dtype not in (np.float32, np.float64):
                raise ValueError(f"dtype must be float32 or float64 for backend='numpy', got {dtype!r}")
            self.device = None
        elif backend == "torch":
            try:
                import torch
            except ImportError:
                raise ImportError("backend='torch' needs PyTorch: pip install torch") from None
            self.xp = torch
            self.float64 = torch.float64
            self.device = torch.device(device) if device is not None else torch.device(
                "cuda" if torch.cuda.is_available() else "cpu"
            )
            names = {None: torch.float32, "float32": torch.float32, "float64": torch.float64}
            self.dtype = names.get(dtype, dtype) if not isinstance(dtype, torch.dtype) else dtype
            if self.dtype not in (torch.float32, torch.float64):
                raise ValueError(f"dtype must be float32 or float64 for backend='torch', got {dtype!r}")
        else:
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
        on_cpu = self.device is None or self.device.type == "cpu"
        self.chunk = 1 << 16 if on_cpu else 1 << 24  # seeds x residues per elementwise step: cache-sized on a CPU
        self.fit_chunk = 1 << 12 if on_cpu else 1 << 22  # superpositions solved per step
        self.budget = _ROW_BUDGET if on_cpu else _ROW_BUDGET << 3

    def array(self, value: np.ndarray, dtype=None):
        if self.name == "numpy":
            return np.asarray(value, dtype=dtype)
        return self.xp.as_tensor(value, dtype=dtype, device=self.device)

    def copy(self, value):
        return value.copy() if self.name == "numpy" else value.clone()

    def contiguous(self, value):
        return np.ascontiguousarray(value) if self.name == "numpy" else value.contiguous()

    def numpy(self, value) -> np.ndarray:
        return value if self.name == "numpy" else value.detach().cpu().numpy()

    def cast(self, value, dtype):
        return value.astype(dtype, copy=False) if self.name == "numpy" else value.to(dtype)

    def rows(self, value, order):
        """value[b, order[b]] for every block b."""
        return value[self.arange(order.shape[0])[:, None], order]

    def tm_sum(self, d2):
        """Sum over residues of 1 / (1 + d2), d2 in d0 units; in place where the backend allows it."""
        if self.name == "numpy":
            work = self._scratch(d2, "work")
            np.add(d2, 1.0, out=work)
            np.reciprocal(work, out=work)
            return work.sum(axis=-1)
        work = d2 + 1.0
        return work.reciprocal_().sum(dim=-1)

    def count_below(self, d2, limit):
        """Number of residues with d2 < limit, per row."""
        if self.name == "numpy":
            below = d2 < limit
            return below.view(np.uint8).sum(axis=-1, dtype=self.count_dtype(d2.shape[-1]))
        return (d2 < limit).sum(dim=-1, dtype=self.xp.int32)

    def count_dtype(self, width: int):
        if self.name == "numpy":
            return np.uint16 if width < 65535 else np.uint32
        return self.xp.int32

    def matmul(self, a, b):
        if self.name == "numpy":
            return np.matmul(a, b, out=self._scratch_shape((a.shape[0], a.shape[1], b.shape[2]), a.dtype, "matmul"))
        return a @ b

    def _scratch(self, like, key: str):
        return self._scratch_shape(like.shape, like.dtype, key)

    def _scratch_shape(self, shape, dtype, key: str):
        size = math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = self._buffers[key] = np.empty(max(size, self.chunk), dtype=dtype)
        return buffer[:size].reshape(shape)

    def unique_rows(self, block, bits):
        """Group ids of the rows (block, bits) and the first row of each group."""
        if self.name == "numpy":
            keys = np.concatenate([block.astype("<u4").view(np.uint8).reshape(-1, 4), np.packbits(bits, axis=-1)], 1)
            keys = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
            _, first, group = np.unique(keys, return_index=True, return_inverse=True)
            return group.ravel(), first
        torch = self.xp
        width = bits.shape[1]
        padded = torch.nn.functional.pad(bits.to(torch.uint8), (0, -width % 8)).reshape(len(bits), -1, 8)
        weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=bits.device)
        packed = (padded * weights).sum(dim=-1, dtype=torch.uint8)
        ids = torch.stack([(block >> shift) & 255 for shift in (0, 8, 16, 24)], dim=1).to(torch.uint8)
        _, group = torch.unique(torch.cat([ids, packed], dim=1), dim=0, return_inverse=True)
        order = torch.arange(len(group), device=group.device)
        first = torch.full((int(group.max()) + 1,), len(group), dtype=order.dtype, device=group.device)
        first = first.scatter_reduce(0, group, order, reduce="amin")
        return group, first

    def stable_argsort(self, value, axis: int):
        if self.name == "numpy":
            return np.argsort(value, axis=axis, kind="stable")
        return self.xp.sort(value, dim=axis, stable=True).indices

    def third_smallest(self, value):
        if self.name == "numpy":
            return np.partition(value, 2, axis=-1)[..., 2]
        return self.xp.kthvalue(value, 3, dim=-1).values

    def full(self, shape, value, dtype):
        if self.name == "numpy":
            return np.full(shape, value, dtype=dtype)
        return self.xp.full(shape, value, dtype=dtype, device=self.device)

    def empty(self, shape, dtype):
        if self.name == "numpy":
            return np.empty(shape, dtype=dtype)
        return self.xp.empty(shape, dtype=dtype, device=self.device)

    def arange(self, n: int):
        return np.arange(n) if self.name == "numpy" else self.xp.arange(n, device=self.device)

    def svd(self, value):
        return self.xp.linalg.svd(value)


# ----------------------------------------------------------------------------------------------------------------
# superposition: optimal rotations for many residue sets at once


def _rotations(h, ops):
    """Rotations R maximising sum y.(R x), and that maximum, for covariances h[a][b] = sum x_a y_b.

    h and R are 3x3 nested lists of (M,) arrays: many small problems solved together, component by component,
    with no per-problem linear algebra calls.
    """
    xp = ops.xp
    # The maximum is the top eigenvalue of Horn's 4x4 matrix, s1 + s2 + sign(det h) s3 over the singular values
    # of h: a closed form (eigenvalues of h^T h, trigonometric solution), polished by Newton steps on the
    # characteristic quartic of Horn's matrix (as in the QCP method, Theobald 2005).
    m = [[h[0][a] * h[0][b] + h[1][a] * h[1][b] + h[2][a] * h[2][b] for b in range(3)] for a in range(3)]
    q = (m[0][0] + m[1][1] + m[2][2]) / 3.0
    diag = [m[0][0] - q, m[1][1] - q, m[2][2] - q]
    off = [m[0][1], m[0][2], m[1][2]]
    p = xp.sqrt((sum(d * d for d in diag) + 2.0 * sum(o * o for o in off)) / 6.0)
    det_b = diag[0] * (diag[1] * diag[2] - off[2] ** 2) - off[0] * (off[0] * diag[2] - off[2] * off[1])
    det_b = det_b + off[1] * (off[0] * off[2] - diag[1] * off[1])
    half = xp.clip(det_b / (2.0 * xp.where(p > 0, p, 1.0) ** 3), min=-1.0, max=1.0)
    cos = xp.cos(xp.arccos(half) / 3.0)  # the angle lies in [0, pi/3]
    sin = xp.sqrt(xp.clip(1.0 - cos * cos, min=0.0))
    e1 = q + 2.0 * p * cos
    e3 = q + 2.0 * p * (-0.5 * cos - 0.8660254037844386 * sin)
    e2 = 3.0 * q - e1 - e3
    det_h = _det3(h)
    s1, s2, s3 = (xp.sqrt(xp.clip(e, min=0.0)) for e in (e1, e2, e3))
    lam = s1 + s2 + xp.sign(det_h) * s3
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = h
    horn = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, syy - sxx - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, szz - sxx - syy],
    ]
    c2 = -2.0 * sum(h[a][b] * h[a][b] for a in range(3) for b in range(3))
    c1 = -8.0 * det_h
    c0 = _det4(horn)
    for _ in range(2):  # polish: the closed form loses digits when two singular values nearly coincide
        lam2 = lam * lam
        slope = (4.0 * lam2 + 2.0 * c2) * lam + c1
        step = ((lam2 + c2) * lam2 + c1 * lam + c0) / xp.where(slope > 0, slope, math.inf)
        lam = lam - xp.where(xp.abs(step) < 1e-6 * xp.abs(lam), step, 0.0)  # near a double root: no wild steps
    # the rotation's quaternion spans the null space of horn - lam: a column of the adjugate, the first one
    # unless the rotation is near 180 degrees (small w), where the largest one is taken instead
    a = [[horn[i][j] - lam if i == j else horn[i][j] for j in range(4)] for i in range(4)]
    quat = _adjugate4_column0(a)
    norm2 = sum(c * c for c in quat)
    weak = quat[0] * quat[0] < 0.05 * norm2
    if bool(weak.any()):
        adj = _adjugate4([[entry[weak] for entry in row] for row in a])
        pick = xp.argmax(xp.stack([xp.abs(adj[i][i]) for i in range(4)], axis=-1), axis=-1)
        for i in range(4):
            column = adj[i][3]
            for k in (2, 1, 0):
                column = xp.where(pick == k, adj[i][k], column)
            quat[i] = ops.copy(quat[i])
            quat[i][weak] = column
        norm2 = sum(c * c for c in quat)
    good = (lam > 0) & (norm2 > (1e-6 * lam**3) ** 2)
    inv_norm = 1.0 / xp.sqrt(xp.where(good, norm2, 1.0))
    w, x, y, z = (c * inv_norm for c in quat)
    rot = [
        [w * w + x * x - y * y - z * z, 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
        [2.0 * (x * y + w * z), w * w - x * x + y * y - z * z, 2.0 * (y * z - w * x)],
        [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), w * w - x * x - y * y + z * z],
    ]
    if not bool(good.all()):  # degenerate sets (collinear, one point): SVD with the reflection fix instead
        bad = ~good
        stacked = xp.stack([xp.stack([h[i][j][bad] for j in range(3)], axis=-1) for i in range(3)], axis=1)
        fixed = _kabsch_svd(stacked, ops)
        for i in range(3):
            for j in range(3):
                rot[i][j] = ops.copy(rot[i][j])
                rot[i][j][bad] = fixed[:, i, j]
    lam = sum(rot[i][j] * h[j][i] for i in range(3) for j in range(3))  # the fit's own value, exact for the MSD
    return rot, lam


def _kabsch_svd(h, ops):
    """Kabsch rotations from covariances h (M, 3, 3) by SVD, reflections removed."""
    xp = ops.xp
    u, _, vt = ops.svd(h)
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


def _superpose(stats, ops):
    """Per set of residue sums (M, 18): coefficients (M, 18) giving squared distances after its best fit, and MSD."""
    step = ops.fit_chunk
    if stats.shape[0] <= step:
        return _superpose_part(stats, ops)
    parts = [_superpose_part(stats[lo : lo + step], ops) for lo in range(0, stats.shape[0], step)]
    return ops.xp.concatenate([c for c, _ in parts]), ops.xp.concatenate([m for _, m in parts])


def _superpose_part(stats, ops):
    xp = ops.xp
    st = ops.contiguous(stats.T)  # (18, M): each component contiguous
    n = st[15]
    inv_n = 1.0 / xp.where(n > 0, n, 1.0)
    mx = [st[9 + a] * inv_n for a in range(3)]
    my = [st[12 + a] * inv_n for a in range(3)]
    h = [[st[3 * a + b] - n * mx[a] * my[b] for b in range(3)] for a in range(3)]
    ga = st[16] - n * (mx[0] * mx[0] + mx[1] * mx[1] + mx[2] * mx[2])
    gb = st[17] - n * (my[0] * my[0] + my[1] * my[1] + my[2] * my[2])
    rot, lam = _rotations(h, ops)
    t = [my[a] - rot[a][0] * mx[0] - rot[a][1] * mx[1] - rot[a][2] * mx[2] for a in range(3)]
    rt_t = [rot[0][b] * t[0] + rot[1][b] * t[1] + rot[2][b] * t[2] for b in range(3)]
    ones = xp.ones_like(n)
    coef = [-2.0 * rot[b][a] for a in range(3) for b in range(3)]
    coef += [2.0 * c for c in rt_t] + [-2.0 * c for c in t] + [t[0] * t[0] + t[1] * t[1] + t[2] * t[2], ones, ones]
    msd = xp.clip(ga + gb - 2.0 * lam, min=0.0) * inv_n
    return xp.stack(coef, axis=-1), msd


# ----------------------------------------------------------------------------------------------------------------
# the search


def _features(x: np.ndarray, y: np.ndarray, length: int) -> np.ndarray:
    """Per-residue features (length, 18) of matched coordinates, zero rows past the observed residues."""
    f = np.zeros((length, _N_FEATURES))
    n = len(x)
    f[:n, :9] = (x[:, :, None] * y[:, None, :]).reshape(n, 9)
    f[:n, 9:12] = x
    f[:n, 12:15] = y
    f[:n, 15] = 1.0
    f[:n, 16] = (x * x).sum(axis=1)
    f[:n, 17] = (y * y).sum(axis=1)
    return f


def _seeds(n_aligned: int) -> tuple[np.ndarray, np.ndarray]:
    """Start positions and lengths of every seed fragment, in the reference program's order."""
    starts, lengths = [], []
    for length in fragment_lengths(n_aligned):
        count = n_aligned - length + 1
        starts.append(np.arange(count))
        lengths.append(np.full(count, length))
    return np.concatenate(starts), np.concatenate(lengths)


def _relieve(sel, d2, check, cut, inv_d0sq, long_enough, ops):
    """Selections of rows with fewer than 3 residues under the cut: raised by 0.5 A until 3 pass, as TMscore does.

    d2 holds squared distances in d0 units; check marks the rows to look at. Returns the rows left empty.
    """
    xp = ops.xp
    rows = d2[check]
    scale = (inv_d0sq[:, None] * xp.ones_like(d2[:, :, 0]))[check][:, None]
    base = (cut[:, None] * xp.ones_like(d2[:, :, 0]))[check]
    n_sel = (rows < (base * base)[:, None] * scale).sum(axis=-1)
    need = (n_sel < 3) & (long_enough[:, None] & check)[check]
    if bool(need.any()):
        rows, base, scale = rows[need], base[need], scale[need]
        d3 = xp.sqrt(xp.clip(ops.third_smallest(rows) / scale[:, 0], min=0.0))
        steps = xp.clip(xp.floor((d3 - base) / 0.5) + 1.0, min=1.0)
        for _ in range(3):  # settle rounding at the boundary exactly as the stepping loop would
            lower = xp.clip(steps - 1.0, min=1.0)
            enough = ((rows < ((base + 0.5 * lower) ** 2)[:, None] * scale).sum(axis=-1) >= 3) & (steps > 1.0)
            steps = xp.where(enough, lower, steps)
            short = (rows < ((base + 0.5 * steps) ** 2)[:, None] * scale).sum(axis=-1) < 3
            steps = xp.where(short, steps + 1.0, steps)
        update = rows < ((base + 0.5 * steps) ** 2)[:, None] * scale
        picked = sel[check]
        picked[need] = update
        sel[check] = picked
        n_sel = n_sel.clone() if ops.name == "torch" else n_sel.copy()
        n_sel[need] = update.sum(axis=-1)
    empty = xp.zeros_like(check)
    empty[check] = n_sel == 0
    return empty


def _search(ops, f, g, stats0, valid, inv_d0sq, d0_search, long_enough):
    """Seed-and-refine search over a batch of blocks; returns per-block best score sums and GDT counts.

    f (B, L, 18) and g (B, 18, L): residue features; stats0 (B, S, 18): sums over the seed fragments.
    """
    xp = ops.xp
    n_blocks, width = f.shape[0], f.shape[1]
    best = ops.full((n_blocks,), -1.0, ops.float64)
    gdt = ops.full((n_blocks, len(_GDT_CUTOFFS)), 0.0, ops.float64)
    limits = ops.cast(xp.stack([c * c * inv_d0sq for c in _GDT_CUTOFFS], axis=-1), ops.dtype)
    cuts = (d0_search - 1.0, d0_search + 1.0)  # selection cut-offs (A): after the seed fit, in refinement
    stats, rows_on, current = stats0, valid, None
    for it in range(_N_REFINE + 1):
        n_rows = rows_on.shape[1]
        coef = ops.full((n_blocks, n_rows, _N_FEATURES), 0.0, ops.float64)
        coef[rows_on] = _superpose(stats[rows_on], ops)[0]  # padding rows stay 0: fitted for nothing
        coef = ops.cast(coef * inv_d0sq[:, None, None], ops.dtype)
        cut = cuts[min(it, 1)]
        limit = ops.cast(cut * cut * inv_d0sq, ops.dtype)[:, None, None]
        guard = 1 if it == 0 else 2  # GDT count below 2 A (seed cut >= 3.5 A) or 4 A (refinement cut >= 5.5 A)
        score = ops.empty((n_blocks, n_rows), ops.dtype)  # these three are filled chunk by chunk below
        counts = ops.empty((n_blocks, n_rows, len(_GDT_CUTOFFS)), ops.count_dtype(width))
        sel = ops.empty((n_blocks, n_rows, width), bool if ops.name == "numpy" else xp.bool)
        empty = ops.full((n_blocks, n_rows), False, bool if ops.name == "numpy" else xp.bool)
        step = max(1, ops.chunk // (n_rows * width))
        for lo in range(0, n_blocks, step):  # chunks of blocks small enough to stay in cache
            part = slice(lo, lo + step)
            d2 = ops.matmul(coef[part], g[part])  # squared distances in d0 units, all superpositions at once
            score[part] = ops.tm_sum(d2)
            for k in range(len(_GDT_CUTOFFS)):
                counts[part, :, k] = ops.count_below(d2, limits[part, k][:, None, None])
            sel[part] = d2 < limit[part]
            check = rows_on[part] & (counts[part, :, guard] < 3)
            if bool(check.any()):
                empty[part] = _relieve(sel[part], d2, check, cut[part], inv_d0sq[part], long_enough[part], ops)
        best = xp.maximum(best, xp.amax(xp.where(rows_on, ops.cast(score, ops.float64), -1.0), axis=-1))
        counts = ops.cast(xp.where(rows_on[:, :, None], counts, 0), ops.float64)
        gdt = xp.maximum(gdt, xp.amax(counts, axis=1))
        if it == _N_REFINE:
            break
        converged = (sel == current).all(axis=-1) if current is not None else None
        rows_on = _next_rows(rows_on & ~empty, sel, converged, ops)
        n_on = int(rows_on.sum(axis=-1).max())
        if n_on == 0:
            break
        order = ops.stable_argsort(ops.cast(~rows_on, ops.dtype), axis=1)[:, :n_on]
        rows_on = ops.rows(rows_on, order)
        current = ops.rows(sel, order)
        stats = ops.empty((n_blocks, n_on, _N_FEATURES), ops.float64)
        step = max(1, ops.chunk // (n_on * width))
        for lo in range(0, n_blocks, step):
            part = slice(lo, lo + step)
            stats[part] = ops.cast(ops.matmul(ops.cast(current[part], ops.dtype), f[part]), ops.float64)
    return best, gdt


def _next_rows(rows_on, sel, converged, ops):
    """Rows to refit: one per distinct new selection of a block, none where any row with it has converged.

    A converged row's next fit would repeat its last one, and rows with the same selection have the same future;
    dropping them changes no score (the search is deterministic), only the work.
    """
    xp = ops.xp
    block, row = xp.nonzero(rows_on) if ops.name == "numpy" else xp.nonzero(rows_on, as_tuple=True)
    if len(block) == 0:
        return rows_on
    group, first = ops.unique_rows(block, sel[block, row])
    dead = converged[block, row] if converged is not None else xp.zeros_like(block, dtype=bool)
    dead_group = ops.full((len(first),), False, bool if ops.name == "numpy" else xp.bool)
    dead_group[group[dead]] = True
    keep = first[~dead_group]
    out = xp.zeros_like(rows_on)
    out[block[keep], row[keep]] = True
    return out


def _plan(lengths: list[int], batch_size: int, budget: int) -> list[list[tuple[int, int, int]]]:
    """Batches of blocks (pair, first seed, seed count), pairs of similar length together."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, batch, pairs_in_batch, width, rows = [], [], set(), 0, 0
    for i in order:
        n = lengths[i]
        n_seeds = sum(n - length + 1 for length in fragment_lengths(n))
        per_block = max(1, budget // max(n, 1))
        for first in range(0, n_seeds, per_block):
            count = min(per_block, n_seeds - first)
            new_width = max(width, n)
            new_rows = max(rows, count)
            too_big = batch and (len(batch) + 1) * new_rows * new_width > budget
            if batch and (too_big or (i not in pairs_in_batch and len(pairs_in_batch) >= batch_size)):
                batches.append(batch)
                batch, pairs_in_batch, new_width, new_rows = [], set(), n, count
            batch.append((i, first, count))
            pairs_in_batch.add(i)
            width, rows = new_width, new_rows
    if batch:
        batches.append(batch)
    return batches


def structure_scores(
    predictions,
    references,
    masks=None,
    *,
    backend: str = "numpy",
    device=None,
    batch_size: int = 64,
    dtype=None,
) -> dict[str, np.ndarray]:
    """TM-score, RMSD and GDT-TS of residue-matched structure pairs.

    predictions, references: a sequence of (L_i, 3) C-alpha arrays (or (L_i, 4, 3) / (L_i, 3, 3) backbones in
    N, CA, C(, O) order), or one (N, L, 3) array. masks: optional per pair (L_i,) booleans, True where the
    reference residue is observed; a masked residue scores 0 but still counts in L. NaN coordinates are allowed
    at masked residues only. The TM-score is normalised by the reference length and maximised with the TMscore
    program's search; GDT-TS (0-1) is the mean over 1, 2, 4, 8 A of the best fraction of L within the cut-off
    over the search's superpositions; RMSD is that of the least-squares fit over the observed residues.
    backend: "numpy" or "torch" (on ``device``, by default a GPU when one is present). dtype: float32 or float64
    for the per-residue work (default float64 on numpy, float32 on torch; rotations are always solved in float64).
    batch_size: most pairs searched together (pairs of similar length are batched; long chains are split).
    Returns arrays of shape (N,) under "tm_score", "rmsd" and "gdt_ts".
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    pairs = _prepare(predictions, references, masks)
    ops = _Ops(backend, device, dtype)
    prepared = []
    for x, y, observed in pairs:
        xo, yo = x[observed], y[observed]
        prepared.append((xo - xo.mean(axis=0), yo - yo.mean(axis=0), len(y)))
    n_pairs = len(prepared)
    totals = np.full(n_pairs, -1.0)
    gdt_counts = np.zeros((n_pairs, len(_GDT_CUTOFFS)))
    full = np.stack([_features(x, y, len(x)).sum(axis=0) for x, y, _ in prepared])
    rmsd = np.sqrt(_superpose(full, _Ops("numpy"))[1])
    lengths = [len(x) for x, _, _ in prepared]
    for batch in _plan(lengths, batch_size, ops.budget):
        width = max(lengths[i] for i, _, _ in batch)
        n_rows = max(count for _, _, count in batch)
        f = np.zeros((len(batch), width, _N_FEATURES))
        stats0 = np.zeros((len(batch), n_rows, _N_FEATURES))
        valid = np.zeros((len(batch), n_rows), dtype=bool)
        inv_d0sq, d0_search, n_aligned = (np.empty(len(batch)) for _ in range(3))
        for b, (i, first, count) in enumerate(batch):
            x, y, length = prepared[i]
            f[b] = _features(x, y, width)
            cumulative = np.concatenate([np.zeros((1, _N_FEATURES)), np.cumsum(f[b], axis=0)])
            starts, sizes = _seeds(len(x))
            starts, sizes = starts[first : first + count], sizes[first : first + count]
            stats0[b, :count] = cumulative[starts + sizes] - cumulative[starts]
            valid[b, :count] = True
            inv_d0sq[b] = 1.0 / tm_d0(length) ** 2
            d0_search[b] = tm_d0_search(length)
            n_aligned[b] = len(x)
        g = f.transpose(0, 2, 1).copy()
        g[:, 16][f[:, :, 15] == 0] = _BIG
        best, counts = _search(
            ops,
            ops.array(f, ops.dtype),
            ops.array(g, ops.dtype),
            ops.array(stats0, ops.float64),
            ops.array(valid),
            ops.array(inv_d0sq, ops.float64),
            ops.array(d0_search, ops.float64),
            ops.array(n_aligned > 3),
        )
        best, counts = ops.numpy(best).astype(np.float64), ops.numpy(counts).astype(np.float64)
        index = np.array([i for i, _, _ in batch])
        np.maximum.at(totals, index, best)
        np.maximum.at(gdt_counts, index, counts)
    reference_lengths = np.array([length for _, _, length in prepared], dtype=np.float64)
    return {
        "tm_score": np.minimum(totals / reference_lengths, 1.0),  # rounding can pass 1 by a few ulps
        "rmsd": rmsd,
        "gdt_ts": gdt_counts.mean(axis=1) / reference_lengths,
    }


def tm_score(prediction, reference, mask=None) -> float:
    """TM-score of one residue-matched pair, normalised by the reference length."""
    masks = None if mask is None else [mask]
    return float(structure_scores([prediction], [reference], masks)["tm_score"][0])


def tm_align_scores(prediction, reference, prediction_sequence: str, reference_sequence: str) -> dict:
    """Sequence-independent TM-score through TM-align (tmtools) for structures without residue correspondence.

    Returns "tm_score" (normalised by the reference), "tm_score_prediction" (by the prediction) and "rmsd"
    (over the aligned residues).
    """
    try:
        import tmtools
    except ImportError:
        raise ImportError("tm_align_scores needs tmtools (TM-align, GPLv3): pip install tmtools") from None
    x = _calpha(prediction, "prediction")
    y = _calpha(reference, "reference")
    for name, coords, seq, seq_name in (
        ("prediction", x, prediction_sequence, "prediction_sequence"),
        ("reference", y, reference_sequence, "reference_sequence"),
    ):
        if not isinstance(seq, str) or len(seq) != len(coords):
            shown = len(seq) if isinstance(seq, str) else type(seq).__name__
            raise ValueError(f"{seq_name} must be a string of {len(coords)} residues like {name}, got {shown}")
        if not np.isfinite(coords).all():
            raise ValueError(f"{name} has NaN or inf coordinates; expected finite values")
    result = tmtools.tm_align(np.ascontiguousarray(x), np.ascontiguousarray(y), prediction_sequence, reference_sequence)
    return {
        "tm_score": float(result.tm_norm_chain2),
        "tm_score_prediction": float(result.tm_norm_chain1),
        "rmsd": float(result.rmsd),
    }
