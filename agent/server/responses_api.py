"""OpenAI's Responses API: POST /v1/responses (JSON or SSE) and its WebSocket mode on that path.

Both run one turn the same way (responses_turn.ResponseTurn) and differ only in how events
travel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from agent.errors import AgentError
from agent.generation import Generation
from agent.runtime import ModelRuntime
from agent.server.deps import LimitsDep, RuntimeDep
from agent.server.errors import ApiError, from_agent_error
from agent.server.limits import RequestLimits
from agent.server.logprobs import read_all
from agent.server.responses_requests import ResponsesRequest
from agent.server.responses_store import ResponseStore, response_store
from agent.server.responses_turn import ResponseTurn
from agent.server.streaming import TokenStreamResponse, until_disconnect

_LOGGER = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/responses", response_model=None)
async def create_response(
    body: ResponsesRequest, request: Request, runtime: RuntimeDep, limits: LimitsDep
) -> Any:
    """One response, as JSON or as SSE events (`stream: true`)."""
    turn = ResponseTurn(body, response_store(request.app.state))
    await turn.start(runtime, limits)
    generation = turn.generation
    assert generation is not None
    if body.stream:
        parts = _sse(turn.events())
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return TokenStreamResponse(parts, generation, "text/event-stream", headers)
    text, found = await until_disconnect(request, read_all(generation), generation.cancel)
    status, output = turn.finish(text, found)
    return turn.response(status, output)


async def _sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


@router.websocket("/responses")
async def responses_socket(socket: WebSocket) -> None:
    """WebSocket mode: `response.create` events in, response events out, turn after turn."""
    state = socket.app.state
    limits: RequestLimits = state.limits
    origin = socket.headers.get("origin")
    if origin and not limits.allows_origin(origin):
        await socket.close(code=1008, reason="origin not allowed (cors_origins)")
        return
    await socket.accept()
    session = _Session(socket)
    reader = asyncio.create_task(session.read())
    try:
        while True:
            message = await session.incoming.get()
            if message is None:
                return
            await session.turn(message, state.runtime, limits, response_store(state))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


class _Session:
    """One socket: messages queued as they come, and whether the client has gone."""

    def __init__(self, socket: WebSocket) -> None:
        self.socket = socket
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def read(self) -> None:
        """Queue each text message; None (and `closed`) once the client closes."""
        try:
            while True:
                self.incoming.put_nowait(await self.socket.receive_text())
        except (WebSocketDisconnect, RuntimeError):
            self.closed.set()
            self.incoming.put_nowait(None)

    async def turn(
        self, message: str, runtime: ModelRuntime, limits: RequestLimits, store: ResponseStore
    ) -> None:
        """Run one `response.create`; a close while generating cancels the generation."""
        try:
            turn = await _start_turn(message, runtime, limits, store)
        except ApiError as exc:
            await self.socket.send_json(_ws_error(exc))
            return
        generation = turn.generation
        assert generation is not None
        watcher = asyncio.create_task(self.closed.wait())
        watcher.add_done_callback(lambda task: _cancel_unless(task, generation))
        try:
            async for event in turn.events():
                if self.closed.is_set():
                    break
                await self.socket.send_json(event)
        except (WebSocketDisconnect, RuntimeError):
            _LOGGER.info("responses socket closed during %s", turn.id)
        finally:
            watcher.cancel()
            if generation.completion is None:
                generation.cancel()


async def _start_turn(
    message: str, runtime: ModelRuntime, limits: RequestLimits, store: ResponseStore
) -> ResponseTurn:
    """The started turn for one `response.create` event; ApiError for anything wrong."""
    try:
        event = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "messages must be JSON events") from exc
    if not isinstance(event, dict) or event.get("type") != "response.create":
        raise ApiError(400, "send events of type 'response.create'", param="type")
    fields = {k: v for k, v in event.items() if k not in ("type", "stream", "event_id")}
    try:
        body = ResponsesRequest.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem.get("loc", ()))
        raise ApiError(
            400, f"invalid response.create: {where}: {problem.get('msg')}", param=where
        ) from exc
    try:
        turn = ResponseTurn(body, store)
        await turn.start(runtime, limits)
    except AgentError as exc:
        raise from_agent_error(exc) from exc
    return turn


def _cancel_unless(watcher: asyncio.Task[bool], generation: Generation) -> None:
    """The client closed: stop the engine now, not at the next event it would have sent."""
    if not watcher.cancelled():
        generation.cancel()


def _ws_error(err: ApiError) -> dict[str, Any]:
    detail = {
        "type": "invalid_request_error" if err.status < 500 else "server_error",
        "code": err.code,
        "message": err.message,
        "param": err.param,
    }
    return {"type": "error", "status": err.status, "error": detail}
