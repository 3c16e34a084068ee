"""Turn chat messages into a prompt with the model's Jinja2 chat template (sandboxed)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.errors import AgentError

# The template for a bare .gguf with no manifest: ChatML, which most small chat models know.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_END = "<|im_end|>"

Message = Mapping[str, Any]


class ChatTemplateError(AgentError):
    """The model's chat template cannot render these messages."""


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
) -> str:
    """The prompt text for `messages`, ending with the assistant's turn opener."""
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"the model's chat template does not parse (line {exc.lineno}: {exc.message}); "
            "fix chat_template in the manifest"
        ) from exc
    try:
        return compiled.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token or "",
            eos_token=eos_token or "",
        )
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template rejected the messages: {exc}") from exc
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ChatTemplateError(
            f"the model's chat template failed on these messages ({type(exc).__name__}: {exc}); "
            "check chat_template in the manifest"
        ) from exc


def chat_stop_strings(template: str, eos_token: str | None) -> tuple[str, ...]:
    """Strings that end an assistant turn for this template (besides the EOS token id)."""
    stops: list[str] = []
    if CHATML_END in template:
        stops.append(CHATML_END)
    if eos_token and eos_token not in stops:
        stops.append(eos_token)
    return tuple(stops)
