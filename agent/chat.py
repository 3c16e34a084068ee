"""Turn chat messages into a prompt with the model's Jinja2 chat template (sandboxed).

A model's own template (GGUF metadata or manifest) is used as it is. A model without one (a
base model) gets a named fallback chosen from the special tokens its vocabulary has, and the
choice is reported, never silent.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.errors import AgentError
from models.build.checkpoint import END_OF_TURN_TEXTS

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_END = "<|im_end|>"
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# For a vocabulary with no turn markers at all: a plain transcript a base model can continue.
TRANSCRIPT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize + ': ' + message['content'] | trim + '\\n\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Texts that end an assistant turn: a template that writes one literally, or a vocabulary
# whose end-of-generation tokens are one, stops on it (the end-of-sequence texts too).
END_OF_TURN_MARKERS = (*END_OF_TURN_TEXTS, "</s>", "<eos>")

Message = Mapping[str, Any]
# Response header on chat answers naming the template used: `model (gguf)`, `fallback: gemma`.
CHAT_TEMPLATE_HEADER = "X-EdgeFleet-Chat-Template"


@dataclass(frozen=True)
class FallbackTemplate:
    """A template for models without one, usable when the vocabulary has its markers."""

    name: str
    template: str
    markers: tuple[str, ...]
    stops: tuple[str, ...]


# First whose markers are all special tokens of the model wins; the transcript always fits.
FALLBACKS = (
    FallbackTemplate("chatml", CHATML_TEMPLATE, ("<|im_start|>", CHATML_END), (CHATML_END,)),
    FallbackTemplate(
        "gemma", GEMMA_TEMPLATE, ("<start_of_turn>", "<end_of_turn>"), ("<end_of_turn>",)
    ),
    FallbackTemplate(
        "llama3", LLAMA3_TEMPLATE, ("<|start_header_id|>", "<|eot_id|>"), ("<|eot_id|>",)
    ),
    FallbackTemplate("transcript", TRANSCRIPT_TEMPLATE, (), ("\nUser:", "\nSystem:")),
)
# Every special text an engine is asked about when it reports a model's vocabulary.
KNOWN_SPECIALS = tuple(
    dict.fromkeys([*END_OF_TURN_MARKERS, *(m for f in FALLBACKS for m in f.markers)])
)


class ChatTemplateError(AgentError):
    """The model's chat template cannot render these messages."""


@dataclass(frozen=True)
class ChatFormat:
    """How one model turns messages into a prompt, and the texts that end its turn."""

    template: str
    source: str  # "gguf", "manifest", or "fallback"
    name: str  # "model" for the model's own template, else the fallback's name
    bos_token: str | None = None
    eos_token: str | None = None
    stop_strings: tuple[str, ...] = ()
    reason: str = ""

    @property
    def is_fallback(self) -> bool:
        """True when the model has no template of its own."""
        return self.source == "fallback"

    @property
    def label(self) -> str:
        """Short name for headers and logs: `model (gguf)` or `fallback: gemma`."""
        return f"fallback: {self.name}" if self.is_fallback else f"model ({self.source})"

    def as_header(self) -> dict[str, str]:
        """The CHAT_TEMPLATE_HEADER for chat responses."""
        return {CHAT_TEMPLATE_HEADER: self.label}

    def describe(self) -> str:
        """One sentence saying which template chat uses and why."""
        if self.is_fallback:
            return f"fallback template '{self.name}': {self.reason}"
        return f"the model's own chat template (from its {self.source})"

    def render(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt text for `messages` in this model's format."""
        return render_chat(
            self.template,
            messages,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
        )


def chat_format(
    template: str | None,
    *,
    source: str,
    bos_token: str | None = None,
    eos_token: str | None = None,
    end_of_turn: Sequence[str] = (),
    specials: Collection[str] | None = None,
) -> ChatFormat:
    """The model's template with its stop texts, or a named fallback when it has none.

    `end_of_turn` are the texts of the model's end-of-generation tokens; `specials` the
    KNOWN_SPECIALS its vocabulary holds as single special tokens (None: unknown).
    """
    if template and template.strip():
        stops = _stops(template, eos_token, end_of_turn)
        return ChatFormat(template, source, "model", bos_token, eos_token, stops)
    if specials is None:
        fallback = FALLBACKS[0]
        reason = "the model has no chat template and its vocabulary is unknown"
    else:
        fallback = next(f for f in FALLBACKS if set(f.markers) <= set(specials))
        why = (
            f"its vocabulary has {' and '.join(fallback.markers)}"
            if fallback.markers
            else "its vocabulary has no chat turn markers"
        )
        reason = f"the model has no chat template; {why}"
    stops = _stops(fallback.template, eos_token, (*fallback.stops, *end_of_turn))
    return ChatFormat(
        fallback.template, "fallback", fallback.name, bos_token, eos_token, stops, reason
    )


def _stops(template: str, eos_token: str | None, end_of_turn: Sequence[str]) -> tuple[str, ...]:
    found = [m for m in END_OF_TURN_MARKERS if m in template]
    return tuple(dict.fromkeys(s for s in (*found, *end_of_turn, eos_token or "") if s))


def _raise_exception(message: str) -> NoReturn:
    # Hugging Face templates call raise_exception() to reject a conversation.
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_chat(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The prompt text for `messages`, ending with the assistant's turn opener."""
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"the model's chat template does not parse (line {exc.lineno}: {exc.message}); "
            "fix chat_template in the manifest"
        ) from exc
    context: dict[str, Any] = {
        "messages": [dict(m) for m in messages],
        "add_generation_prompt": add_generation_prompt,
        "bos_token": bos_token or "",
        "eos_token": eos_token or "",
    }
    if tools is not None:  # templates test `tools is defined`: leave it undefined otherwise
        context["tools"] = [dict(t) for t in tools]
    try:
        return compiled.render(**context)
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template rejected the messages: {exc}") from exc
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ChatTemplateError(
            f"the model's chat template failed on these messages ({type(exc).__name__}: {exc}); "
            "check chat_template in the manifest"
        ) from exc


def chat_stop_strings(template: str, eos_token: str | None) -> tuple[str, ...]:
    """Strings that end an assistant turn for this template (besides the EOS token id)."""
    fallback = next((f.stops for f in FALLBACKS if f.template == template), ())
    return _stops(template, eos_token, fallback)
