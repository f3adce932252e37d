"""Protein structure metrics for residue-matched pairs: TM-score (TMscore's search), RMSD and GDT-TS."""

from __future__ import annotations

import numpy as np

from multimed_hf.metrics._tm_rotation import rotations
from multimed_hf.metrics._tm_search import (
    GDT_CUTOFFS,
    NumpySearch,
    TorchSearch,
    fragment_lengths,
    prepare_batch,
    seed_count,
)
from multimed_hf.metrics._validation import to_numpy

__all__ = [
    "fragment_lengths",
    "structure_scores",
    "tm_align_scores",
    "tm_d0",
    "tm_d0_search",
    "tm_score",
]


def tm_d0(length: float) -> float:
    """TM-score distance scale d0 for a reference of ``length`` residues (0.5 A floor, 0.5 A for L <= 21)."""
    d0 = 1.24 * (length - 15.0) ** (1.0 / 3.0) - 1.8 if length > 21 else 0.5
    return max(d0, 0.5)


def tm_d0_search(length: float) -> float:
    """Distance scale of the superposition search: d0 clamped to [4.5, 8] A."""
    return min(max(tm_d0(length), 4.5), 8.0)


# ----------------------------------------------------------------------------------------------------------------
# input checks


def _to_numpy(value) -> np.ndarray:
    """A coordinate array or mask as NumPy (torch tensors on any device, bfloat16 ones as float32)."""
    return to_numpy(value, "coordinates")


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
            if np.isfinite(coords if masks is None else coords[observed]).all():  # one reduction when all is well
                continue
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
# the search, batched


def _numba_search():
    """The compiled search (``_tm_numba.search_pairs``), or None where numba cannot be imported."""
    try:
        from multimed_hf.metrics._tm_numba import search_pairs
    except ImportError:
        return None
    return search_pairs


def _is_float64(dtype) -> bool:
    if dtype is None:
        return True
    if hasattr(dtype, "is_floating_point"):  # a torch dtype
        return str(dtype) == "torch.float64"
    try:
        return np.dtype(dtype) == np.float64
    except TypeError:
        return False


def _use_numba(backend: str, dtype) -> bool:
    """Whether the compiled search runs: backend "numba", or "auto" with numba importable and a float64 dtype."""
    if backend == "auto":
        return _is_float64(dtype) and _numba_search() is not None
    if backend != "numba":
        return False
    if not _is_float64(dtype):
        raise ValueError(f"dtype must be float64 (or None) for backend='numba', which works in float64; got {dtype!r}")
    if _numba_search() is None:
        raise ImportError("backend='numba' needs numba: pip install numba (or the multimed_hf[fast] extra)")
    return True


def _kernel(backend: str, device, dtype):
    """The search kernels for a backend, device and dtype (torch on a CPU runs the numpy kernels: faster there)."""
    if backend == "auto":
        backend = "numpy"
    if backend == "numpy":
        np_dtype = np.dtype(dtype or np.float64)
        if np_dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64 for backend='numpy', got {dtype!r}")
        return NumpySearch(np_dtype)
    if backend != "torch":
        raise ValueError(f"backend must be 'auto', 'numba', 'numpy' or 'torch', got {backend!r}")
    try:
        import torch
    except ImportError:
        raise ImportError("backend='torch' needs PyTorch: pip install torch") from None
    names = {None: torch.float32, "float32": torch.float32, "float64": torch.float64,
             np.float32: torch.float32, np.float64: torch.float64}
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else names.get(dtype)
    if torch_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be float32 or float64 for backend='torch', got {dtype!r}")
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    if device.type == "cpu" and not _TORCH_KERNELS_ON_CPU:
        return NumpySearch(np.float32 if torch_dtype == torch.float32 else np.float64)
    return TorchSearch(device, torch_dtype, compile_solve=_TORCH_COMPILE)


#: Run the torch kernels on a CPU too (tests use it to check the GPU code path where no GPU is present).
_TORCH_KERNELS_ON_CPU = False
#: Compile the torch kernels' rotation solve with torch.compile (opt-in, being measured: the first call of each
#: dtype compiles for tens of seconds; the solve's few hundred elementwise launches per round become a few).
_TORCH_COMPILE = False
_WIDTH_SLACK = 1.2  # a batch grows while its padded width costs at most 20% more than its pairs' lengths


def _plan(lengths: list[int], batch_size: int, max_rows: int, slack: float = _WIDTH_SLACK) -> list[list[int]]:
    """Batches of pair indices, pairs of similar length together, at most max_rows seed fits in one; a batch grows
    while its padded width costs at most slack times its pairs' lengths (inf: any lengths together)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, batch, total, rows = [], [], 0, 0
    for i in order:
        n = lengths[i]
        seeds = seed_count(n)
        full = len(batch) >= batch_size or rows + seeds > max_rows
        if batch and (full or n * (len(batch) + 1) > slack * (total + n)):
            batches.append(batch)
            batch, total, rows = [], 0, 0
        batch.append(i)
        total += n
        rows += seeds
    if batch:
        batches.append(batch)
    return batches


def _global_fits(prepared) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rotation (N, 3, 3) and MSD (N,) of every pair over all its observed residues."""
    cov = np.stack([x.T @ y for x, y, _ in prepared])  # sum of x_a y_b: the coordinates are centred
    rot, value = rotations([[cov[:, a, b] for b in range(3)] for a in range(3)])
    norms = np.array([np.vdot(x, x) + np.vdot(y, y) for x, y, _ in prepared])
    counts = np.array([len(x) for x, _, _ in prepared], dtype=np.float64)
    msd = np.clip(norms - 2.0 * value, 0.0, None) / counts
    return np.stack([np.stack(row, axis=-1) for row in rot], axis=1), msd


def structure_scores(
    predictions,
    references,
    masks=None,
    *,
    backend: str = "auto",
    device=None,
    batch_size: int | None = None,
    dtype=None,
) -> dict[str, np.ndarray]:
    """TM-score, RMSD and GDT-TS of residue-matched structure pairs.

    predictions, references: a sequence of (L_i, 3) C-alpha arrays (or (L_i, 4, 3) / (L_i, 3, 3) backbones in
    N, CA, C(, O) order), or one (N, L, 3) array. masks: optional per pair (L_i,) booleans, True where the
    residue is scored; a masked residue (not predicted) scores 0 but still counts in L. A residue the reference
    structure lacks (unresolved) belongs in neither input: TMscore reads only the resolved ones. NaN coordinates
    are allowed at masked residues only. The TM-score is normalised by the reference length and maximised with the TMscore
    program's search; GDT-TS (0-1) is the mean over 1, 2, 4, 8 A of the best fraction of L within the cut-off
    over the search's superpositions; RMSD is that of the least-squares fit over the observed residues.
    backend: "auto" (the default: "numba" where numba is installed and dtype is float64 or None, else "numpy"),
    "numba" (the search compiled, float64 throughout: the fastest on a CPU, equal to the numpy float64 path to
    rounding), "numpy", or "torch" (on ``device``, by default a GPU when one is present; on a CPU device the torch
    backend runs the numpy kernels, which are faster there). dtype: float32 or float64 for the per-residue work
    (default float64 on numpy, the exact path; float32 on torch, within 1e-4 of it; numba takes float64 only;
    rotations are always solved in float64). batch_size: most pairs searched together on numpy and torch (default
    64 on numpy, where pairs of similar length are batched, and 1,024 on the torch kernels, which take pairs of
    any lengths together; numba searches one pair at a time, all in one call).
    Returns arrays of shape (N,) under "tm_score", "rmsd" and "gdt_ts".
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    pairs = _prepare(predictions, references, masks)
    if _use_numba(backend, dtype):
        return _numba_scores(pairs)
    kernel = _kernel(backend, device, dtype)
    prepared = []
    for x, y, observed in pairs:
        xo, yo = x[observed], y[observed]
        prepared.append((xo - xo.mean(axis=0), yo - yo.mean(axis=0), len(y)))
    rot, msd = _global_fits(prepared)
    # superpose each prediction onto its reference first: the search's fits are then near the identity, where
    # the rotation solve is cheapest and float32 distances lose least
    prepared = [(x @ r.T, y, length) for (x, y, length), r in zip(prepared, rot)]
    n_pairs = len(prepared)
    totals = np.full(n_pairs, -1.0)
    gdt_counts = np.zeros((n_pairs, len(GDT_CUTOFFS)))
    slack = getattr(kernel, "width_slack", _WIDTH_SLACK)
    batch_size = batch_size or getattr(kernel, "batch_size", 64)
    for index in _plan([len(x) for x, _, _ in prepared], batch_size, kernel.max_rows, slack):
        chosen = [prepared[i] for i in index]
        lengths = [length for _, _, length in chosen]
        batch = prepare_batch(
            [(x, y) for x, y, _ in chosen],
            [tm_d0(length) ** 2 for length in lengths],
            [tm_d0_search(length) for length in lengths],
        )
        best, counts = kernel(batch)
        totals[index] = best
        gdt_counts[index] = counts
    reference_lengths = np.array([length for _, _, length in prepared], dtype=np.float64)
    return {
        "tm_score": np.minimum(totals / reference_lengths, 1.0),  # rounding can pass 1 by a few ulps
        "rmsd": np.sqrt(msd),
        "gdt_ts": gdt_counts.mean(axis=1) / reference_lengths,
    }


def _numba_scores(pairs) -> dict[str, np.ndarray]:
    """structure_scores through the compiled search: every pair's observed residues in one call."""
    observed = [(x, y) if keep.all() else (x[keep], y[keep]) for x, y, keep in pairs]
    lengths = np.array([len(y) for _, y, _ in pairs], dtype=np.float64)
    offsets = np.zeros(len(pairs) + 1, dtype=np.int64)
    np.cumsum([len(x) for x, _ in observed], out=offsets[1:])
    best, gdt_counts, msd = _numba_search()(
        np.concatenate([x for x, _ in observed]),
        np.concatenate([y for _, y in observed]),
        offsets,
        np.array([tm_d0(length) ** 2 for length in lengths]),
        np.array([tm_d0_search(length) for length in lengths]),
    )
    return {
        "tm_score": np.minimum(best / lengths, 1.0),
        "rmsd": np.sqrt(msd),
        "gdt_ts": gdt_counts.mean(axis=1) / lengths,
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
