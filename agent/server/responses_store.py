"""Conversations of recent responses, kept in agent memory for `previous_response_id`."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from agent.server.errors import ApiError

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
