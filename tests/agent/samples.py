"""Schemas, tools and conversations the agent's tests share (fake and real models alike)."""

from __future__ import annotations

from typing import Any

SMOLLM2 = "smollm2-135m-instruct.q4_1"  # the name a bare .gguf is served under: its file stem


def person_schema(max_name: int = 8) -> dict[str, Any]:
    """A person: a short name and an integer age, nothing else."""
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": max_name},
            "age": {"type": "integer"},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }


def weather_parameters(max_city: int | None = None) -> dict[str, Any]:
    """get_weather's parameters: a city (bounded and closed when `max_city` is given)."""
    city: dict[str, Any] = {"type": "string"}
    if max_city is None:
        return {"type": "object", "properties": {"city": city}, "required": ["city"]}
    city["maxLength"] = max_city
    return {
        "type": "object",
        "properties": {"city": city},
        "required": ["city"],
        "additionalProperties": False,
    }


WEATHER_DESCRIPTION = "The current weather in a city."


def weather_tool(max_city: int | None = None) -> dict[str, Any]:
    """get_weather as a chat completions / Ollama `tools` entry."""
    function = {
        "name": "get_weather",
        "description": WEATHER_DESCRIPTION,
        "parameters": weather_parameters(max_city),
    }
    return {"type": "function", "function": function}


def weather_response_tool(max_city: int | None = None) -> dict[str, Any]:
    """get_weather in the Responses API's flat shape."""
    return {"type": "function", **weather_tool(max_city)["function"]}


def weather_called(city: str = "Oslo", result: str = "sunny") -> list[dict[str, Any]]:
    """An assistant turn that called get_weather, and the tool's answer."""
    arguments = f'{{"city": "{city}"}}'
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
    ]


# Questions the batching tests run alone and then all together, where batched greedy output must
# equal solo output. An open-ended prompt whose first tokens are nearly tied ("Write a haiku
# about rain.") took the other branch in a batch while llama.cpp's sequences shared one unified
# KV cache; with a KV stream per sequence each one sums over its own cells only, as it would alone.
BATCH_QUESTIONS = (
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Tell me a story about a dragon who bakes bread.",
    "Count from one to five.",
)


def chatml_prompt(question: str, system: str = "You are a helpful assistant.") -> str:
    """One system and one user turn in SmolLM2's ChatML, ready for the assistant's answer."""
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
