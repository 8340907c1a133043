"""A worker process: loads one `.mkb` (mapped, so the weights are shared with every other worker
of the model through the page cache) and runs jobs from the server until its stdin closes.

Run by the server as `python -m modelkit.edge_runtime.serving.worker MODEL.mkb`; stdin/stdout
carry `wire` frames, stderr is the server's log. The first frame out is `{"event": "ready"}` (or
`"failed"` with the load error). A job is a list of requests (feeds); with `stack` set they are
concatenated along axis 0, run in one `Session.run` and split back by rows; when that batch fails,
each request runs alone so that one bad request cannot fail the others.

Example (the server's side of the conversation, in a doctest):
    >>> import numpy as np, subprocess, sys, tempfile, os
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> from modelkit.edge_runtime import format, serving
    >>> from modelkit.edge_runtime.serving import wire
    >>> path = os.path.join(tempfile.mkdtemp(), "relu.mkb")
    >>> format.write(Model([ValueInfo("x", "float32", ("n",))], [ValueInfo("y", "float32", ("n",))],
    ...                    [Node("Relu", ["x"], ["y"])]), path)
    >>> p = subprocess.Popen([sys.executable, "-m", "modelkit.edge_runtime.serving.worker", path],
    ...                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    >>> wire.read_frame(p.stdout)[0]["event"]
    'ready'
    >>> _ = p.stdin.write(wire.encode({"job": 1, "stack": False, "requests": [["x"]]},
    ...                               [np.array([-1, 2], np.float32)])); p.stdin.flush()
    >>> header, arrays = wire.read_frame(p.stdout)
    >>> header["results"], arrays[0].tolist()
    ([{'outputs': ['y']}], [0.0, 2.0])
    >>> p.stdin.close(); p.wait()
    0
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

import numpy as np

from modelkit.edge_runtime.errors import EdgeRuntimeError, InvalidInputError
from modelkit.edge_runtime.serving import wire
from modelkit.edge_runtime.session import Session, load


def run_job(session: Session, requests: list[dict], stack: bool) -> tuple[list, int]:
    """Run `requests` (each a feeds dict) and return ([outputs dict or error dict, ...], number
    of `session.run` calls made).

    Example:
        >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
        >>> s = Session(Model([ValueInfo("x", "float32", ("n",))], [ValueInfo("y", "float32", ("n",))],
        ...                   [Node("Neg", ["x"], ["y"])]))
        >>> results, calls = run_job(s, [{"x": np.ones(1, np.float32)}, {"x": np.ones(2, np.float32)}], True)
        >>> [r["y"].tolist() for r in results], calls
        ([[-1.0], [-1.0, -1.0]], 1)
    """
    if stack and len(requests) > 1:
        stacked = _run_stacked(session, requests)
        if stacked is not None:
            return stacked, 1
    return [_run_one(session, feeds) for feeds in requests], len(requests)


def _run_stacked(session: Session, requests: list[dict]):
    rows = [len(next(iter(feeds.values()))) for feeds in requests]
    try:
        feeds = {name: np.concatenate([r[name] for r in requests]) for name in requests[0]}
        outputs = session.run(feeds)
    except Exception:  # NOTE: retried one by one below, which reports the culprit's own error
        return None
    if any(o.ndim == 0 or o.shape[0] != sum(rows) for o in outputs.values()):
        return None
    bounds = np.cumsum(rows)[:-1]
    per_output = {name: np.split(array, bounds) for name, array in outputs.items()}
    return [{name: parts[i] for name, parts in per_output.items()} for i in range(len(requests))]


def _run_one(session: Session, feeds: dict) -> dict:
    try:
        return session.run(feeds)
    except InvalidInputError as e:
        return {"error": str(e), "status": 400}
    except EdgeRuntimeError as e:
        return {"error": f"{type(e).__name__}: {e}", "status": 500}
    except Exception as e:  # a kernel bug must fail this request only, never the worker
        traceback.print_exc(file=sys.stderr)
        return {"error": f"the model failed on this input ({type(e).__name__}: {e})", "status": 500}


def _answer(job: int, results: list, calls: int) -> bytes:
    summaries, arrays = [], []
    for result in results:
        if "error" in result and isinstance(result["error"], str):
            summaries.append(result)
            continue
        summaries.append({"outputs": list(result)})
        arrays.extend(result.values())
    return wire.encode({"job": job, "calls": calls, "results": summaries}, arrays)


def main(argv: list[str]) -> int:
    """Serve jobs for the model at argv[0] until stdin closes.

    Example: see the module docstring.
    """
    # The server owns shutdown: Ctrl-C in a terminal reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the frames on the real stdout
    channel_in = sys.stdin.buffer
    try:
        session = load(argv[0])
    except (EdgeRuntimeError, OSError) as e:
        channel_out.write(wire.encode({"event": "failed", "error": f"{type(e).__name__}: {e}"}, []))
        channel_out.flush()
        return 1
    channel_out.write(wire.encode({"event": "ready", "pid": os.getpid()}, []))
    channel_out.flush()
    while (frame := wire.read_frame(channel_in)) is not None:
        header, arrays = frame
        tensors = iter(arrays)
        requests = [{name: next(tensors) for name in names} for names in header["requests"]]
        results, calls = run_job(session, requests, header["stack"])
        channel_out.write(_answer(header["job"], results, calls))
        channel_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
