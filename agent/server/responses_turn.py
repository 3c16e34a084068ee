"""One Responses API turn: the conversation, the generation, the Response and its events.

A response's conversation is kept in agent memory (ResponseStore) for `previous_response_id`.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from agent.engines.base import SamplingParams
from agent.errors import AgentError
from agent.generation import Generation
from agent.model_loading import LoadedModel
from agent.runtime import ModelRuntime
from agent.server.chat_plan import ChatPlan
from agent.server.deps import fill_context, nonempty_prompt, sampling
from agent.server.deps import served_model as _served
from agent.server.errors import ApiError, from_agent_error
from agent.server.limits import RequestLimits
from agent.server.responses_requests import ResponsesRequest

STORED_RESPONSES = 256  # conversations kept for previous_response_id, oldest dropped first


class ResponseStore:
    """The conversations of recent responses, by response id, in agent memory."""

    def __init__(self, capacity: int = STORED_RESPONSES) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def get(self, response_id: str) -> list[dict[str, Any]]:
        """The messages up to and including that response; 400 when unknown."""
        found = self._items.get(response_id)
        if found is None:
            raise ApiError(
                400,
                f"previous response {response_id!r} not found (the agent keeps "
                f"the last {self.capacity} in memory)",
                param="previous_response_id",
            )
        return list(found)

    def put(self, response_id: str, messages: list[dict[str, Any]]) -> None:
        """Remember a conversation."""
        self._items[response_id] = messages
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


def response_store(state: Any) -> ResponseStore:
    """The app's ResponseStore, made on first use."""
    store = getattr(state, "responses", None)
    if store is None:
        store = state.responses = ResponseStore()
    return store


class ResponseTurn:
    """One response: the prompt, the generation, and the events that report it."""

    def __init__(self, body: ResponsesRequest, store: ResponseStore) -> None:
        self.body = body
        self.store = store
        self.plan: ChatPlan = body.plan()
        history = store.get(body.previous_response_id) if body.previous_response_id else []
        self.messages = history + body.messages()
        if not self.messages:
            raise ApiError(400, "input is empty; send some text", param="input")
        self.id = f"resp_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = ""
        self.generation: Generation | None = None
        self._seq = 0
        self._message_id = ""

    async def start(self, runtime: ModelRuntime, limits: RequestLimits) -> None:
        """Queue the generation (400/503 errors raise here, before any event)."""
        body, plan = self.body, self.plan
        limits.check_prompt((str(m.get("content", "")) for m in self.messages), "input")
        self.model = _served(runtime, body.model).ref

        def build(model: LoadedModel) -> tuple[str, SamplingParams]:
            prompt = nonempty_prompt(plan.render(model, self.messages), "input")
            params = sampling(
                max_tokens=body.max_output_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                top_k=None,
                repeat_penalty=None,
                seed=None,
                stop=model.chat.stop_strings,
            )
            return prompt, replace(params, constraint=plan.constraint)

        self.generation = await runtime.generate(
            build, max_tokens_default=fill_context(body.max_output_tokens)
        )

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """A server event with the next sequence number."""
        self._seq += 1
        return {"type": kind, "sequence_number": self._seq - 1, **fields}

    def response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The Response object."""
        body, gen = self.body, self.generation
        done = gen.completion if gen else None
        prompt = done.prompt_tokens if done else (gen.prompt_tokens if gen else 0)
        produced = done.completion_tokens if done else 0
        choice: Any = (
            body.tool_choice.model_dump()
            if body.tool_choice and not isinstance(body.tool_choice, str)
            else (body.tool_choice or "auto")
        )
        fmt = (
            body.text.format.model_dump(by_alias=True, exclude_none=True)
            if (body.text and body.text.format)
            else {"type": "text"}
        )
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "tool_choice": choice,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "text": {"format": fmt},
            "truncation": "disabled",
            "metadata": body.metadata or {},
            "store": body.store,
            "user": body.user,
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": produced,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + produced,
            },
        }

    def finish(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """Status and output items for the generated text; the conversation is stored."""
        content, calls = self.plan.read(text)
        output: list[dict[str, Any]] = []
        if content is not None and (content or not calls):
            output.append(_message_item(f"msg_{uuid.uuid4().hex}", content, "completed"))
        for call in calls:
            output.append(
                {
                    "type": "function_call",
                    "id": f"fc_{uuid.uuid4().hex}",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                    "status": "completed",
                }
            )
        assistant: dict[str, Any] = {"role": "assistant", "content": content or ""}
        if calls:
            assistant["tool_calls"] = [c.as_openai() for c in calls]
        if self.body.store:
            self.store.put(self.id, [*self.messages, assistant])
        done = self.generation.completion if self.generation else None
        length = done is not None and done.finish_reason == "length" and not calls
        return ("incomplete" if length else "completed"), output

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The streamed events of this turn, from response.created to completed (or error)."""
        gen = self.generation
        assert gen is not None
        yield self.event("response.created", response=self.response("in_progress", []))
        yield self.event("response.in_progress", response=self.response("in_progress", []))
        try:
            if self.plan.reads_calls:
                text = await gen.text()
            else:
                text = ""
                async for part in self._stream_text(gen):
                    if isinstance(part, str):
                        text = part
                    else:
                        yield part
        except AgentError as exc:
            err = from_agent_error(exc)
            yield self.event("error", code=err.code, message=err.message, param=None)
            return
        status, output = self.finish(text)
        if self.plan.reads_calls:
            for index, item in enumerate(output):
                for event in self._item_events(index, item):
                    yield event
        elif output:
            output[0]["id"] = self._message_id
        kind = "response.completed" if status == "completed" else "response.incomplete"
        yield self.event(kind, response=self.response(status, output))

    async def _stream_text(self, gen: Generation) -> AsyncIterator[dict[str, Any] | str]:
        """Deltas of the one message item as tokens arrive; the full text last."""
        self._message_id = item_id = f"msg_{uuid.uuid4().hex}"
        yield self.event(
            "response.output_item.added",
            output_index=0,
            item=_message_item(item_id, None, "in_progress"),
        )
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        at = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield self.event("response.content_part.added", **at, part=part)
        pieces: list[str] = []
        async for chunks in gen:
            delta = "".join(c.text for c in chunks)
            if delta:
                pieces.append(delta)
                yield self.event("response.output_text.delta", **at, delta=delta, logprobs=[])
        text = "".join(pieces)
        yield self.event("response.output_text.done", **at, text=text, logprobs=[])
        yield self.event("response.content_part.done", **at, part={**part, "text": text})
        yield self.event(
            "response.output_item.done",
            output_index=0,
            item=_message_item(item_id, text, "completed"),
        )
        yield text

    def _item_events(self, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        if item["type"] == "message":
            text = item["content"][0]["text"]
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            part = item["content"][0]
            return [
                self.event(
                    "response.output_item.added",
                    output_index=index,
                    item=_message_item(item["id"], None, "in_progress"),
                ),
                self.event("response.content_part.added", **at, part={**part, "text": ""}),
                self.event("response.output_text.delta", **at, delta=text, logprobs=[]),
                self.event("response.output_text.done", **at, text=text, logprobs=[]),
                self.event("response.content_part.done", **at, part=part),
                self.event("response.output_item.done", output_index=index, item=item),
            ]
        at = {"item_id": item["id"], "output_index": index}
        return [
            self.event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            ),
            self.event("response.function_call_arguments.delta", **at, delta=item["arguments"]),
            self.event(
                "response.function_call_arguments.done",
                **at,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = (
        []
        if text is None
        else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    )
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": content,
    }
