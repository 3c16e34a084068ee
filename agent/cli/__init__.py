"""`edgefleet-agent`: serve a model locally, probe the hardware, manage models, run and compare.

This module holds the parser and the entry point; each group of subcommands lives in its own
module (`cli_serve`, `cli_run`, `cli_models`), sharing `cli_common`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.cli.common import CliError
from agent.cli.models import cmd_models
from agent.cli.run import cmd_bench, cmd_explain, cmd_probe, cmd_run
from agent.cli.serve import cmd_serve
from agent.config import AgentSettings
from agent.errors import AgentError
from hwprobe.errors import ProbeError
from models.errors import ModelsError


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser, with help for every command and option."""
    fields = AgentSettings.model_fields

    def helptext(name: str) -> str:
        return f"{fields[name].description} (env EDGEFLEET_AGENT_{name.upper()})"

    parser = argparse.ArgumentParser(
        prog="edgefleet-agent",
        description="Run LLMs on this device: serve OpenAI/Ollama APIs, manage models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, help="config file (.toml or .json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve a model on the local REST API (OpenAI + Ollama)")
    serve.add_argument("--model", type=Path, help=helptext("model_path"))
    serve.add_argument("--host", help=helptext("host"))
    serve.add_argument("--port", type=int, help=helptext("port"))
    serve.add_argument("--api-key", help=helptext("api_key"))
    serve.add_argument("--engine", help=helptext("engine"))
    serve.add_argument("--keep-alive", help=helptext("keep_alive"))
    serve.add_argument("--parallel", type=int, metavar="N", help=helptext("parallel"))
    serve.add_argument("--control-plane", metavar="URL", help=helptext("control_plane_url"))
    serve.add_argument(
        "--benchmark-engines", action="store_true", default=None, help=helptext("benchmark_engines")
    )
    serve.set_defaults(func=cmd_serve)

    probe = sub.add_parser("probe", help="print this device's hardware profile")
    probe.add_argument("--json", action="store_true", help="the full profile as JSON")
    probe.set_defaults(func=cmd_probe)

    for name, func, text in (
        ("explain", cmd_explain, "show which variant and engine would run MODEL, and why"),
        ("run", cmd_run, "generate for one PROMPT with MODEL, streamed to the terminal"),
        ("bench", cmd_bench, "measure tokens/s of every candidate engine for MODEL"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("model", metavar="MODEL", help="model directory, .gguf, or NAME[:VER]")
        command.set_defaults(func=func)
        if name != "bench":
            command.add_argument("--engine", help="prefer this engine or variant id")
        if name == "explain":
            command.add_argument("--parallel", type=int, metavar="N", help=helptext("parallel"))
            command.add_argument(
                "--benchmark-engines",
                action="store_true",
                default=None,
                help=helptext("benchmark_engines"),
            )
        if name == "run":
            command.add_argument("prompt", metavar="PROMPT")
            command.add_argument("--max-tokens", type=int, default=256)
            command.add_argument("--temperature", type=float, default=0.8)
            command.add_argument("--seed", type=int)
            command.add_argument("--raw", action="store_true", help="no chat template")
        if name == "bench":
            command.add_argument("--tokens", type=int, default=64, help="tokens per engine")
            command.add_argument("--prompt", default="Once upon a time")

    models = sub.add_parser("models", help="list, import, pull or remove stored models")
    models.set_defaults(func=cmd_models)
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="models in the store")
    imp = msub.add_parser("import", help="verify and import a signed model directory")
    imp.add_argument("directory")
    pull = msub.add_parser("pull", help="download a model by its manifest URL")
    pull.add_argument("url", help="URL (or path) of manifest.json; manifest.sig sits beside it")
    pull.add_argument("--all-variants", action="store_true", help="not only the one for here")
    for command in (imp, pull):
        command.add_argument("--trust", action="append", help="trusted public key file")
    rm = msub.add_parser("rm", help="remove NAME:VERSION")
    rm.add_argument("model")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # one line per HTTP request drowns the progress bars
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
    except (CliError, AgentError, ModelsError, ProbeError) as exc:
        print(f"edgefleet-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
