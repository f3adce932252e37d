"""Input checks shared by the metric functions: every error names the argument, what was seen and what was expected."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "as_float_array",
    "as_labels",
    "as_strings",
    "check_same_length",
    "drop_ignored",
    "tidy_labels",
    "to_numpy",
]


def to_numpy(value, name: str = "value") -> np.ndarray:
    """``value`` as a NumPy array; torch tensors (on any device) are detached and copied to the CPU."""
    if value is None:
        raise TypeError(f"{name}: got None; expected an array")
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    try:
        return np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{name}: could not be read as an array ({err}); expected a rectangular array") from None


def _describe(array: np.ndarray) -> str:
    return f"shape {array.shape}, dtype {array.dtype}"


def as_float_array(name: str, value, ndim: tuple[int, ...] = (1,), *, allow_nan: bool = False) -> np.ndarray:
    """``value`` as a finite float64 array with one of the allowed ``ndim``; NaN passes only with ``allow_nan``."""
    if value is None:
        raise TypeError(f"{name}: got None; expected an array of numbers")
    array = to_numpy(value, name)
    if array.dtype == object:
        if allow_nan:  # None marks a missing value where NaN is allowed (e.g. a null in an Arrow list)
            array = np.where(np.frompyfunc(lambda x: x is None, 1, 1)(array).astype(bool), np.nan, array)
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: holds values that are not numbers; expected numbers") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name}: expected numbers; got an array of dtype {array.dtype}")
    if array.ndim not in ndim:
        wanted = " or ".join(f"{n}-D" for n in ndim)
        raise ValueError(f"{name}: expected a {wanted} array; got {array.ndim}-D ({_describe(array)})")
    if array.size == 0:
        raise ValueError(f"{name}: is empty ({_describe(array)}); expected at least one value")
    array = array.astype(np.float64, copy=False)
    bad = np.isinf(array) if allow_nan else ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        where = where if len(where) > 1 else where[0]
        what = "inf" if allow_nan else "NaN or inf"
        raise ValueError(
            f"{name}: {int(bad.sum())} value(s) are {what}, the first at index {where}; "
            "expected finite numbers"
        )
    return array


def _is_missing(item) -> bool:
    return item is None or (isinstance(item, (float, np.floating)) and np.isnan(item))


def as_labels(name: str, value) -> np.ndarray:
    """``value`` as a 1-D array of class labels (integers, booleans or strings); ``None``/NaN stay as missing."""
    if value is None:
        raise TypeError(f"{name}: got None; expected a 1-D sequence of class labels")
    array = to_numpy(value, name)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of class labels; got {array.ndim}-D ({_describe(array)})")
    if array.size == 0:
        raise ValueError(f"{name}: is empty; expected at least one label")
    if array.dtype.kind == "f":
        finite = array[np.isfinite(array)]
        if np.isinf(array).any():
            raise ValueError(f"{name}: holds inf; expected class labels")
        if finite.size and not np.all(finite == np.round(finite)):
            example = finite[finite != np.round(finite)][0]
            raise ValueError(
                f"{name}: holds non-integer numbers (e.g. {example}); expected class labels. "
                "Pass class scores as a 2-D array (samples x classes) instead"
            )
        if np.isnan(array).any():
            return np.array([None if np.isnan(x) else int(x) for x in array], dtype=object)
        return array.astype(np.int64)
    if array.dtype == object:
        for item in array:
            if not (_is_missing(item) or isinstance(item, (numbers.Integral, str, np.str_, bool, np.bool_))):
                if isinstance(item, numbers.Real) and float(item).is_integer():
                    continue
                raise TypeError(
                    f"{name}: holds {type(item).__name__} {item!r}; expected class labels (integers or strings)"
                )
    elif array.dtype.kind not in "iubUS":
        raise TypeError(f"{name}: expected class labels (integers or strings); got dtype {array.dtype}")
    return array


def drop_ignored(predictions: np.ndarray, references: np.ndarray, ignore_index) -> tuple[np.ndarray, np.ndarray]:
    """Leave out the samples whose reference is ``None``, NaN or ``ignore_index`` (absent, never a negative)."""
    if references.dtype.kind in "iub":  # no None or NaN possible: one vectorised comparison
        keep = np.ones(len(references), bool) if ignore_index is None else references != ignore_index
    else:
        keep = np.array(
            [not (_is_missing(r) or (ignore_index is not None and _equal(r, ignore_index))) for r in references]
        )
    if not keep.any():
        raise ValueError(
            f"references: every one of the {len(references)} labels is absent (None, NaN or ignore_index="
            f"{ignore_index!r}); expected at least one present label"
        )
    if not keep.all():
        predictions, references = predictions[keep], references[keep]
    return tidy_labels(predictions), tidy_labels(references)


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def tidy_labels(labels: np.ndarray) -> np.ndarray:
    """An object array of labels re-typed now that its missing entries are gone (ints stay ints, strings strings)."""
    if labels.dtype != object:
        return labels
    if all(isinstance(x, (numbers.Real, np.bool_)) and not isinstance(x, bool) for x in labels):
        return np.array([int(x) for x in labels], dtype=np.int64)
    return np.array(labels.tolist())


def check_same_length(**arrays) -> int:
    """The common length of the keyword ``arrays``; a mismatch names both arguments and both lengths."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, array in items[1:]:
        if len(array) != len(first):
            raise ValueError(
                f"{first_name} and {name} differ in length: {len(first)} vs {len(array)}; "
                "expected one entry per sample in each"
            )
    return len(first)


def as_strings(name: str, value, *, nested: bool = False) -> list:
    """``value`` as a list of strings; with ``nested`` an entry may also be a list of acceptable strings."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected a sequence of strings; got {type(value).__name__}")
    items = list(to_numpy(value, name).tolist()) if hasattr(value, "shape") else list(value)
    if not items:
        raise ValueError(f"{name}: is empty; expected at least one string")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(item)
        elif nested and isinstance(item, (list, tuple)) and item and all(isinstance(x, str) for x in item):
            out.append(list(item))
        else:
            wanted = "a string or a non-empty list of strings" if nested else "a string"
            raise TypeError(f"{name}[{i}]: is {type(item).__name__} {item!r}; expected {wanted}")
    return out
