#!/usr/bin/env bash
# The local fleet demo: sets up .venv, then runs Mosquitto + control plane + one real agent,
# rolls SmolLM2-135M-Instruct out and asks it a question. `--once` exits after it (non-zero
# when the answer is wrong).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
