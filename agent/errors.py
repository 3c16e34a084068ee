"""The agent's exception tree; third-party errors are translated once, at the boundary."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class EngineError(AgentError):
    """An engine failed to load, run or unload."""


class EngineUnavailable(EngineError):
    """The engine's runtime library is not installed or has no usable device."""


class ModelLoadError(EngineError):
    """The model files could not be loaded by the engine."""


class ContextOverflow(AgentError):
    """The prompt plus requested tokens do not fit in the context window."""

    def __init__(self, prompt_tokens: int, max_tokens: int, context_length: int) -> None:
        super().__init__(
            f"prompt has {prompt_tokens} tokens and {max_tokens} more were requested, "
            f"but the model's context is {context_length} tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length


class SelectionError(AgentError):
    """No variant of the model can run on this device; the message says why."""
