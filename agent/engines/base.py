"""The one interface every engine implements, and the types it speaks."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from agent.errors import ModelLoadError

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class OutputConstraint:
    """The generated text must be JSON: any object, or one matching a JSON schema.

    Engines apply it per sequence while sampling (constrained decoding), so the text parses
    and validates however hot the temperature; `schema` is the schema as JSON text, None for
    any JSON object.
    """

    schema: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 means greedy."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    constraint: OutputConstraint | None = None  # only engines with constrained_decoding
    # None: no log-probabilities (nothing computed); k >= 0: each token's own and the k most
    # likely alternatives (only engines with exposes_logprobs).
    logprobs: int | None = None
    # The same for the prompt's tokens (echo; only engines with exposes_prompt_logprobs): the
    # prompt is then evaluated whole, never from a cached prefix.
    prompt_logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """How likely the model found one generated token, and its most likely alternatives.

    Log-probabilities of the model's own distribution (a log-softmax of the logits, before
    temperature, penalties or a grammar); `top` is sorted, most likely first.
    """

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclass(frozen=True)
class TokenChunk:
    """Text produced by one step.

    Empty while a stop string or a split UTF-8 character is pending; text still pending when
    generation ends rides on a last chunk with `token_id` -1.
    """

    text: str
    token_id: int
    logprob: TokenLogprob | None = None  # only when SamplingParams.logprobs asked for it


@dataclass(frozen=True)
class PromptLogprobs:
    """How likely the model found each prompt token after the ones before it."""

    first: bytes  # the first token's bytes: nothing before it gives it a log-probability
    scored: tuple[TokenLogprob, ...]  # the second token on


@dataclass(frozen=True)
class Completion:
    """The last thing a generation yields: why it stopped and the counts."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    prompt_eval_ns: int = 0
    eval_ns: int = 0
    prompt_logprobs: PromptLogprobs | None = None  # when SamplingParams.prompt_logprobs asked


@dataclass
class EngineStats:
    """Counters an engine keeps since load."""

    load_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    device: str = "CPU"
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    """What the agent tells an engine at load time."""

    context_length: int = 2048
    device: str = "CPU"
    threads: int | None = None
    gpu_layers: int = 0
    cache_dir: Path | None = None
    # Bytes of GPU memory the engine may fill (hwprobe found a GPU); None: no GPU to use.
    gpu_memory_bytes: int | None = None
    # Sequences a batching engine serves at once; 0: as many as memory_bytes allows.
    parallel: int = 0
    # Bytes of system memory free for weights and KV caches (hwprobe); None: unknown.
    memory_bytes: int | None = None
    # A dedicated embedding model (the manifest variant's embedding_file); None: the model's own.
    embedding_model: Path | None = None
    # CPU math under which a greedy answer is the same alone or in a batch (OpenVINO: f32, no
    # dynamic activation quantization); False: the engine's fastest CPU defaults.
    batch_invariant: bool = True


@dataclass(frozen=True)
class ModelChatInfo:
    """What a loaded model file says about chat: its template and its special tokens."""

    template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    end_of_turn: tuple[str, ...] = ()  # texts of the tokens that end generation
    specials: frozenset[str] = frozenset()  # asked-about texts that are one special token


@runtime_checkable
class ChatInfoSource(Protocol):
    """An engine that can read the chat metadata of the model it loaded (GGUF engines)."""

    def chat_info(self, candidates: Sequence[str]) -> ModelChatInfo:
        """The model's template, BOS/EOS and end-of-turn texts; which candidates are special."""
        ...


@runtime_checkable
class EmbeddingSource(Protocol):
    """An engine that can embed text with the model it loaded."""

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """One pooled, L2-normalised vector per text, and the tokens the texts took."""
        ...


def find_model_file(model_path: Path, suffix: str, preferred: str = "") -> Path:
    """The engine's model file: the path itself, `preferred`, or the only `*suffix` in it."""
    if model_path.is_file():
        return model_path
    if preferred and (model_path / preferred).is_file():
        return model_path / preferred
    found = sorted(model_path.glob(f"*{suffix}"))
    if len(found) != 1:
        raise ModelLoadError(f"expected one {suffix} file in {model_path}, found {len(found)}")
    return found[0]


def exposes_logprobs(engine: object) -> bool:
    """Whether the engine fills TokenChunk.logprob when SamplingParams.logprobs asks."""
    return bool(getattr(engine, "exposes_logprobs", False))


def exposes_prompt_logprobs(engine: object) -> bool:
    """Whether the engine fills Completion.prompt_logprobs when SamplingParams asks."""
    return bool(getattr(engine, "exposes_prompt_logprobs", False))


def top_logprobs_limit(engine: object) -> int | None:
    """How many alternatives per token the engine can give with a log-probability (None: as
    many as asked)."""
    limit = getattr(engine, "top_logprobs_limit", None)
    return None if limit is None else int(limit)


@runtime_checkable
class FillInTheMiddle(Protocol):
    """An engine whose model has fill-in-the-middle tokens (code models)."""

    def fim_tokens(self) -> tuple[str, str, str] | None:
        """The texts of the prefix, suffix and middle tokens; None when the model has none."""
        ...


@runtime_checkable
class Engine(Protocol):
    """A loaded model that turns a prompt into a stream of tokens.

    `generate` yields TokenChunk items, then exactly one Completion, and stops early when
    `cancel` is set (finish_reason "cancelled"). It is called from a worker thread, never
    from the event loop; one generation runs at a time per engine.
    """

    name: str

    def load(self, model_path: Path, options: LoadOptions) -> None:
        """Load the variant's files (a directory or a single file)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the text takes, special tokens included as the engine would add them."""
        ...

    def generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[TokenChunk | Completion]:
        """Stream tokens for `prompt` (already chat-templated), then one Completion."""
        ...

    def unload(self) -> None:
        """Free the model; load may be called again afterwards."""
        ...

    def stats(self) -> EngineStats:
        """Counters since load."""
        ...

    @property
    def context_length(self) -> int:
        """Tokens of context the loaded model accepts."""
        ...
