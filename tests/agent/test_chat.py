"""Chat templates rendered in a sandbox."""

from __future__ import annotations

import pytest

from agent.chat import (
    CHATML_TEMPLATE,
    ChatTemplateError,
    chat_format,
    chat_stop_strings,
    render_chat,
)

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


def test_the_model_template_is_used_with_its_end_of_turn_stops() -> None:
    found = chat_format(
        LLAMA_LIKE, source="gguf", bos_token="<s>", eos_token="</s>", end_of_turn=("<|eot_id|>",)
    )
    assert (found.source, found.name, found.is_fallback) == ("gguf", "model", False)
    assert found.stop_strings == ("<|eot_id|>", "</s>")
    assert found.render([{"role": "user", "content": "a"}]) == "<s>[INST] a [/INST]"


def test_a_model_without_a_template_gets_a_named_fallback_from_its_vocabulary() -> None:
    gemma = chat_format(
        None,
        source="gguf",
        bos_token="<bos>",
        eos_token="<eos>",
        specials={"<start_of_turn>", "<end_of_turn>", "<eos>"},
    )
    assert (gemma.is_fallback, gemma.name, gemma.label) == (True, "gemma", "fallback: gemma")
    assert "<start_of_turn>" in gemma.describe() and "no chat template" in gemma.describe()
    text = gemma.render([{"role": "user", "content": " hi "}])
    assert text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert gemma.stop_strings == ("<end_of_turn>", "<eos>")
    plain = chat_format("", source="gguf", specials=set())
    assert plain.name == "transcript" and plain.render([{"role": "user", "content": "x"}]) == (
        "User: x\n\nAssistant:"
    )
    assert "\nUser:" in plain.stop_strings and "\nUser:" in chat_stop_strings(plain.template, None)
    unknown = chat_format(None, source="gguf")
    assert unknown.name == "chatml" and "vocabulary is unknown" in unknown.reason


def test_tools_reach_the_template_only_when_given() -> None:
    template = "{% if tools is defined %}{{ tools | length }} tools{% else %}none{% endif %}"
    found = chat_format(template, source="manifest")
    assert found.render([]) == "none"
    assert found.render([], tools=[{"type": "function", "function": {"name": "f"}}]) == "1 tools"
