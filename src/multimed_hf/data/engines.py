"""Where a build's heavy phase runs (reading and validating every file): here, in worker processes, or on a Ray
cluster through Ray Data. Every engine hands back each file's outcome in file order, so the build after it (and
its shards, manifest and card) is the same whichever engine read the files."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from itertools import repeat
from typing import Callable, Iterator, Sequence

__all__ = ["ENGINES", "ReadEngine", "LocalEngine", "RayEngine", "make_engine"]

ENGINES = ("local", "ray")

#: ``read(builder, relpath) -> (records or None, reason or None)``: one file's outcome.
Reader = Callable[[object, str], tuple]


class ReadEngine:
    """Maps a reader over a source's files; ``session()`` holds what the engine needs for a whole build."""

    name: str

    @contextmanager
    def session(self) -> Iterator["ReadEngine"]:
        yield self

    def map(self, read: Reader, builder, relpaths: Sequence[str]) -> Iterator[tuple]:
        raise NotImplementedError


class LocalEngine(ReadEngine):
    """This process, or ``num_proc`` worker processes of this machine (results in file order)."""

    name = "local"

    def __init__(self, num_proc: int = 1):
        if num_proc < 1:
            raise ValueError(f"num_proc={num_proc}; expected a positive number of processes")
        self.num_proc = num_proc

    def map(self, read: Reader, builder, relpaths: Sequence[str]) -> Iterator[tuple]:
        if self.num_proc == 1 or len(relpaths) < 4 * self.num_proc:
            yield from map(read, repeat(builder), relpaths)
            return
        with ProcessPoolExecutor(self.num_proc) as pool:
            try:
                chunk = max(1, min(64, len(relpaths) // (8 * self.num_proc)))
                yield from pool.map(read, repeat(builder), relpaths, chunksize=chunk)
            finally:
                pool.shutdown(cancel_futures=True)


def _read_batch(batch: dict, read: Reader, builder) -> dict:
    """One Ray Data batch of relative paths -> their pickled outcomes (Arrow holds bytes, not Samples)."""
    import numpy as np

    outcomes = [pickle.dumps(read(builder, str(relpath)), protocol=pickle.HIGHEST_PROTOCOL)
                for relpath in batch["relpath"]]
    return {"relpath": batch["relpath"], "outcome": np.array(outcomes, dtype=object)}


class RayEngine(ReadEngine):
    """Ray Data over the file list: ``ray.data.from_items(files).map_batches(read)`` on the cluster at
    ``address`` (``ray.init(address=...)``; None starts a local Ray instance with ``num_cpus`` CPUs, or uses the
    one this process already joined). Every node must see the source folders at the same path (a shared file
    system); the driver keeps the validation cache and writes the shards, manifest and card."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, batch_size: int = 16,
                 progress: bool = False):
        self.address = address
        self.num_cpus = num_cpus
        self.batch_size = batch_size
        self.progress = progress

    @contextmanager
    def session(self) -> Iterator["RayEngine"]:
        try:
            import ray
        except ImportError:
            raise ImportError(
                "engine='ray' needs Ray Data: pip install 'multimed_hf[ray]' (or 'ray[data]==2.55.1')"
            ) from None
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, num_cpus=None if self.address else self.num_cpus,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            yield self
        finally:
            if started:
                ray.shutdown()

    def map(self, read: Reader, builder, relpaths: Sequence[str]) -> Iterator[tuple]:
        import ray

        if not relpaths:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # outcomes come back in file order
        context.enable_progress_bars = self.progress
        dataset = ray.data.from_items([{"relpath": relpath} for relpath in relpaths]).map_batches(
            _read_batch, fn_kwargs={"read": read, "builder": builder}, batch_size=self.batch_size,
            batch_format="numpy",
        )
        expected = iter(relpaths)
        for batch in dataset.iter_batches(batch_size=self.batch_size, batch_format="numpy", prefetch_batches=2):
            for relpath, outcome in zip(batch["relpath"], batch["outcome"]):
                if str(relpath) != next(expected):  # the order is what makes the build the same: never assumed
                    raise RuntimeError(f"Ray Data returned {relpath!r} out of file order")
                yield pickle.loads(outcome)


def make_engine(engine: str | ReadEngine = "local", *, num_proc: int = 1, ray_address: str | None = None,
                progress: bool = False) -> ReadEngine:
    """An engine by name (``"local"`` with ``num_proc`` processes, ``"ray"`` at ``ray_address``) or as given."""
    if isinstance(engine, ReadEngine):
        return engine
    if engine == "local":
        if ray_address is not None:
            raise ValueError(f"ray_address={ray_address!r} given with engine='local'; expected engine='ray'")
        return LocalEngine(num_proc)
    if engine == "ray":
        return RayEngine(ray_address, num_cpus=num_proc if num_proc > 1 else None, progress=progress)
    raise ValueError(f"engine={engine!r}; expected one of {ENGINES}")
