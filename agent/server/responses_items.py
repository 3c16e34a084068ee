"""Output items of a Responses API turn and the events that stream them, piece by piece."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from agent.engines.base import TokenLogprob
from agent.server.logprobs import openai_content
from agent.tool_calls import ToolCall

EventMaker = Callable[..., dict[str, Any]]  # (type, **fields) -> the event, numbered


class MessageStream:
    """The events of one message item whose text arrives in pieces.

    With `logprobs` (the request asked for them) each delta carries the entries of the tokens
    pushed with it, and the finished part all of them.
    """

    def __init__(
        self, event: EventMaker, index: int, item_id: str | None = None, *, logprobs: bool = False
    ) -> None:
        self._event = event
        self.id = item_id or f"msg_{uuid.uuid4().hex}"
        self._at = {"item_id": self.id, "output_index": index, "content_index": 0}
        self._index = index
        self.text = ""
        self._logprobs = logprobs
        self.found: list[TokenLogprob] = []
        self._unsent: list[TokenLogprob] = []  # tokens that came with no text yet

    def item(self, status: str) -> dict[str, Any]:
        """The item as it stands."""
        text = self.text if status == "completed" else None
        return message_item(self.id, text, status, self.found)

    def open(self) -> list[dict[str, Any]]:
        """output_item.added and content_part.added."""
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._event(
                "response.output_item.added",
                output_index=self._index,
                item=self.item("in_progress"),
            ),
            self._event("response.content_part.added", **self._at, part=part),
        ]

    def push(self, delta: str, found: Sequence[TokenLogprob] = ()) -> list[dict[str, Any]]:
        """An output_text.delta with the entries of `found` (none when both are empty)."""
        if self._logprobs:
            self.found.extend(found)
            self._unsent.extend(found)
        if not delta and not self._unsent:
            return []
        self.text += delta
        sent, self._unsent = self._unsent, []
        logprobs = openai_content(sent, with_bytes=False)
        return [
            self._event("response.output_text.delta", **self._at, delta=delta, logprobs=logprobs)
        ]

    def close(self) -> list[dict[str, Any]]:
        """output_text.done, content_part.done and output_item.done."""
        item = self.item("completed")
        logprobs = openai_content(self.found, with_bytes=False)
        return [
            self._event("response.output_text.done", **self._at, text=self.text, logprobs=logprobs),
            self._event("response.content_part.done", **self._at, part=item["content"][0]),
            self._event("response.output_item.done", output_index=self._index, item=item),
        ]


class CallStream:
    """The events of one function_call item whose arguments arrive in pieces."""

    def __init__(
        self,
        event: EventMaker,
        index: int,
        name: str,
        call_id: str,
        item_id: str | None = None,
    ) -> None:
        self._event = event
        self.id = item_id or f"fc_{uuid.uuid4().hex}"
        self._index = index
        self.name = name
        self.call_id = call_id
        self.arguments = ""

    def item(self, status: str) -> dict[str, Any]:
        """The item as it stands."""
        call = ToolCall(self.call_id, self.name, self.arguments if status == "completed" else "")
        return call_item(self.id, call, status)

    def open(self) -> list[dict[str, Any]]:
        """output_item.added with empty arguments."""
        item = self.item("in_progress")
        return [self._event("response.output_item.added", output_index=self._index, item=item)]

    def push(self, arguments_so_far: str) -> list[dict[str, Any]]:
        """A function_call_arguments.delta with what `arguments_so_far` adds (none if nothing)."""
        delta = arguments_so_far[len(self.arguments) :]
        if not delta or not arguments_so_far.startswith(self.arguments):
            return []
        self.arguments = arguments_so_far
        at = {"item_id": self.id, "output_index": self._index}
        return [self._event("response.function_call_arguments.delta", **at, delta=delta)]

    def close(self) -> list[dict[str, Any]]:
        """function_call_arguments.done and output_item.done."""
        at = {"item_id": self.id, "output_index": self._index}
        return [
            self._event(
                "response.function_call_arguments.done",
                **at,
                name=self.name,
                arguments=self.arguments,
            ),
            self._event(
                "response.output_item.done",
                output_index=self._index,
                item=self.item("completed"),
            ),
        ]


def call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def message_item(
    item_id: str, text: str | None, status: str, found: Sequence[TokenLogprob] = ()
) -> dict[str, Any]:
    """A message item; its output_text carries the entries of `found` (of its tokens)."""
    part = {
        "type": "output_text",
        "text": text,
        "annotations": [],
        "logprobs": openai_content(found),
    }
    content = [] if text is None else [part]
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": content,
    }


class ForcedCallReader:
    """Reads a forced call's JSON (`name` and `arguments`, in either order) as it is generated.

    A character scanner over the top-level object: it knows the name once its string closes
    and the arguments' text from their first character, so they can stream before the end.
    """

    def __init__(self) -> None:
        self.text = ""
        self.name: str | None = None
        self.complete = False  # the arguments' value has closed
        self._start: int | None = None
        self._end: int | None = None
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._string_at = 0
        self._key: str | None = None
        self._in_value = False  # after a top-level ':' until its value ends

    @property
    def arguments(self) -> str:
        """The arguments' JSON text so far (all of it once `complete`)."""
        if self._start is None:
            return ""
        return self.text[self._start : self._end if self._end is not None else len(self.text)]

    def push(self, piece: str) -> None:
        """Scan more generated text."""
        at = len(self.text)
        self.text += piece
        for index in range(at, len(self.text)):
            self._scan(index, self.text[index])

    def _scan(self, index: int, char: str) -> None:
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
                if self._depth == 1:
                    self._top_level_string(json.loads(self.text[self._string_at : index + 1]))
        elif char == '"':
            self._in_string, self._string_at = True, index
        elif self._depth == 1 and char == ":":
            self._in_value = True
        elif self._depth == 1 and char == ",":
            self._in_value = False
        elif char in "{[":
            if self._depth == 1 and self._in_value and self._key == "arguments":
                self._start = index
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
            if self._depth == 1 and self._start is not None and self._end is None:
                self._end, self.complete = index + 1, True

    def _top_level_string(self, value: str) -> None:
        if not self._in_value:
            self._key = value
        elif self._key == "name":
            self.name = value
