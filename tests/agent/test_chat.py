"""Chat templates rendered in a sandbox."""

from __future__ import annotations

import pytest

from agent.chat import CHATML_TEMPLATE, ChatTemplateError, chat_stop_strings, render_chat

LLAMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('unknown role ' + m['role']) }}{% endif %}{% endfor %}"
)


def test_chatml_ends_with_the_assistant_opener() -> None:
    text = render_chat(CHATML_TEMPLATE, [{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_bos_and_eos_are_available() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    text = render_chat(LLAMA_LIKE, messages, bos_token="<s>", eos_token="</s>")
    assert text == "<s>[INST] a [/INST]b</s>"


def test_template_rejection_is_a_clear_error() -> None:
    with pytest.raises(ChatTemplateError, match="unknown role tool"):
        render_chat(LLAMA_LIKE, [{"role": "tool", "content": "x"}])


def test_broken_template_names_the_line() -> None:
    with pytest.raises(ChatTemplateError, match="does not parse"):
        render_chat("{% for m in messages %}", [{"role": "user", "content": "x"}])


def test_sandbox_blocks_attribute_escapes() -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ChatTemplateError):
        render_chat(evil, [{"role": "user", "content": "x"}])


def test_stop_strings_follow_the_template() -> None:
    assert chat_stop_strings(CHATML_TEMPLATE, "</s>") == ("<|im_end|>", "</s>")
    assert chat_stop_strings(LLAMA_LIKE, None) == ()
