"""The TMscore superposition search over batches of residue-matched pairs: numpy kernels, and torch ones for a GPU.

Every seed fit of every pair in a batch is one row. A round fits all live rows at once (a vectorised 3x3 rotation
solve, float64), scores them against their pair's residues (one small matrix product per pair and a handful of
elementwise passes over cache-sized chunks), reselects, and keeps one row per distinct new selection that has
not converged. Selections are kept as packed bits; squared distances are in A^2.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from multimed_hf.metrics._tm_rotation import rotation_stack

__all__ = ["GDT_CUTOFFS", "N_REFINE", "NumpySearch", "TorchSearch", "prepare_batch"]

N_REFINE = 20  # refinement rounds after each seed fit (n_it in TMscore)
GDT_CUTOFFS = (1.0, 2.0, 4.0, 8.0)  # GDT-TS distance cut-offs in Angstrom
_BIG = 1e30  # |x|^2 + |y|^2 given to padding residues: scores 0, never selected, never counted
_N_STATS = 16  # per residue: x_a*y_b (9), x (3), y (3), 1 -- the sums a superposition needs
_N_COEF = 17  # ... and |x|^2 + |y|^2: squared distances after a fit are coef . features
_FIT_ROWS = 8192  # rotations solved per vectorised step (keeps the temporaries in cache)
_HASH = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


@dataclass
class Batch:
    """Pairs searched together: features g (B, 17, W), per-pair constants and the seed rows (float64, numpy)."""

    g: np.ndarray
    d0sq: np.ndarray  # (B,) d0^2 of the reference length
    cuts: tuple[np.ndarray, np.ndarray]  # (B,) selection cut-offs (A): after a seed fit, in refinement
    n_aligned: np.ndarray  # (B,) observed residues
    seed_stats: np.ndarray  # (16, S) sums over each seed fragment
    seed_block: np.ndarray  # (S,) pair of each seed, ascending


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


def seed_count(n_aligned: int) -> int:
    return sum(n_aligned - length + 1 for length in fragment_lengths(n_aligned))


@functools.lru_cache(maxsize=256)
def _seed_bounds(n: int) -> tuple[np.ndarray, np.ndarray]:
    """First and past-the-end residue of every seed fragment, in the reference program's order (read-only)."""
    lengths = fragment_lengths(n)
    counts = [n - length + 1 for length in lengths]
    first = np.arange(sum(counts)) - np.repeat(np.cumsum([0] + counts[:-1]), counts)
    last = first + np.repeat(lengths, counts)
    first.flags.writeable = last.flags.writeable = False
    return first, last


def residue_stats(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-residue sums (n, 16) of matched coordinates: x_a*y_b (9), x (3), y (3), 1."""
    n = len(x)
    f = np.empty((n, _N_STATS))
    f[:, :9] = (x[:, :, None] * y[:, None, :]).reshape(n, 9)
    f[:, 9:12] = x
    f[:, 12:15] = y
    f[:, 15] = 1.0
    return f


def prepare_batch(pairs, d0sq, d0_search) -> Batch:
    """Features and seeds of pairs (x, y) of centred observed coordinates, x already superposed onto y."""
    width = -(-max(len(x) for x, _ in pairs) // 8) * 8  # whole bytes of bits: rows of booleans count as words
    g = np.zeros((len(pairs), _N_COEF, width))
    g[:, _N_STATS] = _BIG
    stats, blocks = [], []
    for b, (x, y) in enumerate(pairs):
        n = len(x)
        f = residue_stats(x, y)
        g[b, :_N_STATS, :n] = f.T
        g[b, _N_STATS, :n] = (x * x).sum(axis=1) + (y * y).sum(axis=1)
        cumulative = np.zeros((_N_STATS, n + 1))
        np.cumsum(f.T, axis=1, out=cumulative[:, 1:])
        starts, ends = _seed_bounds(n)
        stats.append(cumulative[:, ends] - cumulative[:, starts])
        blocks.append(np.full(len(starts), b))
    d0_search = np.asarray(d0_search, dtype=np.float64)
    return Batch(
        g=g,
        d0sq=np.asarray(d0sq, dtype=np.float64),
        cuts=(d0_search - 1.0, d0_search + 1.0),
        n_aligned=np.array([len(x) for x, _ in pairs]),
        seed_stats=np.concatenate(stats, axis=1),
        seed_block=np.concatenate(blocks),
    )


def superposition_coefficients(st, xp, dtype):
    """Coefficients (17, M) in ``dtype`` of the squared distances after each set's best fit, from its sums (16, M).

    The fits are solved in float64 (float32 loses ill-conditioned ones, see ``rotations``), polished to the last
    digits for float64 work only. Sums and coefficients are (component, set) arrays: a handful of array operations.
    """
    st = st.astype(np.float64, order="C") if xp is np else st.double()
    n = st[15]
    inv_n = 1.0 / xp.where(n > 0, n, 1.0)
    mx, my = st[9:12] * inv_n, st[12:15] * inv_n
    hh = st[:9] * inv_n - (mx[:, None] * my[None, :]).reshape(9, -1)  # h[a][b] = hh[3a + b], per residue
    exact = dtype == (np.float64 if xp is np else xp.float64)
    rot = rotation_stack([[hh[3 * a + b] for b in range(3)] for a in range(3)], polish=exact)  # (3, 3, M)
    t = my - rot[:, 0] * mx[0] - rot[:, 1] * mx[1] - rot[:, 2] * mx[2]  # (3, M)
    parts = [
        xp.swapaxes(-2.0 * rot, 0, 1).reshape(9, -1),
        2.0 * (rot[0] * t[0] + rot[1] * t[1] + rot[2] * t[2]),
        -2.0 * t,
        (t[0] * t[0] + t[1] * t[1] + t[2] * t[2])[None],
        xp.ones_like(n)[None],
    ]
    if xp is np:
        return np.concatenate(parts).astype(dtype, copy=False)
    return xp.cat(parts).to(dtype)


def relieved(rows, base, xp, third_smallest):
    """Selections of rows (k, W) of squared distances whose cut-off base (k,) (A) lets fewer than 3 residues
    through: the cut is raised by 0.5 A until 3 pass, as TMscore does (its stepping loop, in closed form)."""
    d3 = xp.sqrt(xp.clip(third_smallest(rows), min=0.0))
    steps = xp.clip(xp.floor((d3 - base) / 0.5) + 1.0, min=1.0)
    for _ in range(3):  # settle rounding at the boundary exactly as the stepping loop would
        lower = xp.clip(steps - 1.0, min=1.0)
        enough = ((rows < ((base + 0.5 * lower) ** 2)[:, None]).sum(axis=-1) >= 3) & (steps > 1.0)
        steps = xp.where(enough, lower, steps)
        short = (rows < ((base + 0.5 * steps) ** 2)[:, None]).sum(axis=-1) < 3
        steps = xp.where(short, steps + 1.0, steps)
    return rows < ((base + 0.5 * steps) ** 2)[:, None]


class _Search:
    """The search loop, shared by the backends; subclasses hold the array work."""

    def __call__(self, batch: Batch):
        state = self.start(batch)
        stats, block, current = state.seed_stats, state.seed_block, None
        for it in range(N_REFINE + 1):
            coef = self.coefficients(stats)
            packed, n_sel = self.evaluate(state, coef, block, state.cuts[min(it, 1)])
            if it == N_REFINE:
                break
            keep = self.next_rows(block, packed, n_sel, current)
            if len(keep) == 0:
                break
            block, current = block[keep], packed[keep]
            stats = self.selection_stats(state, current, block)
        return self.finish(state)


class NumpySearch(_Search):
    """numpy kernels: per-pair matrix products into cache-sized chunks, bits packed with numpy."""

    max_rows = 1 << 17  # seed fits in one batch: bounds its memory (about 0.5 kB a row), not its speed

    def __init__(self, dtype=np.float64, chunk: int = 1 << 17):
        self.dtype = np.dtype(dtype)
        self.chunk = chunk
        self._buffers = {}

    def _buffer(self, key, shape, dtype):
        size = math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = self._buffers[key] = np.empty(max(size, self.chunk), dtype=dtype)
        return buffer[:size].reshape(shape)

    def start(self, batch: Batch):
        n_blocks, _, width = batch.g.shape
        batch.gx = batch.g.astype(self.dtype)
        batch.width = width
        batch.n_bytes = 8 * -(-width // 64)  # packed bytes per row, in whole uint64 words
        batch.best = np.full(n_blocks, -1.0)
        batch.gdt = np.zeros((n_blocks, len(GDT_CUTOFFS)))
        batch.gdt_factor = 1.0 + np.square(GDT_CUTOFFS)[None, :] / batch.d0sq[:, None]
        batch.long_enough = batch.n_aligned > 3
        batch.ones = np.ones(width, dtype=self.dtype)
        return batch

    def finish(self, batch: Batch):
        return batch.best, batch.gdt

    def coefficients(self, stats):
        """Coefficients (17, M) from sums (16, M), solved in cache-sized pieces."""
        size = stats.shape[1]
        if size <= _FIT_ROWS:
            return superposition_coefficients(stats, np, self.dtype)
        out = np.empty((_N_COEF, size), dtype=self.dtype)
        for lo in range(0, size, _FIT_ROWS):
            out[:, lo : lo + _FIT_ROWS] = superposition_coefficients(stats[:, lo : lo + _FIT_ROWS], np, self.dtype)
        return out

    def _chunks(self, block, width):
        """Row ranges [lo, hi) of at most chunk elements, and the pair segments inside each."""
        step = max(1, self.chunk // width)
        change = np.flatnonzero(block[1:] != block[:-1]) + 1
        bounds = np.concatenate([[0], change, [len(block)]])
        for lo in range(0, len(block), step):
            hi = min(len(block), lo + step)
            first, last = np.searchsorted(bounds, lo, side="right") - 1, np.searchsorted(bounds, hi, side="left")
            edges = np.clip(bounds[first : last + 1], lo, hi)
            yield lo, hi, edges

    def evaluate(self, batch: Batch, coef, block, cut):
        """Scores (into batch.best, batch.gdt) and packed new selections of every row.

        The products give u = (d^2 + d0^2) / (cut^2 + d0^2) per residue: the selection is u < 1, and the row's
        TM sum (of 1 / (1 + d^2 / d0^2)) is d0^2 / (cut^2 + d0^2) * sum(1 / u): two passes and a compare.
        Row sums and counts are matrix-vector products (a reduction along rows is slow in numpy).
        """
        width, dtype = batch.width, self.dtype
        scale = 1.0 / (np.square(cut) + batch.d0sq)  # per pair
        weight = batch.d0sq * scale
        thresholds = (np.square(GDT_CUTOFFS)[None, :] + batch.d0sq[:, None]) * scale[:, None]  # GDT cut-offs in u
        inside = np.asarray(GDT_CUTOFFS)[None, :] < cut[:, None]  # cut-offs under the selection cut-off
        coef *= scale[block].astype(dtype)  # (17, M), ours to change
        coef[15] += weight[block].astype(dtype)
        n_rows, n_words = len(block), batch.n_bytes // 8
        packed = np.empty((n_rows, batch.n_bytes), dtype=np.uint8)
        n_sel = np.empty(n_rows, dtype=np.int64)
        one = dtype.type(1.0)
        step = max(1, self.chunk // width)
        below = self._buffer("below", (min(n_rows, step), 8 * batch.n_bytes), np.bool_)
        below[:, width:] = False  # padding bits: never selected
        for lo, hi, edges in self._chunks(block, width):
            n = hi - lo
            u = self._buffer("u", (n, width), dtype)
            for s, e in zip(edges[:-1], edges[1:]):
                np.matmul(coef[:, s:e].T, batch.gx[block[s]], out=u[s - lo : e - lo])
            work = self._buffer("work", (n, width), dtype)
            np.reciprocal(u, out=work)
            sums = np.matmul(work, batch.ones)
            np.less(u, one, out=below[:n, :width])
            bits = np.packbits(below[:n], axis=-1)
            words = np.bitwise_count(bits.view(np.uint64))
            counts = words[:, 0].astype(np.int64)
            for j in range(1, n_words):
                counts += words[:, j]
            short = np.flatnonzero((counts < 3) & batch.long_enough[block[lo:hi]])
            if len(short):
                rows = lo + short
                pairs = block[rows]
                d2 = u[short] / scale[pairs, None] - batch.d0sq[pairs, None]
                below[short, :width] = relieved(d2, cut[pairs], np, _third_smallest_np)
                bits[short] = np.packbits(below[short], axis=-1)
                counts[short] = below[short].sum(axis=-1)
            packed[lo:hi] = bits
            n_sel[lo:hi] = counts
            starts = edges[:-1] - lo
            ids = block[edges[:-1]]
            top = np.maximum.reduceat(sums, starts) * weight[ids]  # best TM sum of each pair in the chunk
            batch.best[ids] = np.maximum(batch.best[ids], top)
            self._gdt(batch, u, top, np.maximum.reduceat(counts, starts), starts, edges[1:] - lo, ids,
                      thresholds[ids].astype(dtype), inside[ids])
        return packed, n_sel

    def _gdt(self, batch: Batch, u, top, top_sel, starts, ends, ids, thresholds, inside):
        """Best GDT counts per pair, counting only the pairs and cut-offs where a row could raise the maximum.

        A row's count below c is at most its TM sum times 1 + c^2 / d0^2 (every residue closer than c adds at
        least 1 / (1 + c^2 / d0^2) to it), at most its selection's size when c is under the selection cut-off,
        and at most the pair's residues; where that bound of a pair's best row in the chunk cannot pass the
        pair's best count so far, counting could not raise the maximum.
        """
        bound = np.minimum(top[:, None] * batch.gdt_factor[ids] * (1.0 + 1e-4) + 1e-3, batch.n_aligned[ids, None])
        bound = np.where(inside, np.minimum(bound, top_sel[:, None]), bound)
        need = bound > batch.gdt[ids]
        if not need.any():
            return
        flags = self._buffer("flags", u.shape, np.bool_)
        for k in np.flatnonzero(need.any(axis=0)):
            pairs = np.flatnonzero(need[:, k])
            for j in pairs:  # a scalar cut-off per pair: the fastest compare
                np.less(u[starts[j] : ends[j]], thresholds[j, k], out=flags[starts[j] : ends[j]])
            first, last = pairs[0], pairs[-1]
            lo, hi = starts[first], ends[last]  # pairs in between that were not compared are dropped below
            counts = _row_counts(flags[lo:hi], batch.ones)
            best = np.maximum.reduceat(counts, starts[first : last + 1] - lo)[pairs - first]
            batch.gdt[ids[pairs], k] = np.maximum(batch.gdt[ids[pairs], k], best)

    def next_rows(self, block, packed, n_sel, current):
        """Rows to refit: one per distinct new selection of a pair, none where a row with it has converged.

        A converged row's next fit would repeat its last one, and rows with the same selection have the same
        future; dropping them changes no score (the search is deterministic), only the work.
        """
        live = np.flatnonzero(n_sel > 0)
        if len(live) == 0:
            return live
        words = packed[live].view(np.uint64)
        blocks = block[live]
        key = blocks.astype(np.uint64) * np.uint64(_HASH[0])
        for j in range(words.shape[1]):  # multiply, then fold the high bits down: a product alone mixes upwards
            key = (key ^ words[:, j]) * np.uint64(_HASH[1 + j % 2])
            key ^= key >> np.uint64(29)
        _, first, group = np.unique(key, return_index=True, return_inverse=True)
        same = first[group]
        if not (np.array_equal(words, words[same]) and np.array_equal(blocks, blocks[same])):  # a hash collision
            keys = np.concatenate([blocks.astype("<u8").view(np.uint8).reshape(-1, 8), packed[live]], axis=1)
            keys = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
            _, first, group = np.unique(keys, return_index=True, return_inverse=True)
        dead = np.zeros(len(first), dtype=bool)
        if current is not None:
            converged = (packed[live] == current[live]).all(axis=1)
            dead[group[converged]] = True
        return np.sort(live[first[~dead]])

    def selection_stats(self, batch: Batch, packed, block):
        """Sums (16, M) over each row's selection."""
        width = batch.width
        out = np.empty((len(block), _N_STATS), dtype=self.dtype)
        for lo, hi, edges in self._chunks(block, width):
            mask = self._buffer("mask", (hi - lo, width), self.dtype)
            np.copyto(mask, np.unpackbits(packed[lo:hi], axis=1, count=width))
            for s, e in zip(edges[:-1], edges[1:]):
                np.matmul(mask[s - lo : e - lo], batch.gx[block[s], :_N_STATS].T, out=out[s:e])
        return out.T


def _row_counts(below, ones=None):
    """True values per row of a (n, W) boolean array, W a multiple of 8: as a matrix-vector product of the rows
    made float (``ones``: W ones) on short rows, summed as bytes packed in words on long ones (or without ones)."""
    n, width = below.shape
    if ones is not None and width < 256:  # where numpy's per-row reduction overhead dominates
        return np.matmul(below.view(np.int8).astype(ones.dtype), ones)
    words = below.view(np.uint64)
    total = np.zeros(n, dtype=np.int64)
    for lo in range(0, width // 8, 255):  # a byte lane of a word sum holds at most 255
        lanes = words[:, lo : lo + 255].sum(axis=-1, dtype=np.uint64)
        total += lanes.view(np.uint8).reshape(n, 8).sum(axis=-1, dtype=np.int64)
    return total


def _third_smallest_np(rows):
    return np.partition(rows, 2, axis=-1)[:, 2]


class TorchSearch(_Search):
    """torch kernels for a GPU: each round's work on the device in a few large steps, with few host syncs.

    Rows stay sorted by pair. The distance and selection-sum products run on a per-pair padded layout (rows of a
    pair in slots 0..R-1 of its block, R the most rows a pair of the chunk has): one batched product against the
    pairs' features, with no per-row copy of them, over chunks of pairs of about ``chunk`` (rows x residues)
    elements, each cut to the width of its longest pair (pairs of any lengths share a batch: fewer rounds, each
    over more rows, is what a GPU wants; sorted by length, a chunk's pairs have similar lengths). The distinct new
    selections are found by a hash, a stable sort and an exact compare of neighbours, all on the device; the
    host reads back each round's row counts per pair, the rows kept, and which rows need a raised cut-off.
    """

    def __init__(self, device, dtype, chunk: int | None = None, compile_solve: bool = False):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = dtype
        on_cpu = self.device.type == "cpu"
        self.chunk = chunk or (1 << 17 if on_cpu else 1 << 28)  # elements of a chunk's (rows, residues) arrays
        self.max_rows = 1 << 17 if on_cpu else 1 << 21  # a GPU wants every pair of a 1,024-pair run at once
        self.width_slack = math.inf  # batches mix lengths: each chunk of pairs has its own width
        self.batch_size = 1024  # pairs searched together unless told: every round serves all of them
        self._coefficients = superposition_coefficients
        if compile_solve:  # opt-in: fuses the rotation solve's few hundred elementwise steps
            self._coefficients = torch.compile(superposition_coefficients, dynamic=True)
        self._layout_of = None
        self._weights = {}

    def _tensor(self, value, dtype=None):
        return self.torch.as_tensor(value, dtype=dtype, device=self.device)

    def start(self, batch: Batch):
        torch = self.torch
        n_blocks, _, width = batch.g.shape
        batch.gx = self._tensor(batch.g, self.dtype)  # (B, 17, W)
        batch.gs = batch.gx[:, :_N_STATS].transpose(1, 2).contiguous()  # (B, W, 16): selection sums
        batch.width = width
        batch.n_words = -(-width // 64)
        batch.d0sq_t = self._tensor(batch.d0sq, torch.float64)
        batch.cuts = tuple(self._tensor(c, torch.float64) for c in batch.cuts)
        batch.long_enough_t = self._tensor(batch.n_aligned > 3)
        batch.best = torch.full((n_blocks,), -1.0, dtype=torch.float64, device=self.device)
        batch.gdt = torch.zeros((n_blocks, len(GDT_CUTOFFS)), dtype=torch.float64, device=self.device)
        batch.cut2 = self._tensor(np.square(GDT_CUTOFFS), self.dtype)
        batch.seed_stats = self._tensor(batch.seed_stats.T, torch.float64)  # (S, 16): one row per set here
        batch.seed_block = self._tensor(batch.seed_block)
        batch.shifts = torch.arange(8, device=self.device, dtype=torch.uint8)
        batch.bit_weights = torch.bitwise_left_shift(torch.ones_like(batch.shifts), batch.shifts)
        batch.widths = -(-np.maximum(batch.n_aligned, 1) // 8) * 8  # (B,) each pair's residues, in whole bytes
        self._layout_of = None
        return batch

    def finish(self, batch: Batch):
        return batch.best.cpu().numpy(), batch.gdt.cpu().numpy()

    def coefficients(self, stats):
        step = _FIT_ROWS if self.device.type == "cpu" else 1 << 22
        parts = [self._coefficients(stats[lo : lo + step].T, self.torch, self.dtype).T
                 for lo in range(0, len(stats), step)]
        return parts[0] if len(parts) == 1 else self.torch.cat(parts)

    def _layout(self, batch: Batch, block):
        """Chunks of the rows (sorted by pair) for the padded products: (lo, hi, p0, p1, rows_max, width, slot),
        rows lo..hi being those of pairs p0..p1, width their longest pair's, and slot each row's place in the
        (p1 - p0, rows_max) padded layout. The round's one read-back: its row count per pair."""
        if self._layout_of is not None and self._layout_of[0] is block:
            return self._layout_of[1]
        torch = self.torch
        n_blocks = batch.gx.shape[0]
        counts = torch.bincount(block, minlength=n_blocks)
        host = counts.cpu().numpy()
        starts = np.zeros(n_blocks + 1, dtype=np.int64)
        np.cumsum(host, out=starts[1:])
        size = host * batch.widths  # elements of each pair's flat (rows, residues) arrays
        window = (np.cumsum(size) - size) // self.chunk  # pairs starting in the same window of chunk elements
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(window)) + 1, [n_blocks]])
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(len(block), device=self.device) - first[block]  # a row's place among its pair's
        chunks = []
        for p0, p1 in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            lo, hi = int(starts[p0]), int(starts[p1])
            if hi > lo:
                rows_max = int(host[p0:p1].max())
                slot = local[lo:hi] + (block[lo:hi] - p0) * rows_max
                chunks.append((lo, hi, p0, p1, rows_max, int(batch.widths[p0:p1].max()), slot))
        self._layout_of = (block, chunks)
        return chunks

    def _padded(self, values, slot, n_pairs, rows_max):
        """values (n, k) placed at their slots of a zeroed (n_pairs, rows_max, k) array."""
        out = values.new_zeros((n_pairs * rows_max, values.shape[1]))
        out[slot] = values
        return out.view(n_pairs, rows_max, -1)

    def _pack(self, below, weights):
        torch, n = self.torch, below.shape[0]
        padded = torch.nn.functional.pad(below.to(torch.uint8), (0, -below.shape[1] % 64))
        packed = (padded.view(n, -1, 8) * weights).sum(dim=-1, dtype=torch.uint8)
        return packed.view(torch.int64)

    def _unpack(self, words, width, shifts):
        torch, n = self.torch, words.shape[0]
        packed = words.contiguous().view(torch.uint8)
        bits = torch.bitwise_and(torch.bitwise_right_shift(packed[:, :, None], shifts), 1)
        return bits.view(n, -1)[:, :width]

    def evaluate(self, batch: Batch, coef, block, cut):
        torch = self.torch
        chunks = self._layout(batch, block)
        d0sq_row = batch.d0sq_t[block]
        limit_row = (cut * cut)[block].to(self.dtype)
        packed = torch.zeros((len(block), batch.n_words), dtype=torch.int64, device=self.device)
        n_sel = torch.empty(len(block), dtype=torch.int64, device=self.device)
        for lo, hi, p0, p1, rows_max, width, slot in chunks:
            rows = block[lo:hi]
            padded = self._padded(coef[lo:hi], slot, p1 - p0, rows_max)
            d2 = torch.bmm(padded, batch.gx[p0:p1, :, :width]).view(-1, width)[slot]  # (n, width)
            score = (d2 + d0sq_row[lo:hi, None].to(self.dtype)).reciprocal_().sum(dim=-1).double() * d0sq_row[lo:hi]
            below = d2 < limit_row[lo:hi, None]
            counts = below.sum(dim=-1)
            short = torch.nonzero((counts < 3) & batch.long_enough_t[rows]).squeeze(1)
            if len(short):
                chosen = relieved(d2[short], cut[rows[short]], torch,
                                  lambda r: torch.kthvalue(r, 3, dim=-1).values)
                below[short] = chosen
                counts[short] = chosen.sum(dim=-1)
            words = self._pack(below, batch.bit_weights)  # the words past a pair's residues stay 0
            packed[lo:hi, : words.shape[1]] = words
            n_sel[lo:hi] = counts
            batch.best.scatter_reduce_(0, rows, score, reduce="amax")
            gdt = (d2[:, :, None] < batch.cut2).sum(dim=1).double()
            batch.gdt.scatter_reduce_(0, rows[:, None].expand(-1, len(GDT_CUTOFFS)), gdt, reduce="amax")
        return packed, n_sel

    def next_rows(self, block, packed, n_sel, current):
        """Rows to refit (ascending): the first row of each distinct (pair, new selection), none where a row with
        it has converged, none with an empty selection.

        Rows are grouped by a stable sort on a hash of (pair, selection) and an exact compare of neighbours in
        that order. Equal rows always share a hash, so they are neighbours unless a colliding different row
        falls between them: then a selection can be kept twice, or kept though another row with it converged.
        Either only repeats work and changes no score: rows with the same selection have the same future, and a
        converged selection's future repeats the fit and scores already taken (tests/test_tm_search_torch.py).
        """
        torch = self.torch
        key = block.to(torch.int64) * _signed(_HASH[0]) + (packed * self._hash_weights(packed.shape[1])).sum(dim=1)
        order = torch.sort(key, stable=True).indices
        words, blocks = packed[order], block[order]
        new = torch.ones(len(order), dtype=torch.bool, device=self.device)
        new[1:] = (words[1:] != words[:-1]).any(dim=1) | (blocks[1:] != blocks[:-1])
        keep = new & (n_sel[order] > 0)
        if current is not None:
            group = torch.cumsum(new, 0) - 1
            converged = (words == current[order]).all(dim=1)
            dead = torch.zeros(len(order), dtype=torch.int64, device=self.device)
            dead.scatter_add_(0, group, converged.to(torch.int64))
            keep &= dead[group] == 0
        chosen = torch.zeros(len(order), dtype=torch.bool, device=self.device)
        chosen[order] = keep
        return torch.nonzero(chosen).squeeze(1)

    def _hash_weights(self, n_words):
        """Odd multipliers (n_words,) of the selection words in the linear (wrapping int64) hash of next_rows."""
        if n_words not in self._weights:
            values = [_signed(_HASH[1 + j % 2] * (2 * j + 1) % (1 << 64)) for j in range(n_words)]
            self._weights[n_words] = self._tensor(values, self.torch.int64)
        return self._weights[n_words]

    def selection_stats(self, batch: Batch, packed, block):
        torch = self.torch
        chunks = self._layout(batch, block)
        out = torch.empty((len(block), _N_STATS), dtype=torch.float64, device=self.device)
        for lo, hi, p0, p1, rows_max, width, slot in chunks:
            bits = self._unpack(packed[lo:hi, : -(-width // 64)], width, batch.shifts).to(self.dtype)
            mask = self._padded(bits, slot, p1 - p0, rows_max)
            out[lo:hi] = torch.bmm(mask, batch.gs[p0:p1, :width]).view(-1, _N_STATS)[slot].double()
        return out


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 torch multiplies with (wrapping)."""
    return value - (1 << 64) if value >= 1 << 63 else value
