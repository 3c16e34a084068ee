"""The model manifest: one versioned, signed description of a model and its variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, Field, model_validator

from hwprobe.profile import EngineName  # the one list of engine names

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
SCHEMA_VERSION: Final = 1
_ADDED_TOKENIZER_FIELDS: Final = ("stop_tokens", "stop_token_ids")
_ADDED_VARIANT_FIELDS: Final = ("embedding_file",)

Format = Literal["gguf", "openvino", "onnx"]
Precision = Literal[
    "f32",
    "f16",
    "q8_0",
    "q4_0",
    "q4_k_m",
    "int8",
    "fp16",
    "fp32",
    # what else an imported GGUF may carry (llama.cpp file types)
    "bf16",
    "q4_1",
    "q5_0",
    "q5_1",
    "q2_k",
    "q3_k_s",
    "q3_k_m",
    "q3_k_l",
    "q4_k_s",
    "q5_k_s",
    "q5_k_m",
    "q6_k",
    "iq1_s",
    "iq1_m",
    "iq2_xxs",
    "iq2_xs",
    "iq2_s",
    "iq2_m",
    "iq3_xxs",
    "iq3_xs",
    "iq3_s",
    "iq3_m",
    "iq4_nl",
    "iq4_xs",
    "tq1_0",
    "tq2_0",
    "mxfp4",
]


class FileEntry(BaseModel):
    """One file of a variant, relative to the model directory."""

    path: str = Field(description="POSIX path relative to the model directory")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Variant(BaseModel):
    """One runnable form of the model (a format at a precision) and the engines that run it."""

    id: str = Field(description="unique within the manifest, e.g. 'gguf-q4_0'")
    format: Format
    precision: Precision
    engines: list[EngineName]
    files: list[FileEntry]
    memory_bytes: int = Field(ge=0, description="weights + KV cache at the default context")
    built_on_device: bool = Field(
        default=False, description="true when an engine is compiled on the device (TensorRT)"
    )
    embedding_file: str | None = Field(
        default=None,
        description="path of a dedicated embedding GGUF, one of `files`: /v1/embeddings and "
        "/api/embed use it instead of pooling the chat model (llama.cpp)",
    )

    @model_validator(mode="after")
    def _embedding_file_is_listed(self) -> Variant:
        if self.embedding_file is not None:
            if self.embedding_file not in {f.path for f in self.files}:
                raise ValueError(f"embedding_file {self.embedding_file!r} is not in files")
            if not self.embedding_file.endswith(".gguf"):
                raise ValueError(f"embedding_file {self.embedding_file!r} is not a .gguf file")
        return self

    @property
    def size_bytes(self) -> int:
        """Bytes to download for this variant."""
        return sum(f.size for f in self.files)


class TokenizerInfo(BaseModel):
    """Where the tokenizer lives and its special tokens."""

    file: str = Field(default="tokenizer.json", description="HF tokenizers JSON, relative path")
    bos_token: str | None = None
    eos_token: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    stop_tokens: list[str] = Field(
        default_factory=list, description="texts of the tokens that end a turn (eos, eot, ...)"
    )
    stop_token_ids: list[int] = Field(default_factory=list, description="their ids")


class HealthBudget(BaseModel):
    """Limits a smoke generation must meet for a rollout's health gate."""

    prompt: str = "Hello"
    max_tokens: int = Field(default=16, ge=1)
    max_first_token_ms: float = Field(default=5000.0, gt=0)
    min_tokens_per_s: float = Field(default=1.0, ge=0)


class Manifest(BaseModel):
    """A model version: architecture, tokenizer, chat template and its variants."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    architecture: str = Field(description="e.g. 'llama'")
    context_length: int = Field(gt=0)
    parameters: int = Field(default=0, ge=0)
    tokenizer: TokenizerInfo = Field(default_factory=TokenizerInfo)
    chat_template: str | None = Field(
        default=None, description="Jinja2 template over `messages`; None for a base model"
    )
    variants: list[Variant]
    health: HealthBudget = Field(default_factory=HealthBudget)

    @property
    def ref(self) -> str:
        """`name:version`, the way users and rollouts name a model."""
        return f"{self.name}:{self.version}"

    def variant(self, variant_id: str) -> Variant:
        """The variant with this id, or KeyError."""
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise KeyError(f"model {self.ref} has no variant {variant_id!r}")

    def canonical_bytes(self) -> bytes:
        """The exact bytes the signature covers: sorted keys, no whitespace, UTF-8."""
        data = self.model_dump(mode="json")
        # Fields added after the first release are left out while empty, so manifests signed
        # before they existed keep verifying.
        for key in _ADDED_TOKENIZER_FIELDS:
            if not data["tokenizer"][key]:
                del data["tokenizer"][key]
        for variant in data["variants"]:
            for key in _ADDED_VARIANT_FIELDS:
                if variant[key] is None:
                    del variant[key]
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        """Read `manifest.json` from a model directory (no signature check)."""
        return cls.model_validate_json((model_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
