"""One Responses API turn: the conversation, the generation, the Response and its events.

A response's conversation is kept in agent memory (ResponseStore) for `previous_response_id`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from agent.engines.base import SamplingParams, TokenLogprob
from agent.errors import AgentError
from agent.generation import Generation
from agent.model_loading import LoadedModel
from agent.runtime import ModelRuntime
from agent.server.chat_plan import Answer, ChatPlan
from agent.server.deps import fill_context, nonempty_prompt, sampling
from agent.server.deps import served_model as _served
from agent.server.errors import ApiError, from_agent_error
from agent.server.limits import RequestLimits
from agent.server.logprobs import check_engine, covering, of_chunks
from agent.server.responses_items import (
    CallStream,
    ForcedCallReader,
    MessageStream,
    call_item,
    message_item,
)
from agent.server.responses_requests import ResponsesRequest
from agent.server.responses_store import ResponseStore
from agent.tool_calls import ToolCall, new_call_id


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
        self.logprobs_top = body.logprobs_top()  # a bad `include` is 400 before any generation

    async def start(self, runtime: ModelRuntime, limits: RequestLimits) -> None:
        """Queue the generation (400/503 errors raise here, before any event)."""
        body, plan = self.body, self.plan
        limits.check_prompt((str(m.get("content", "")) for m in self.messages), "input")
        self.model = _served(runtime, body.model).ref

        def build(model: LoadedModel) -> tuple[str, SamplingParams]:
            prompt = nonempty_prompt(plan.render(model, self.messages), "input")
            params = sampling(  # the Responses API has no top_k, repeat_penalty or seed
                max_tokens=body.max_output_tokens,
                stop=model.chat.stop_strings,
                temperature=body.temperature,
                top_p=body.top_p,
            )
            if self.logprobs_top is not None:
                check_engine(model, body.logprobs_param(), self.logprobs_top)
            return prompt, replace(params, constraint=plan.constraint, logprobs=self.logprobs_top)

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
            "top_logprobs": body.top_logprobs,
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

    def finish(
        self, text: str, found: list[TokenLogprob] | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        """Status and output items (`found`: the tokens' logprobs); the conversation is stored."""
        content, calls = self.plan.read(text)
        output: list[dict[str, Any]] = []
        if content is not None and (content or not calls):
            spelled = covering(found or [], content)
            output.append(message_item(f"msg_{uuid.uuid4().hex}", content, "completed", spelled))
        output.extend(call_item(f"fc_{uuid.uuid4().hex}", call, "completed") for call in calls)
        return self._settle(content, calls), output

    def _settle(self, content: str | None, calls: list[ToolCall]) -> str:
        """Store the conversation; `completed`, or `incomplete` when the tokens ran out."""
        assistant: dict[str, Any] = {"role": "assistant", "content": content or ""}
        if calls:
            assistant["tool_calls"] = [c.as_openai() for c in calls]
        if self.body.store:
            self.store.put(self.id, [*self.messages, assistant])
        done = self.generation.completion if self.generation else None
        length = done is not None and done.finish_reason == "length" and not calls
        return "incomplete" if length else "completed"

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The streamed events of this turn, from response.created to completed (or error)."""
        gen = self.generation
        assert gen is not None
        yield self.event("response.created", response=self.response("in_progress", []))
        yield self.event("response.in_progress", response=self.response("in_progress", []))
        if self.plan.forced:
            parts = self._stream_forced_call(gen)
        elif self.plan.reads_calls:
            parts = self._stream_prose_and_calls(gen)
        else:
            parts = self._stream_text(gen)
        settled: tuple[str, list[dict[str, Any]]] | None = None
        try:
            async for part in parts:
                if isinstance(part, tuple):
                    settled = part
                else:
                    yield part
        except AgentError as exc:
            err = from_agent_error(exc)
            yield self.event("error", code=err.code, message=err.message, param=None)
            return
        assert settled is not None
        status, output = settled
        kind = "response.completed" if status == "completed" else "response.incomplete"
        yield self.event(kind, response=self.response(status, output))

    async def _stream_text(self, gen: Generation) -> AsyncIterator[_Part]:
        """Deltas of the one message item as tokens arrive; status and output last."""
        message = self._message_stream()
        for event in message.open():
            yield event
        async for chunks in gen:
            for event in message.push("".join(c.text for c in chunks), of_chunks(chunks)):
                yield event
        for event in message.close():
            yield event
        yield self._settle(message.text, []), [message.item("completed")]

    async def _stream_prose_and_calls(self, gen: Generation) -> AsyncIterator[_Part]:
        """Prose streams as a message item; the calls found in the answer follow, one item each."""
        message: MessageStream | None = None
        async for part in self.plan.stream(gen):
            if isinstance(part, Answer):
                answer = part
                continue
            if message is None:
                message = self._message_stream()
                for event in message.open():
                    yield event
            for event in message.push(part):
                yield event
        rest, calls = answer.content or "", answer.calls
        if message is None and (rest or not calls):
            message = self._message_stream()
            for event in message.open():
                yield event
        output: list[dict[str, Any]] = []
        if message is not None:  # a token is only known to be prose once the answer is read
            found = covering(answer.logprobs, message.text + rest)
            for event in [*message.push(rest, found), *message.close()]:
                yield event
            output.append(message.item("completed"))
        for call in calls:
            stream = CallStream(self.event, len(output), call.name, call.id)
            for event in [*stream.open(), *stream.push(call.arguments), *stream.close()]:
                yield event
            output.append(stream.item("completed"))
        content = message.text if message is not None else None
        yield self._settle(content, calls), output

    async def _stream_forced_call(self, gen: Generation) -> AsyncIterator[_Part]:
        """One forced call: its arguments stream as they are generated.

        The item opens once the name is known (at once when only one function can be called)
        and every character of the arguments' JSON is a delta as soon as it is generated.
        """
        reader = ForcedCallReader()
        stream: CallStream | None = None
        async for chunks in gen:
            reader.push("".join(c.text for c in chunks))
            name = self.plan.call_name or reader.name
            if stream is None and name is not None:
                stream = CallStream(self.event, 0, name, new_call_id())
                for event in stream.open():
                    yield event
            if stream is not None:
                for event in stream.push(reader.arguments):
                    yield event
        if stream is None:  # not the expected shape: report what there is, whole
            status, output = self.finish(reader.text)
            for index, item in enumerate(output):
                for event in self._item_events(index, item):
                    yield event
            yield status, output
            return
        for event in stream.close():  # arguments cut by max_output_tokens stay cut
            yield event
        call = ToolCall(stream.call_id, stream.name, stream.arguments)
        status = self._settle(None, [call]) if reader.complete else self._settle(None, [])
        yield status, [stream.item("completed")]

    def _message_stream(self) -> MessageStream:
        return MessageStream(self.event, 0, logprobs=self.logprobs_top is not None)

    def _item_events(self, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        """The events of one finished output item, sent whole."""
        if item["type"] == "message":
            message = MessageStream(self.event, index, item["id"])
            return [*message.open(), *message.push(item["content"][0]["text"]), *message.close()]
        stream = CallStream(self.event, index, item["name"], item["call_id"], item["id"])
        return [*stream.open(), *stream.push(item["arguments"]), *stream.close()]


_Part = dict[str, Any] | tuple[str, list[dict[str, Any]]]
