"""What the ``evaluate`` metric modules in ``metrics/`` share beside the metric math."""

from __future__ import annotations

__all__ = ["RefuseEmptyInput"]


class RefuseEmptyInput:
    """Mixin for an ``evaluate.Metric`` with several feature sets: an empty ``predictions`` / ``references`` is
    refused with a ``ValueError`` naming it (``evaluate`` infers the feature set from the first element, and raised
    a bare ``IndexError``)."""

    def _infer_feature_from_batch(self, batch):
        empty = [name for name, values in batch.items() if len(values) == 0]
        if empty:
            raise ValueError(f"{' and '.join(empty)}: empty; expected at least one sample")
        return super()._infer_feature_from_batch(batch)
