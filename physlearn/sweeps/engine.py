"""Where sweep points run: Dask distributed, or one process for a serial baseline.

* `DaskExecutor.local`: the embedded default, a ``LocalCluster`` with one single-threaded
  worker process per core and BLAS/OpenMP and the twin's solver pinned to one thread in each (the
  worker environment and, in every point, ``threadpoolctl`` and ``PHYSLEARN_SOLVER_THREADS``), so that two workers do not oversubscribe two cores.
* `DaskExecutor.connect`: an existing Dask cluster by its scheduler address
  (``tcp://HOST:PORT``); its workers must import physlearn and see the sweep root (a shared
  folder). An unreachable scheduler is a `SweepError` after ``timeout`` seconds.
* `SerialExecutor`: the same per-point function (`execute`), one point after another in this
  process, with the same thread pinning — the baseline a speed-up is measured against.

A point is a `Task`: a top-level function and its keyword arguments, run by `execute` on
whichever worker the scheduler picks (or the one named worker of a bench point). `execute` is
idempotent and atomic from the sweep's view: under a per-point file lock it returns the point's
finished record if one exists, else runs the function, times it and writes the record
(`physlearn.sweeps.records`); an exception becomes a failed record, never the sweep's failure.
Dask reschedules the tasks of a worker that died; a task that keeps killing its workers
(``distributed.scheduler.allowed-failures``) comes back as a failed record.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from physlearn.errors import PhyslearnError
from physlearn.sweeps.records import LOCKS_DIR, PointRecord, RecordStore

log = logging.getLogger(__name__)

__all__ = [
    "PIN_ENV",
    "DaskExecutor",
    "Executor",
    "Outcome",
    "SerialExecutor",
    "SweepError",
    "Task",
    "execute",
    "open_executor",
]

#: the environment of every worker process: one BLAS/OpenMP thread and one twin solver thread
#: (`physlearn.simulators.periodic.solver_threads`) per point
PIN_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PHYSLEARN_SOLVER_THREADS": "1",
}


@contextlib.contextmanager
def _solver_threads_pinned() -> Iterator[None]:
    """``PHYSLEARN_SOLVER_THREADS=1`` for the duration (restored after)."""
    key = "PHYSLEARN_SOLVER_THREADS"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


class SweepError(PhyslearnError):
    """The sweep cannot run (no scheduler, no such worker); a point's own failure is not one."""


@dataclass(frozen=True)
class Outcome:
    """What a point function returns: scalar ``metrics``, and whether it continued a partial
    run (``resumed``). A plain dict is taken as the metrics."""

    metrics: dict[str, Any]
    resumed: bool = False


@dataclass(frozen=True)
class Task:
    """One point to run: ``fn(**kwargs)`` → `Outcome` or metrics dict.

    Attributes:
        name: the point's name (unique in the sweep; its record's and lock's name).
        fn: a module-level function (pickled by reference to the workers).
        kwargs: its keyword arguments (picklable).
        labels: the point's table columns.
        worker: the one Dask worker (by name) the point may run on — a bench's — or None.
        lock: an exclusive lock held while the point runs, across processes sharing the root
            (a bench's name: never two points on one instrument set), or None.
    """

    name: str
    fn: Callable[..., Outcome | dict[str, Any]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, Any] = field(default_factory=dict)
    worker: str | None = None
    lock: str | None = None


def worker_name() -> str:
    """The Dask worker running this code (its name), or ``"serial"`` outside a worker."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except ValueError:
        return "serial"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created), released on exit or when the process
    dies — a killed worker never leaves a stale lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def execute(task: Task, root: str) -> PointRecord:
    """Run one point (module docstring): its finished record if it has one, else the function,
    with BLAS pinned to one thread, the point's (and its bench's) lock held, the record
    written atomically. Never raises for the point's own errors."""
    from threadpoolctl import threadpool_limits

    store = RecordStore(root)
    locks = Path(root) / LOCKS_DIR
    with contextlib.ExitStack() as stack:
        stack.enter_context(file_lock(locks / f"{task.name}.lock"))
        old = store.read(task.name)
        if old is not None and old.status == "done":
            return old  # a duplicate of a finished point (a rescheduled task): nothing to do
        if task.lock is not None:
            stack.enter_context(file_lock(locks / f"bench-{task.lock}.lock"))
        stack.enter_context(threadpool_limits(limits=1))
        stack.enter_context(_solver_threads_pinned())
        t0 = time.perf_counter()
        rec = PointRecord(task.name, "done", dict(task.labels), worker=worker_name())
        try:
            out = task.fn(**task.kwargs)
            if not isinstance(out, Outcome):
                out = Outcome(dict(out))
            rec.metrics, rec.resumed = dict(out.metrics), out.resumed
        except Exception as exc:
            debug = log.isEnabledFor(logging.DEBUG)
            log.info("sweep point %s failed: %s", task.name, exc, exc_info=debug)
            rec.status, rec.error = "failed", f"{type(exc).__name__}: {exc}"
        rec.wall_s = time.perf_counter() - t0
        store.write(rec)
        return rec


class Executor(abc.ABC):
    """Runs tasks and yields their records as they finish (any order)."""

    description = "executor"

    @abc.abstractmethod
    def run(self, tasks: Sequence[Task], root: Path) -> Iterator[PointRecord]:
        """The record of every task in ``tasks``, each written under ``root`` as it finishes."""

    def close(self) -> None:
        """Release what the executor started (a LocalCluster); idempotent. Nothing by default."""
        return None


class SerialExecutor(Executor):
    """Every point in this process, in order (the serial baseline)."""

    description = "serial (1 process)"

    def run(self, tasks: Sequence[Task], root: Path) -> Iterator[PointRecord]:
        for t in tasks:
            yield execute(t, str(root))


def _lost(task: Task, exc: BaseException, root: Path) -> PointRecord:
    """The record of a task whose result never came back (e.g. it killed every worker that
    ran it), written by the client."""
    rec = PointRecord(task.name, "failed", dict(task.labels), error=f"{type(exc).__name__}: {exc}")
    RecordStore(root).write(rec)
    return rec


def _quiet_dask() -> None:
    """Dask's own INFO lines (scheduler and nanny start and stop) only with ``-vv``."""
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)


class DaskExecutor(Executor):
    """Points as Dask tasks on a cluster (module docstring)."""

    def __init__(self, client: Any, cluster: Any = None, description: str = "dask"):
        self.client = client
        self.cluster = cluster
        self.description = description

    @classmethod
    def local(cls, n_workers: int | None = None) -> DaskExecutor:
        """A LocalCluster: ``n_workers`` single-threaded processes (default: one per core)."""
        from distributed import Client, LocalCluster

        _quiet_dask()
        n = n_workers or len(os.sched_getaffinity(0))
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: never fight another sweep for :8787
            env=dict(PIN_ENV),
            silence_logs=logging.ERROR,
        )
        client = Client(cluster, set_as_default=False)
        return cls(client, cluster, f"Dask LocalCluster, {n} worker process(es) × 1 thread")

    @classmethod
    def connect(cls, address: str, timeout: float = 10.0) -> DaskExecutor:
        """A client of the scheduler at ``address``; `SweepError` if it does not answer
        within ``timeout`` seconds."""
        from distributed import Client

        _quiet_dask()
        try:
            client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(
                f"--scheduler {address}: no Dask scheduler answered within {timeout:g} s "
                f"({type(exc).__name__}: {exc})"
            ) from None
        n = len(client.scheduler_info().get("workers", {}))
        return cls(client, None, f"Dask scheduler {address} ({n} worker(s) at start)")

    def workers(self) -> dict[str, str]:
        """Worker name → address, as the scheduler knows them now."""
        info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return {str(w.get("name")): addr for addr, w in info.items()}

    def _submit(self, task: Task, root: Path, token: str) -> Any:
        kw: dict[str, Any] = {"key": f"sweep-{token}-{task.name}", "pure": False}
        if task.worker is not None:
            addr = self.workers().get(task.worker)
            if addr is None:
                raise SweepError(f"no worker named {task.worker!r} in the cluster")
            kw.update(workers=[addr], allow_other_workers=False)
        return self.client.submit(execute, task, str(root), **kw)

    def run(self, tasks: Sequence[Task], root: Path) -> Iterator[PointRecord]:
        from distributed import as_completed

        token = secrets.token_hex(4)
        futures: dict[Any, Task] = {}
        for t in tasks:
            try:
                futures[self._submit(t, root, token)] = t
            except SweepError as exc:
                yield _lost(t, exc, root)
        for fut in as_completed(list(futures), loop=self.client.loop):
            task = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # KilledWorker, a lost connection, ...
                log.warning("sweep point %s: task lost: %s", task.name, exc)
                yield _lost(task, exc, root)
            finally:
                fut.release()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
            self.cluster = None


@contextlib.contextmanager
def open_executor(
    scheduler: str | None = None, workers: int | None = None, timeout: float = 10.0
) -> Iterator[Executor]:
    """The executor of a command line: ``scheduler`` ``"serial"`` (one process), a
    ``tcp://HOST:PORT`` address (an existing cluster) or None (a LocalCluster of ``workers``
    processes, default one per core); closed on exit."""
    ex: Executor
    if scheduler == "serial":
        ex = SerialExecutor()
    elif scheduler is not None:
        ex = DaskExecutor.connect(scheduler, timeout)
    else:
        ex = DaskExecutor.local(workers)
    try:
        yield ex
    finally:
        ex.close()
