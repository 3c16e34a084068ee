"""The `edgefleet-models` command line: subcommands, options and their help."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.keys import default_key_path, edgefleet_home


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per action."""
    parser = argparse.ArgumentParser(
        prog="edgefleet-models",
        description="Sign, verify, store and build EdgeFleet models (a directory with "
        "manifest.json, manifest.sig and the files each variant lists).",
    )
    parser.add_argument("--debug", action="store_true", help="log and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "keygen",
        help="create an Ed25519 signing key",
        description="Create an Ed25519 signing key (PEM, mode 0600) and write its "
        "public key next to it as <name>.pub.",
    )
    p.add_argument("--out", type=Path, help=f"key file (default: {default_key_path()})")
    p.add_argument("--force", action="store_true", help="replace an existing key")

    p = sub.add_parser(
        "verify",
        help="check a model directory's signature and files",
        description="Check manifest.sig against manifest.json and every listed "
        "file's size and sha256. Exit 0 when all hold, 1 with the reason.",
    )
    _add_model_dir(p, "dir")
    _add_trust(p)
    p.add_argument("--variant", action="append", help="check only this variant's files")

    p = sub.add_parser(
        "sign",
        help="(re)sign a model directory's manifest as it is",
        description="Sign manifest.json as it is (file entries are not "
        "recomputed) and write manifest.sig.",
    )
    _add_model_dir(p, "dir")
    _add_key(p, f"default: {default_key_path()}")

    p = sub.add_parser(
        "import",
        help="verify a local model directory and add it to the store",
        description="Verify a model directory, then copy its files into the "
        "content-addressed store (air-gapped import).",
    )
    _add_model_dir(p, "src")
    _add_store(p)
    _add_trust(p)

    _add_store(sub.add_parser("list", help="list the models in the store"))
    p = sub.add_parser("remove", help="forget a model version (gc frees its files)")
    p.add_argument("ref", metavar="NAME:VERSION")
    _add_store(p)
    _add_store(sub.add_parser("gc", help="delete blobs no model uses and stale partial downloads"))

    p = sub.add_parser(
        "build",
        help="turn a Hugging Face checkpoint or a .gguf into a signed model directory",
        description="Convert a Hugging Face checkpoint (Llama/SmolLM, Qwen2/2.5/3, Gemma 2/3, "
        "Phi-3, Mistral) into the given targets, or take a .gguf file as it is (its metadata "
        "becomes the manifest), and sign the manifest (needs the build extra).",
    )
    p.add_argument(
        "src", type=Path, metavar="SRC", help="Hugging Face checkpoint dir, or a .gguf file"
    )
    _add_out_dir(p)
    p.add_argument(
        "--targets",
        help="comma-separated targets for a checkpoint (default: gguf-q4,openvino-int8,onnx); "
        "a .gguf is signed as it is",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="when a target fails, sign what built and exit 0 (the failures are listed)",
    )
    p.add_argument(
        "--hardlink", action="store_true", help="hard-link a .gguf into --out instead of copying"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show converter logs and warnings")
    _add_key(p, f"created if absent; default: {default_key_path()}")
    p.add_argument("--name", help="model name (default: from SRC)")
    p.add_argument("--version", help="model version (default: from the weights' hash)")

    p = sub.add_parser(
        "reference",
        help="build a reference test model (tiny or mid)",
        description="Build a deterministic reference model: 'tiny' for tests, "
        "'mid' for benchmarks (needs the build extra).",
    )
    p.add_argument("kind", choices=["tiny", "mid"])
    _add_out_dir(p)
    _add_key(p, "created if absent; default: the public reference TEST key")
    return parser


def _add_model_dir(p: argparse.ArgumentParser, dest: str) -> None:
    """The positional model directory a subcommand reads."""
    p.add_argument(dest, type=Path, help="model directory")


def _add_out_dir(p: argparse.ArgumentParser) -> None:
    """The output model directory of the subcommands that build one."""
    p.add_argument("--out", type=Path, required=True, help="output model directory")


def _add_key(p: argparse.ArgumentParser, default: str) -> None:
    """The private key option of the subcommands that sign; `default` says which key is used."""
    p.add_argument("--key", type=Path, help=f"private key ({default})")


def _add_store(p: argparse.ArgumentParser) -> None:
    """The artifact store option of the store's subcommands."""
    p.add_argument(
        "--store", type=Path, help=f"artifact store (default: {edgefleet_home() / 'store'})"
    )


def _add_trust(p: argparse.ArgumentParser) -> None:
    """The trusted keys option of the subcommands that verify signatures."""
    help_ = "trusted public key file (base64 lines or PEM); repeatable"
    p.add_argument("--trust", type=Path, action="append", help=help_)
