"""One served model version: its worker processes, its bounded request queue and the dynamic
batcher between them.

Requests wait in a bounded FIFO (full -> 503 with Retry-After). The batcher takes an idle worker,
then the oldest request, then every compatible request (same input dtypes and trailing dims) that
arrives until `max_queue_delay_us` after the oldest one arrived or `max_batch_size` rows are
reached, and sends them to the worker as one job; the worker stacks them along axis 0, runs once
and splits the rows back. Each request waits at most `timeout_s` (-> 504). A worker that exits is
replaced and the requests it held fail with 503; one still running a job when its requests timed out is
killed and replaced.

Example (asyncio; the server drives this from its event loop):
    >>> import asyncio, os, tempfile, numpy as np
    >>> from modelkit.edge_runtime import format
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> from modelkit.edge_runtime.serving.metrics import ServerMetrics
    >>> from modelkit.edge_runtime.serving.store import ModelConfig, ModelEntry
    >>> path = os.path.join(tempfile.mkdtemp(), "neg.mkb")
    >>> format.write(Model([ValueInfo("x", "float32", ("n",))], [ValueInfo("y", "float32", ("n",))],
    ...                    [Node("Neg", ["x"], ["y"])]), path)
    >>> async def demo():
    ...     runtime = ModelRuntime(ModelEntry("neg", "1", path, ModelConfig()), batchable=True,
    ...                            metrics=ServerMetrics())
    ...     await runtime.start()
    ...     try:
    ...         return await runtime.infer({"x": np.ones(2, np.float32)}, rows=2, key=())
    ...     finally:
    ...         await runtime.stop()
    >>> asyncio.run(demo())["y"].tolist()
    [-1.0, -1.0]
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from modelkit.edge_runtime.serving import wire
from modelkit.edge_runtime.serving.errors import (BadRequest, GatewayTimeout, ModelStoreError,
                                                  ServiceUnavailable, ServingError)
from modelkit.edge_runtime.serving.metrics import ServerMetrics
from modelkit.edge_runtime.serving.store import ModelEntry

log = logging.getLogger("modelkit.serve")

WORKER_START_TIMEOUT_S = 120.0
# A job still running this long after the request timeout has no client left: every request in
# it started its own timer before the job was sent. The worker is killed and replaced so that the
# next requests do not queue behind abandoned work (TorchServe restarts a worker there too).
ABANDON_GRACE_S = 0.05
_RESTART_BACKOFF_S = (0.2, 1.0, 5.0, 30.0)


def worker_environment() -> dict:
    """The server's environment with one BLAS/OpenMP thread per worker unless the operator set
    a count: a model scales out with workers, and spinning BLAS threads of several workers on
    the same cores starve each other and the server (measured: 30x lower throughput on 2 cores).

    Example:
        >>> worker_environment()["OPENBLAS_NUM_THREADS"] == os.environ.get("OPENBLAS_NUM_THREADS", "1")
        True
    """
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, "1")
    return env


class WorkerDied(Exception):
    """The worker process exited (or its pipe broke) while it held a job."""


class WorkerProcess:
    """One `python -m modelkit.edge_runtime.serving.worker MODEL.mkb` child and its pipes."""

    def __init__(self, path: str):
        self.path = path
        self.proc = None
        self.started_at = 0.0
        self.stopping = False
        self.broken = False

    async def start(self) -> None:
        """Spawn the process and wait for it to load the model; `ModelStoreError` when the
        model cannot be loaded."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modelkit.edge_runtime.serving.worker", self.path,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            # Signals for the server's process group (Ctrl-C, `timeout`) are the server's to
            # handle: it drains requests, then closes the workers' pipes.
            start_new_session=True, env=worker_environment())
        try:
            header, _ = await asyncio.wait_for(self._read(), WORKER_START_TIMEOUT_S)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            self.kill()
            raise ModelStoreError(f"the worker for {self.path} did not start ({type(e).__name__})") from None
        if header.get("event") != "ready":
            await self.proc.wait()
            raise ModelStoreError(f"{self.path} cannot be served: {header.get('error')}")
        self.started_at = time.time()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self.broken

    async def run(self, header: dict, arrays: list) -> tuple[dict, list]:
        """Send one job and wait for its answer; `WorkerDied` if the process goes away."""
        try:
            self.proc.stdin.write(wire.encode(header, arrays))
            await self.proc.stdin.drain()
            return await self._read()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
            self.broken = True
            raise WorkerDied(f"worker pid {self.pid} died ({type(e).__name__})") from None

    async def _read(self) -> tuple[dict, list]:
        prefix = await self.proc.stdout.readexactly(wire.PREFIX.size)
        blob_length, header_length = wire.PREFIX.unpack(prefix)
        body = await self.proc.stdout.readexactly(blob_length + header_length)
        return wire.decode_body(body, blob_length, header_length)

    def kill(self) -> None:
        self.broken = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the job pipe (the worker exits after its current job) and reap it."""
        self.stopping = True
        if self.proc is None:
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.kill()
            await self.proc.wait()

    def memory(self) -> dict:
        """RSS and PSS in bytes from /proc (PSS splits the shared, mapped weights among the
        processes that map them); empty where /proc is unavailable."""
        return process_memory(self.pid)


def process_memory(pid: int) -> dict:
    """`{"rss": bytes, "pss": bytes}` of a live process, from /proc; {} where unreadable.

    Example:
        >>> sorted(process_memory(os.getpid())) in ([], ["pss", "rss"])
        True
    """
    values = {}
    for key, path in (("rss", f"/proc/{pid}/status"), ("pss", f"/proc/{pid}/smaps_rollup")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("VmRSS:" if key == "rss" else "Pss:"):
                        values[key] = int(line.split()[1]) * 1024
                        break
        except OSError:
            return {}
    return values


@dataclass
class _Request:
    feeds: dict
    rows: int
    key: tuple
    arrival: float
    future: asyncio.Future = field(repr=False)


class ModelRuntime:
    """Workers, queue and batcher of one model version. `batchable` says whether requests may
    be stacked along axis 0 (every input's and output's first dim is the same symbolic dim)."""

    def __init__(self, entry: ModelEntry, batchable: bool, metrics: ServerMetrics):
        self.entry = entry
        self.config = entry.config
        self.batchable = batchable
        self.metrics = metrics
        self.workers: list[WorkerProcess] = []
        self.target_workers = self.config.workers
        self.session_calls = 0
        self.restarts = 0
        self.accepting = True
        self._label = f"{entry.name}:{entry.version}"  # for the log
        self._labels = {"model": entry.name, "version": entry.version}
        self._waiting: collections.deque[_Request] = collections.deque()
        self._arrived = asyncio.Event()
        self._idle: asyncio.Queue[WorkerProcess] = asyncio.Queue()
        self._in_flight = 0
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._jobs = itertools.count()
        self._tasks: set[asyncio.Task] = set()
        self._batcher = None

    @property
    def ready(self) -> bool:
        return self.accepting and any(w.alive for w in self.workers)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        """Start the configured number of workers (all must load) and the batcher."""
        await self.scale(self.config.workers)
        self._batcher = asyncio.create_task(self._batch_loop())

    async def infer(self, feeds: dict, rows: int, key: tuple) -> dict:
        """Queue one request and wait for its outputs; raises `ServingError` subclasses."""
        if not self.accepting:
            raise ServiceUnavailable(f"model {self.entry.name!r} version {self.entry.version} is"
                                     " being unregistered", retry_after=1)
        if len(self._waiting) >= self.config.max_queue_size:
            raise ServiceUnavailable(f"model {self.entry.name!r} has {len(self._waiting)} requests"
                                     " queued (max_queue_size); retry later", retry_after=1)
        loop = asyncio.get_running_loop()
        request = _Request(feeds, rows, key, loop.time(), loop.create_future())
        self._waiting.append(request)
        self._arrived.set()
        self.metrics.queue_depth.labels(**self._labels).set(len(self._waiting))
        self._in_flight += 1
        self._all_done.clear()
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), self.config.timeout_s)
        except asyncio.TimeoutError:
            raise GatewayTimeout(f"model {self.entry.name!r} did not answer within"
                                 f" {self.config.timeout_s:g} s (timeout_s)") from None
        finally:
            request.future.cancel()  # no-op when answered; otherwise the batcher skips it
            self._in_flight -= 1
            if self._in_flight == 0:
                self._all_done.set()

    async def scale(self, n: int) -> None:
        """Run `n` workers: start the missing ones (waiting until they are ready), stop idle
        extras now and busy extras when their job ends."""
        self.target_workers = n
        missing = n - len(self.workers)
        if missing > 0:
            await asyncio.gather(*(self._add_worker() for _ in range(missing)))
        for _ in range(max(0, len(self.workers) - n)):
            if self._idle.empty():
                break
            self._retire(self._idle.get_nowait())

    async def stop(self) -> None:
        """Refuse new requests, let queued and running ones finish, then stop the workers."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._all_done.wait(), self.config.timeout_s + ABANDON_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("%s: requests still running at unregistration were abandoned", self._label)
        if self._batcher is not None:
            self._batcher.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(w.stop() for w in self.workers))
        self.workers.clear()
        self.metrics.workers.labels(**self._labels).set(0)

    def describe(self) -> list[dict]:
        """The workers as TorchServe's describe API lists them, with their memory."""
        return [{"id": str(w.pid), "pid": w.pid, "status": "READY" if w.alive else "UNLOADING",
                 "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(w.started_at)),
                 "memoryUsage": w.memory().get("rss", 0), "pss": w.memory().get("pss", 0),
                 "gpu": False} for w in self.workers]

    async def _add_worker(self) -> None:
        worker = WorkerProcess(self.entry.path)
        await worker.start()
        if not self.accepting:
            await worker.stop()
            return
        self.workers.append(worker)
        self.metrics.workers.labels(**self._labels).set(len(self.workers))
        self._spawn(self._watch(worker))
        self._idle.put_nowait(worker)

    async def _watch(self, worker: WorkerProcess) -> None:
        await worker.proc.wait()
        if worker.stopping or not self.accepting:
            return
        log.warning("%s: worker pid %d exited with %s; restarting it", self._label, worker.pid,
                    worker.proc.returncode)
        self.restarts += 1
        self.metrics.worker_restarts.labels(**self._labels).inc()
        self._forget(worker)
        for delay in _RESTART_BACKOFF_S:
            if not self.accepting or len(self.workers) >= self.target_workers:
                return
            try:
                await self._add_worker()
                return
            except ModelStoreError as e:
                log.error("%s: restarting a worker failed: %s; retrying in %g s", self._label, e, delay)
                await asyncio.sleep(delay)

    def _forget(self, worker: WorkerProcess) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        self.metrics.workers.labels(**self._labels).set(len(self.workers))

    def _retire(self, worker: WorkerProcess) -> None:
        self._forget(worker)
        self._spawn(worker.stop())

    def _release(self, worker: WorkerProcess) -> None:
        if len(self.workers) > self.target_workers:
            self._retire(worker)
        elif worker.alive:
            self._idle.put_nowait(worker)

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _batch_loop(self) -> None:
        while True:
            worker = await self._idle.get()
            if not worker.alive:
                continue
            batch = await self._gather()
            if not worker.alive:  # died while the batch gathered: give the batch to another
                self._waiting.extendleft(reversed(batch))
                continue
            self.metrics.queue_depth.labels(**self._labels).set(len(self._waiting))
            self._spawn(self._dispatch(worker, batch))

    async def _gather(self) -> list[_Request]:
        first = await self._next_request()
        batch, rows = [first], first.rows
        if not self.batchable or self.config.max_batch_size <= 1:
            return batch
        loop = asyncio.get_running_loop()
        deadline = first.arrival + self.config.max_queue_delay_us / 1e6
        while rows < self.config.max_batch_size:
            if self._waiting:
                following = self._waiting[0]
                if following.future.done():
                    self._waiting.popleft()
                    continue
                if following.key != first.key or rows + following.rows > self.config.max_batch_size:
                    break
                batch.append(self._waiting.popleft())
                rows += following.rows
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    async def _next_request(self) -> _Request:
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            request = self._waiting.popleft()
            if not request.future.done():
                return request

    async def _dispatch(self, worker: WorkerProcess, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]
        if not live:
            self._release(worker)
            return
        header = {"job": next(self._jobs), "stack": self.batchable and len(live) > 1,
                  "requests": [list(r.feeds) for r in live]}
        arrays = [array for r in live for array in r.feeds.values()]
        try:
            reply, outputs = await asyncio.wait_for(worker.run(header, arrays),
                                                    self.config.timeout_s + ABANDON_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("%s: worker pid %d still runs a job past timeout_s; replacing it",
                        self._label, worker.pid)
            worker.kill()
            self._fail(live, GatewayTimeout(f"model {self.entry.name!r}: the worker ran past the"
                                            " timeout and was restarted"))
            return
        except WorkerDied as e:
            self._fail(live, ServiceUnavailable(f"model {self.entry.name!r}: {e} while running this"
                                                " request; it is being restarted, retry", retry_after=1))
            return
        self._release(worker)
        self._record(reply, live)
        arrays = iter(outputs)
        for request, result in zip(live, reply["results"]):
            if request.future.done():
                for _ in result.get("outputs", ()):
                    next(arrays)
            elif "error" in result:
                error = BadRequest if result["status"] == 400 else ServingError
                request.future.set_exception(error(result["error"]))
            else:
                request.future.set_result({name: next(arrays) for name in result["outputs"]})

    def _record(self, reply: dict, live: list[_Request]) -> None:
        self.session_calls += reply["calls"]
        self.metrics.session_calls.labels(**self._labels).inc(reply["calls"])
        histogram = self.metrics.batch_size.labels(**self._labels)
        if reply["calls"] == 1:
            histogram.observe(sum(r.rows for r in live))
        else:
            for r in live:
                histogram.observe(r.rows)

    @staticmethod
    def _fail(requests: list[_Request], error: ServingError) -> None:
        for request in requests:
            if not request.future.done():
                request.future.set_exception(error)
