"""The bare ASGI baseline: what one uvicorn worker costs with nothing of ingest in it.

The routes do the least an intake must do (read the body, decode it as JSON, answer 202),
with the same server, loop, HTTP parser and worker count as ingest. Whatever ingest is
slower than this, it spends on its own work: auth, validation, records, Kafka.

Serve it with ``python -m uvicorn tests.bench.bare_app:app --loop uvloop --http httptools``.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json"


async def index(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


async def single(request: Request) -> Response:
    event = orjson.loads(await request.body())
    answer = {"status": "accepted", "source": event["source"], "event_id": event["event_id"]}
    return Response(
        orjson.dumps(answer),
        status_code=202,
        media_type=JSON,
    )


async def batch(request: Request) -> Response:
    events = orjson.loads(await request.body())["events"]
    return Response(orjson.dumps({"accepted": len(events)}), status_code=202, media_type=JSON)


app = Starlette(
    routes=[
        Route("/", index, methods=["GET"]),
        Route("/single", single, methods=["POST"]),
        Route("/batch", batch, methods=["POST"]),
    ]
)
