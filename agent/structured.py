"""Structured output: JSON schemas turned into an OutputConstraint, refused when not enforceable.

The constraint is applied by the engine while sampling, so what a schema says must be
something the grammar can enforce: keywords it cannot (numeric bounds, `not`, ...) are refused
up front, naming the keyword, instead of being silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.engines.base import OutputConstraint
from agent.errors import AgentError

# Enforced by the grammar (or only describing the schema).
ENFORCED_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "strict",
    }
)
# String formats the grammar writes out; any other `format` would be ignored, so it is refused.
ENFORCED_FORMATS = frozenset({"date", "time", "date-time", "uuid"})
# Length and count bounds, capped: the grammar writes one nested rule per allowed character.
_BOUNDS = ("minLength", "maxLength", "minItems", "maxItems")
MAX_BOUND = 1000  # llama.cpp fails to parse the grammar of 2048 (measured)
# Keywords whose values are schemas (or maps/lists of them), walked for nested keywords.
_NESTED_MAPS = ("properties", "$defs", "definitions")
_NESTED_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_NESTED_ONE = ("items", "additionalProperties")


class SchemaNotEnforceable(AgentError):
    """A JSON schema uses a keyword constrained decoding cannot enforce."""

    def __init__(self, message: str, keyword: str) -> None:
        super().__init__(message)
        self.keyword = keyword


def applies_constraints(engine: object) -> bool:
    """Whether the engine applies SamplingParams.constraint (constrained decoding)."""
    return bool(getattr(engine, "constrained_decoding", False))


def check_schema(schema: Any, where: str = "schema") -> None:
    """Raise SchemaNotEnforceable for a keyword or format the grammar cannot enforce."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise SchemaNotEnforceable(f"{where} must be a JSON object (a JSON schema)", where)
    for key, value in schema.items():
        if key not in ENFORCED_KEYWORDS:
            raise SchemaNotEnforceable(
                f"{where} uses '{key}', which constrained decoding cannot enforce; "
                f"supported keywords: {', '.join(sorted(ENFORCED_KEYWORDS))}",
                key,
            )
        if key in _BOUNDS and not (isinstance(value, int) and 0 <= value <= MAX_BOUND):
            # The grammar spells a bound out (one nested rule per character or item).
            raise SchemaNotEnforceable(
                f"{where}.{key} must be an integer from 0 to {MAX_BOUND} for constrained decoding",
                key,
            )
        if key == "$ref" and not str(value).startswith("#"):
            # A remote $ref would make the agent fetch a URL the client chose.
            raise SchemaNotEnforceable(
                f"{where} has $ref {value!r}: only references inside the schema ('#/...') "
                "are followed",
                key,
            )
        if key == "format" and value not in ENFORCED_FORMATS:
            raise SchemaNotEnforceable(
                f"{where} uses format '{value}', which constrained decoding cannot enforce; "
                f"supported formats: {', '.join(sorted(ENFORCED_FORMATS))}",
                key,
            )
        if key in _NESTED_MAPS and isinstance(value, Mapping):
            for name, sub in value.items():
                check_schema(sub, f"{where}.{key}.{name}")
        elif key in _NESTED_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                check_schema(sub, f"{where}.{key}[{index}]")
        elif key in _NESTED_ONE and isinstance(value, (Mapping, bool)):
            check_schema(value, f"{where}.{key}")


def json_constraint(schema: Mapping[str, Any] | None) -> OutputConstraint:
    """The constraint for a JSON schema (checked), or for any JSON object when None."""
    if schema is None:
        return OutputConstraint()
    check_schema(schema)
    return OutputConstraint(schema=json.dumps(schema, sort_keys=True))
