"""`edgefleet-models`: make keys, sign, verify, import, build and store models."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from models.cli_parser import build_parser as build_parser  # re-exported: models.cli.build_parser
from models.errors import KeyFileError, ModelsError
from models.keys import (
    default_key_path,
    edgefleet_home,
    generate_key,
    key_id,
    load_or_create_key,
    load_private_key,
    load_public_keys,
    public_key_b64,
    save_private_key,
)
from models.manifest import Manifest
from models.signing import verify_model_dir, write_signed_manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

EXIT_FAILED, EXIT_NO_BUILD_EXTRA = 1, 2
BUILD_EXTRA_HINT = "the build extra is needed: pip install 'edgefleet[build]'"
DEFAULT_TARGETS = "gguf-q4,openvino-int8,onnx"


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
    """Create a signing key pair (`keygen`)."""
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
    """Check a model directory's signature and file hashes (`verify`)."""
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
    """Sign a model directory's manifest (`sign`)."""
    key = _signing_key(args.key, create=False)
    manifest = Manifest.load(args.dir)
    write_signed_manifest(args.dir, manifest, key)
    print(f"signed {manifest.ref} with key id {key_id(key)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Verify a model directory and import it into the store (`import`)."""
    from models.store import ArtifactStore

    store = ArtifactStore(_store_dir(args.store))
    manifest = store.import_model_dir(args.src, _trusted(args.trust))
    print(f"imported {manifest.ref} into {store.root}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the stored models and their variants (`list`)."""
    from models.store import ArtifactStore

    store = ArtifactStore(_store_dir(args.store))
    for ref in store.list_models():
        variants = ", ".join(v.id for v in store.manifest(ref.name, ref.version).variants)
        print(f"{ref.name}:{ref.version}\t{variants}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Forget a stored model; `gc` frees its files (`remove`)."""
    from models.store import ArtifactStore

    name, sep, version = args.ref.partition(":")
    if not sep or not version:
        raise ModelsError(f"{args.ref!r} is not NAME:VERSION")
    ArtifactStore(_store_dir(args.store)).remove(name, version)
    print(f"removed {args.ref}; run `edgefleet-models gc` to free its files")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Delete blobs no stored model uses and stale partial downloads (`gc`)."""
    from models.store import ArtifactStore

    freed = ArtifactStore(_store_dir(args.store)).gc()
    print(f"freed {freed} bytes")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build variants from a checkpoint, or take a .gguf as it is, and sign them (`build`)."""
    key_path: Path | None = args.key
    if args.src.suffix.lower() == ".gguf":
        if args.targets:
            raise ModelsError("--targets applies to a checkpoint; a .gguf is signed as it is")
        try:
            from models.build.gguf_import import import_gguf
        except ImportError as exc:
            logging.getLogger(__name__).debug("gguf import failed", exc_info=exc)
            print(BUILD_EXTRA_HINT, file=sys.stderr)
            return EXIT_NO_BUILD_EXTRA
        key = _signing_key(key_path, create=True)
        manifest = import_gguf(
            args.src, args.out, key, args.name, args.version, hardlink=args.hardlink
        )
        template = "its chat template" if manifest.chat_template else "no chat template"
        print(f"built {manifest.ref}: {manifest.variants[0].id} ({template}) in {args.out}")
        return 0
    try:
        from models.build.pipeline import build_targets
    except ImportError as exc:
        logging.getLogger(__name__).debug("build import failed", exc_info=exc)
        print(BUILD_EXTRA_HINT, file=sys.stderr)
        return EXIT_NO_BUILD_EXTRA
    if args.verbose:
        logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    targets = [t.strip() for t in (args.targets or DEFAULT_TARGETS).split(",") if t.strip()]
    key = _signing_key(key_path, create=True)
    result = build_targets(
        args.src,
        args.out,
        targets,
        key,
        args.name,
        args.version,
        keep_going=args.keep_going,
        verbose=args.verbose or args.debug,
    )
    manifest = result.manifest
    print(f"built {manifest.ref}: {', '.join(v.id for v in manifest.variants)} in {args.out}")
    for target, reason in result.failed.items():  # only under --keep-going; else it raised
        print(f"not built: {target}: {reason}", file=sys.stderr)
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    """Build a deterministic reference model (`reference`)."""
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "keygen": cmd_keygen,
    "verify": cmd_verify,
    "sign": cmd_sign,
    "import": cmd_import,
    "list": cmd_list,
    "remove": cmd_remove,
    "gc": cmd_gc,
    "build": cmd_build,
    "reference": cmd_reference,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; the exit status is 0 on success, 1 on a refused operation."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        status = COMMANDS[args.command](args)
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
