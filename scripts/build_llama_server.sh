#!/usr/bin/env bash
# Build llama.cpp's own llama-server from the llama.cpp source that the installed
# llama-cpp-python was built from, into a cache dir; prints the binary's path.
# About 10 minutes on 2 cores; idempotent (a finished build is reused).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
version=$("$py" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
cache=${EDGEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet}/llama-server/$version
binary=$cache/build/bin/llama-server
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
if [ "${EDGEFLEET_BUILD_ONLY_IF_CACHED:-0}" = 1 ]; then
  echo "llama-server is not built yet: run $0" >&2
  exit 1
fi
mkdir -p "$cache"
if [ ! -d "$cache/src" ]; then
  tmp=$(mktemp -d "$cache/.fetch-XXXXXX")
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$version" >&2
  sdist=$(ls "$tmp"/*.tar.gz | head -n1)
  tar -xzf "$sdist" -C "$tmp"
  mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$cache/src"
  rm -rf "$tmp"
fi
jobs=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
nice -n "${NICE:-10}" cmake -S "$cache/src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON >&2
nice -n "${NICE:-10}" cmake --build "$cache/build" --target llama-server -j "$jobs" >&2
echo "$binary"
