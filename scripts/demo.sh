#!/usr/bin/env bash
# The local fleet demo: sets up .venv, then runs Mosquitto + control plane + one real agent,
# rolls the tiny reference model out and sends a chat completion. `--once` exits after it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
