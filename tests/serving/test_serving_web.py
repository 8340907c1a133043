"""The shared HTTP pieces, driven as ASGI apps without a server."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("starlette")

from modelkit.edge_runtime.serving.web import ConcurrencyLimit  # noqa: E402


async def _call(app, path):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""},
              receive, send)
    return sent


def test_concurrency_limit_answers_json_503_with_retry_after_when_full():
    async def scenario():
        release = asyncio.Event()

        async def slow_app(scope, receive, send):
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        limited = ConcurrencyLimit(slow_app, limit=1)
        first = asyncio.create_task(_call(limited, "/v2/models/m/infer"))
        await asyncio.sleep(0)
        refused = await _call(limited, "/v2/models/m/infer")
        refused_ts = await _call(limited, "/predictions/m")
        release.set()
        return await first, refused, refused_ts, limited.active

    first, refused, refused_ts, active = asyncio.run(scenario())
    assert first[0]["status"] == 200 and active == 0
    assert refused[0]["status"] == 503 and (b"retry-after", b"1") in refused[0]["headers"]
    assert set(json.loads(refused[1]["body"])) == {"error"}
    assert json.loads(refused_ts[1]["body"])["code"] == 503
