"""The build pipeline: a Hugging Face checkpoint -> GGUF, OpenVINO IR and ONNX variants, or a
.gguf as it is (models.build.gguf_import), signed.

Heavy dependencies (torch, transformers, optimum, nncf, gguf) are imported inside the functions
that need them; devices import `models` without installing any of them.
"""

from __future__ import annotations

from models.build.errors import BuildError

__all__ = ["BuildError"]
