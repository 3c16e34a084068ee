"""GBNF grammars for llama.cpp's grammar sampler, from an OutputConstraint.

The GBNF text is built once per schema and kept; each sequence gets its own grammar sampler
(`llama_sampler_init_grammar`, agent/engines/llamacpp_batch.py) at the head of its sampler
chain, so one sequence's parse state never leaks into another.
"""

from __future__ import annotations

import functools

from agent.engines.base import OutputConstraint
from agent.errors import EngineError

# Any JSON object (OpenAI json_object, Ollama format "json"), whitespace bounded so a sampled
# run of spaces or newlines cannot eat the token budget.
JSON_OBJECT_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,8}
"""


@functools.lru_cache(maxsize=64)
def constraint_gbnf(constraint: OutputConstraint) -> str:
    """The GBNF text for `constraint` (cached per schema)."""
    if constraint.schema is None:
        return JSON_OBJECT_GBNF
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(constraint.schema))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise EngineError(f"llama.cpp cannot turn the JSON schema into a grammar: {exc}") from exc
