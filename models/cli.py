"""`edgefleet-models`: make keys, sign, verify, import, build and store models."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import KeyFileError, ModelsError
from models.manifest import Manifest
from models.signing import (
    default_key_path,
    edgefleet_home,
    generate_key,
    key_id,
    load_or_create_key,
    load_private_key,
    load_public_keys,
    public_key_b64,
    save_private_key,
    verify_model_dir,
    write_signed_manifest,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

EXIT_FAILED, EXIT_NO_BUILD_EXTRA = 1, 2
BUILD_EXTRA_HINT = "the build extra is needed: pip install 'edgefleet[build]'"


def _trusted(files: Sequence[Path] | None) -> list[Ed25519PublicKey] | None:
    return load_public_keys(files) if files else None


def _signing_key(path: Path | None, *, create: bool) -> Ed25519PrivateKey:
    path = path or default_key_path()
    if create:
        existed = path.exists()
        key = load_or_create_key(path)
        if not existed:
            print(f"created signing key {path} (key id {key_id(key)})", file=sys.stderr)
        return key
    if not path.exists():
        raise KeyFileError(f"no signing key at {path}: run `edgefleet-models keygen` or pass --key")
    return load_private_key(path)


def _store_dir(arg: Path | None) -> Path:
    return arg or edgefleet_home() / "store"


def cmd_keygen(args: argparse.Namespace) -> int:
    out: Path = args.out or default_key_path()
    if out.exists() and not args.force:
        raise KeyFileError(
            f"{out} exists: pass --force to replace it (models it signed stay "
            "verifiable only with its public key)"
        )
    key = generate_key()
    save_private_key(key, out)
    pub_file = out.with_suffix(".pub")
    pub_file.write_text(f"{public_key_b64(key)}\n", encoding="utf-8")
    print(f"private key: {out}\npublic key file: {pub_file} (give it to devices to trust)")
    print(f"key id: {key_id(key)}\npublic key: {public_key_b64(key)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    trusted = _trusted(args.trust)
    manifest = verify_model_dir(args.dir, trusted, args.variant)
    variants = [manifest.variant(v) for v in args.variant] if args.variant else manifest.variants
    count = len({f.path for v in variants for f in v.files})
    if trusted is None:
        print(
            "warning: no --trust key given: checked integrity with the key the model carries, "
            "not who signed it",
            file=sys.stderr,
        )
    print(f"OK {manifest.ref}, {count} files verified")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    key = _signing_key(args.key, create=False)
    manifest = Manifest.load(args.dir)
    write_signed_manifest(args.dir, manifest, key)
    print(f"signed {manifest.ref} with key id {key_id(key)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from models.store import ArtifactStore

    store = ArtifactStore(_store_dir(args.store))
    manifest = store.import_model_dir(args.src, _trusted(args.trust))
    print(f"imported {manifest.ref} into {store.root}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from models.store import ArtifactStore

    store = ArtifactStore(_store_dir(args.store))
    for ref in store.list_models():
        variants = ", ".join(v.id for v in store.manifest(ref.name, ref.version).variants)
        print(f"{ref.name}:{ref.version}\t{variants}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from models.store import ArtifactStore

    name, sep, version = args.ref.partition(":")
    if not sep or not version:
        raise ModelsError(f"{args.ref!r} is not NAME:VERSION")
    ArtifactStore(_store_dir(args.store)).remove(name, version)
    print(f"removed {args.ref}; run `edgefleet-models gc` to free its files")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from models.store import ArtifactStore

    freed = ArtifactStore(_store_dir(args.store)).gc()
    print(f"freed {freed} bytes")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    try:
        from models.build.pipeline import build_model
    except ImportError as exc:
        logging.getLogger(__name__).debug("build import failed", exc_info=exc)
        print(BUILD_EXTRA_HINT, file=sys.stderr)
        return EXIT_NO_BUILD_EXTRA
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    key = _signing_key(args.key, create=True)
    manifest = build_model(args.hf_dir, args.out, targets, key, args.name, args.version)
    print(f"built {manifest.ref}: {', '.join(v.id for v in manifest.variants)} in {args.out}")
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    try:
        from models.reference import build_reference
    except ImportError as exc:
        logging.getLogger(__name__).debug("reference import failed", exc_info=exc)
        print(BUILD_EXTRA_HINT, file=sys.stderr)
        return EXIT_NO_BUILD_EXTRA
    key = _signing_key(args.key, create=True) if args.key else None
    manifest = build_reference(args.kind, args.out, key)
    print(f"built reference {manifest.ref}: {', '.join(v.id for v in manifest.variants)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per action."""
    parser = argparse.ArgumentParser(
        prog="edgefleet-models",
        description="Sign, verify, store and build EdgeFleet models (a directory with "
        "manifest.json, manifest.sig and the files each variant lists).",
    )
    parser.add_argument("--debug", action="store_true", help="log and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    trust_help = "trusted public key file (base64 lines or PEM); repeatable"

    p = sub.add_parser(
        "keygen",
        help="create an Ed25519 signing key",
        description="Create an Ed25519 signing key (PEM, mode 0600) and write its "
        "public key next to it as <name>.pub.",
    )
    p.add_argument("--out", type=Path, help=f"key file (default: {default_key_path()})")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser(
        "verify",
        help="check a model directory's signature and files",
        description="Check manifest.sig against manifest.json and every listed "
        "file's size and sha256. Exit 0 when all hold, 1 with the reason.",
    )
    p.add_argument("dir", type=Path, help="model directory")
    p.add_argument("--trust", type=Path, action="append", help=trust_help)
    p.add_argument("--variant", action="append", help="check only this variant's files")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "sign",
        help="(re)sign a model directory's manifest as it is",
        description="Sign manifest.json as it is (file entries are not "
        "recomputed) and write manifest.sig.",
    )
    p.add_argument("dir", type=Path, help="model directory")
    p.add_argument("--key", type=Path, help=f"private key (default: {default_key_path()})")
    p.set_defaults(func=cmd_sign)

    store_help = f"artifact store (default: {edgefleet_home() / 'store'})"
    p = sub.add_parser(
        "import",
        help="verify a local model directory and add it to the store",
        description="Verify a model directory, then copy its files into the "
        "content-addressed store (air-gapped import).",
    )
    p.add_argument("src", type=Path, help="model directory")
    p.add_argument("--store", type=Path, help=store_help)
    p.add_argument("--trust", type=Path, action="append", help=trust_help)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("list", help="list the models in the store")
    p.add_argument("--store", type=Path, help=store_help)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("remove", help="forget a model version (gc frees its files)")
    p.add_argument("ref", metavar="NAME:VERSION")
    p.add_argument("--store", type=Path, help=store_help)
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("gc", help="delete blobs no model uses and stale partial downloads")
    p.add_argument("--store", type=Path, help=store_help)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser(
        "build",
        help="convert a Hugging Face checkpoint into signed variants",
        description="Convert a Hugging Face Llama checkpoint into the given "
        "targets and sign the manifest (needs the build extra).",
    )
    p.add_argument("hf_dir", type=Path, metavar="HF_DIR", help="Hugging Face checkpoint dir")
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument(
        "--targets",
        default="gguf-q4,openvino-int8,onnx",
        help="comma-separated targets (default: %(default)s)",
    )
    p.add_argument(
        "--key", type=Path, help=f"private key (created if absent; default: {default_key_path()})"
    )
    p.add_argument("--name", help="model name (default: from HF_DIR)")
    p.add_argument("--version", help="model version (default: from the weights' hash)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser(
        "reference",
        help="build a reference test model (tiny or mid)",
        description="Build a deterministic reference model: 'tiny' for tests, "
        "'mid' for benchmarks (needs the build extra).",
    )
    p.add_argument("kind", choices=["tiny", "mid"])
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument(
        "--key",
        type=Path,
        help="private key (created if absent; default: the public reference TEST key)",
    )
    p.set_defaults(func=cmd_reference)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; the exit status is 0 on success, 1 on a refused operation."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        status: int = args.func(args)
    except ModelsError as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr
        )
        return EXIT_FAILED
    return status


if __name__ == "__main__":
    sys.exit(main())
