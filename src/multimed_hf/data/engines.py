"""Where a build's heavy phase runs (reading and validating every file): here, in worker processes, or on a Ray
cluster through Ray Data. Every engine hands back each file's outcome in file order, so the build after it (and
its shards, manifest and card) is the same whichever engine read the files.

A file's outcome streams: the reader yields it in parts (each what the build stores of at most a few thousand
records, and, where the file gives none, a last part that is the reason), and every engine passes the parts on as
they come (a worker process spools the parts of a large file to a temporary file; Ray Data carries one part per
row), so no engine ever holds a whole file of many records, and at most a few files' outcomes are in flight at once.
``LocalEngine``'s worker processes also let the reader store what it can where it read (``Reader``'s ``settle``: the
build's puts the samples in the validation cache there), so that only what the main process keeps comes back.

An engine also runs the build's later per-batch work (``ordered``: encoding each row group of the shards and
searching each band of near duplicates; ``submit``: writing each shard from its encoded row groups): ``LocalEngine``
in its worker processes, started once per ``session`` (forked where the platform can, so a worker starts without
importing anything) and reused by every source and phase."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import tempfile
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = ["ENGINES", "ReadEngine", "LocalEngine", "RayEngine", "make_engine"]

ENGINES = ("local", "ray")

#: ``read(builder, relpath) -> iterator of parts``: one file's outcome, as parts the engines pass on without looking
#: into them (the build's reader: what it stores of some records each, or the reason the file gives no samples). A
#: reader may also have ``settle(builder, files)``, which ``LocalEngine``'s worker processes call on the files they
#: read, ``SETTLE_FILES`` at a time (``[(relpath, parts)]`` of those not spooled), handing on the parts it returns
#: instead: the build's reader stores their samples in the validation cache there, in one transaction (other
#: engines, and files read in the main process, never call it: the main process stores them).
Reader = Callable[[object, str], Iterable]
#: Parts a worker process returns inline; a file of more parts is spooled to a temporary file.
INLINE_PARTS = 1
#: Most files a worker process reads in one task (at least 8 tasks a worker where there are fewer files): each
#: task costs the main process's pool threads a few hundred microseconds, whatever its size.
FILES_PER_TASK = 256
#: Files a worker process reads before its reader settles them (``settle``): what it holds of a task's files.
SETTLE_FILES = 64


class ReadEngine:
    """Maps a reader over a source's files; ``session()`` holds what the engine needs for a whole build."""

    name: str
    #: Whether ``ordered`` runs its tasks in other processes (whose answers travel back to this one).
    workers = False

    @contextmanager
    def session(self) -> Iterator["ReadEngine"]:
        yield self

    def map(self, read: Reader, builder, relpaths: Sequence[str]) -> Iterator[Iterator]:
        """Per file, in file order, an iterator over its parts (consume it before asking for the next file)."""
        raise NotImplementedError

    def ordered(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[Any]:
        """``fn(*task)`` of each task, in task order (here, in this process; ``LocalEngine`` in its workers)."""
        for task in tasks:
            yield fn(*task)

    def submit(self, fn: Callable[..., Any], *args) -> Future:
        """``fn(*args)`` started now, its answer (or error) from the future's ``result()``: here, done before this
        returns (``LocalEngine`` within a session: in a worker process, while this process goes on)."""
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:  # noqa: BLE001 - handed to whoever asks for the result, as a pool does
            future.set_exception(err)
        return future


def _collect(read: Reader, builder, relpaths: Sequence[str], spool_dir: str) -> list[tuple[str, object]]:
    """In a worker process: each file's parts, inline (``("parts", [...])``) or, for a file of more than
    ``INLINE_PARTS`` parts, written one pickle each to a spool file (``("spool", path)``). A reader with a
    ``settle`` method has it make the inline parts into what it hands on, ``SETTLE_FILES`` files at a time."""
    outcomes: list[tuple[str, object]] = []
    settle = getattr(read, "settle", None)
    settled = 0  # the outcomes before this one were settled
    for relpath in relpaths:
        parts: list = []
        spool = None
        handle = None
        for part in read(builder, relpath):
            if handle is None and len(parts) < INLINE_PARTS:
                parts.append(part)
                continue
            if handle is None:
                handle, spool = _spool_file(spool_dir)
                for earlier in parts:
                    pickle.dump(earlier, handle, protocol=pickle.HIGHEST_PROTOCOL)
                parts = []
            pickle.dump(part, handle, protocol=pickle.HIGHEST_PROTOCOL)
        if handle is not None:
            handle.close()
            outcomes.append(("spool", spool))
        else:
            outcomes.append(("parts", parts))
        if settle is not None and len(outcomes) - settled == SETTLE_FILES:
            _settle(settle, builder, relpaths, outcomes, settled)
            settled = len(outcomes)
    if settle is not None and settled < len(outcomes):
        _settle(settle, builder, relpaths, outcomes, settled)
    return outcomes


def _settle(settle: Callable, builder, relpaths: Sequence[str], outcomes: list[tuple[str, object]],
            start: int) -> None:
    """The reader's ``settle(builder, files)`` on the inline files of ``outcomes[start:]`` (``[(relpath, parts)]``),
    where they were read: its chance to store what it can of them at once (the build's reader: their samples in
    the validation cache, one transaction), the parts it returns handed on instead (one list a file, in order)."""
    inline = [k for k in range(start, len(outcomes)) if outcomes[k][0] == "parts"]
    settled = settle(builder, [(relpaths[k], outcomes[k][1]) for k in inline])
    for k, parts in zip(inline, settled):
        outcomes[k] = ("parts", parts)


def _spool_file(spool_dir: str):
    handle = tempfile.NamedTemporaryFile(dir=spool_dir, suffix=".parts", delete=False)
    return handle, handle.name


def _unspool(kind: str, value) -> Iterator:
    """A file's parts from ``_collect``'s outcome: inline, iterated (no generator a file); spooled, read back."""
    if kind == "parts":
        return iter(value)
    return _spooled(value)


def _spooled(value: str) -> Iterator:
    try:
        with open(value, "rb") as handle:
            while True:
                try:
                    yield pickle.load(handle)
                except EOFError:
                    return
    finally:
        Path(value).unlink(missing_ok=True)


def _pool_context():
    """Fork on Linux (a worker starts as a copy of this process: no interpreter to start and no module to import
    again, where spawn or forkserver, Python 3.14's default, import datasets, pyarrow and PIL in every worker:
    about a second each), else the platform's default (spawn on macOS and Windows, where fork is unsafe)."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _die_with_parent(parent: int) -> None:
    """A worker's start (Linux): it is sent SIGTERM when the build that forked it dies, even by SIGKILL (the OOM
    killer, a job scheduler), instead of living on with the build's memory image and its databases open."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl in this libc: the workers go when the pool shuts down
        return
    if os.getppid() != parent:  # the build died before the request took hold
        os._exit(1)


class LocalEngine(ReadEngine):
    """This process, or ``num_proc`` worker processes of this machine (results in file order; at most a few
    batches of files in flight, so results never pile up ahead of the build). Within a ``session`` one pool serves
    every ``map`` and ``ordered``; outside one, each call starts its own."""

    name = "local"

    def __init__(self, num_proc: int = 1):
        if num_proc < 1:
            raise ValueError(f"num_proc={num_proc}; expected a positive number of processes")
        self.num_proc = num_proc
        self.workers = num_proc > 1
        self._pool: ProcessPoolExecutor | None = None

    @contextmanager
    def session(self) -> Iterator["LocalEngine"]:
        """One pool for the session, its workers started now: forked before the build opens its databases here,
        so a worker opens its own (SQLite's state is never carried across a fork)."""
        if self.num_proc == 1 or self._pool is not None:
            yield self
            return
        with self._started() as pool:
            self._pool = pool
            try:
                pool.submit(os.getpid).result()  # a first task starts every worker (forked: all at once)
                yield self
            finally:
                self._pool = None

    @contextmanager
    def _started(self) -> Iterator[ProcessPoolExecutor]:
        if self._pool is not None:
            yield self._pool
            return
        pool = ProcessPoolExecutor(self.num_proc, mp_context=_pool_context(), initializer=_die_with_parent,
                                   initargs=(os.getpid(),))
        try:
            yield pool
        finally:
            pool.shutdown(cancel_futures=True)

    def _in_order(self, pool: ProcessPoolExecutor, fn: Callable, tasks: Iterable[tuple]) -> Iterator[Any]:
        """``fn(*task)`` of each task run in ``pool``, in task order, at most ``2 * num_proc`` tasks in flight. Left
        early (an error, or the caller stopped), the tasks not started are cancelled and the running ones awaited:
        none still writes (to a spool folder, say) once this returns."""
        in_flight: deque = deque()
        try:
            for task in tasks:
                in_flight.append(pool.submit(fn, *task))
                if len(in_flight) >= 2 * self.num_proc:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            running = [future for future in in_flight if not future.cancel()]
            wait(running)

    def map(self, read: Reader, builder, relpaths: Sequence[str]) -> Iterator[Iterator]:
        if self.num_proc == 1 or len(relpaths) < 4 * self.num_proc:
            for relpath in relpaths:
                yield iter(read(builder, relpath))
            return
        chunk = max(1, min(FILES_PER_TASK, len(relpaths) // (8 * self.num_proc)))
        with tempfile.TemporaryDirectory(prefix="multimed-spool-") as spool_dir, self._started() as pool:
            batches = ((read, builder, relpaths[i:i + chunk], spool_dir) for i in range(0, len(relpaths), chunk))
            for outcomes in self._in_order(pool, _collect, batches):
                for outcome in outcomes:
                    yield _unspool(*outcome)

    def ordered(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[Any]:
        if self.num_proc == 1:
            yield from super().ordered(fn, tasks)
            return
        with self._started() as pool:
            yield from self._in_order(pool, fn, tasks)

    def submit(self, fn: Callable[..., Any], *args) -> Future:
        if self._pool is None:  # one process, or outside a session: here
            return super().submit(fn, *args)
        return self._pool.submit(fn, *args)


def _read_batch(batch: dict, read: Reader, builder) -> Iterator[dict]:
    """One Ray Data batch of relative paths -> one row per part of each file, pickled (Arrow holds bytes, not
    Samples); a generator, so a file of many parts leaves the worker part by part."""
    import numpy as np

    for relpath in batch["relpath"]:
        relpath = str(relpath)
        empty = True
        for part in read(builder, relpath):
            empty = False
            yield {"relpath": np.array([relpath], dtype=object),
                   "part": np.array([pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)], dtype=object)}
        if empty:  # every file has a row: the driver checks the order file by file
            yield {"relpath": np.array([relpath], dtype=object),
                   "part": np.array([pickle.dumps([], protocol=pickle.HIGHEST_PROTOCOL)], dtype=object)}


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

    def map(self, read: Reader, builder, relpaths: Sequence[str]) -> Iterator[Iterator]:
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
        rows = (
            (str(relpath), part)
            for batch in dataset.iter_batches(batch_size=self.batch_size, batch_format="numpy", prefetch_batches=2)
            for relpath, part in zip(batch["relpath"], batch["part"])
        )
        pending: list = [next(rows, None)]

        def parts(relpath: str) -> Iterator:
            while pending[0] is not None and pending[0][0] == relpath:
                part = pickle.loads(pending[0][1])
                pending[0] = next(rows, None)
                yield part

        previous = None
        for relpath in relpaths:
            while pending[0] is not None and pending[0][0] == previous:  # what the caller left of the last file
                pending[0] = next(rows, None)
            if pending[0] is None or pending[0][0] != relpath:  # the order is what makes the build the same
                seen = None if pending[0] is None else pending[0][0]
                raise RuntimeError(f"Ray Data returned {seen!r} where {relpath!r} was expected (file order)")
            yield parts(relpath)
            previous = relpath


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
