"""The fake engine's answer under an OutputConstraint: a small JSON value matching the schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.engines.base import OutputConstraint


def constrained_text(constraint: OutputConstraint, word: str) -> str:
    """JSON text that satisfies `constraint`; `word` fills free strings (varies with prompt)."""
    if constraint.schema is None:
        return json.dumps({"answer": word})
    schema = json.loads(constraint.schema)
    return json.dumps(schema_example(schema, schema, word))


def schema_example(schema: Any, root: Mapping[str, Any], word: str) -> Any:
    """A value valid against `schema` (the subset structured output accepts)."""
    if not isinstance(schema, Mapping):
        return word
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target[part]
        return schema_example(target, root, word)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return schema_example(schema[union][0], root, word)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = schema_example(part, root, word)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object" or (kind is None and "properties" in schema):
        props: Mapping[str, Any] = schema.get("properties", {})
        return {name: schema_example(sub, root, word) for name, sub in props.items()}
    if kind == "array":
        count = int(schema.get("minItems", 1))
        return [schema_example(schema.get("items", {}), root, word) for _ in range(count)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _sized(word, schema)


def _sized(word: str, schema: Mapping[str, Any]) -> str:
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    text = word.ljust(low, "x")
    return text[: int(high)] if high is not None else text
