#!/usr/bin/env bash
# Start llama.cpp's llama-server on 127.0.0.1 and wait until /health answers.
#
# Usage:
#   scripts/start_llama_server.sh MODEL.gguf PORT [extra llama-server args...]          one model
#   scripts/start_llama_server.sh --models-dir DIR PORT [extra llama-server args...]    router mode
# Router mode serves every *.gguf in DIR by file name (without .gguf), loads on demand, keeps at most
# MODELS_MAX loaded (LRU eviction) and answers POST /models/load, POST /models/unload, GET /models.
#
# Environment (defaults in brackets):
#   LLAMA_SERVER [.engines/bin/llama-server]   built by scripts/build_llama_server.sh
#   MODEL_ALIAS [file name without .gguf]      single-model mode: the served model name
#   LLAMA_CTX [8192]  LLAMA_PARALLEL [4]  LLAMA_THREADS [1]  MODELS_MAX [2]
#   START_TIMEOUT_S [60]
#   GPUYIELD_ENGINE_RUN_DIR [/tmp/gpuyield-engines]   logs and PID files (scripts/stop_engines.sh reads them)
# Prints URL=..., PID=..., LOG=... on success; exit 1 (with the log tail) if it dies or times out.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 2 ]] || usage

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/engine_common.sh
source "$ROOT/scripts/engine_common.sh"
BIN="${LLAMA_SERVER:-$ROOT/.engines/bin/llama-server}"
RUN_DIR="${GPUYIELD_ENGINE_RUN_DIR:-/tmp/gpuyield-engines}"
TIMEOUT="${START_TIMEOUT_S:-60}"
[[ -x "$BIN" ]] || { echo "error: no llama-server at $BIN (run scripts/build_llama_server.sh)" >&2; exit 2; }

if [[ "$1" == "--models-dir" ]]; then
    [[ $# -ge 3 ]] || usage
    DIR="$2"; PORT="$3"; shift 3
    compgen -G "$DIR/*.gguf" >/dev/null || { echo "error: no *.gguf in $DIR" >&2; exit 2; }
    MODEL_ARGS=(--models-dir "$DIR" --models-max "${MODELS_MAX:-2}")
    WHAT="router over $DIR"
else
    GGUF="$1"; PORT="$2"; shift 2
    [[ -f "$GGUF" ]] || { echo "error: no GGUF file $GGUF (make one with scripts/convert_tiny_gguf.py)" >&2; exit 2; }
    MODEL_ARGS=(-m "$GGUF" --alias "${MODEL_ALIAS:-$(basename "$GGUF" .gguf)}")
    WHAT="$GGUF"
fi
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "error: PORT must be a number, got '$PORT'" >&2; exit 2; }
URL="http://127.0.0.1:$PORT"
require_port_free "$URL"

mkdir -p "$RUN_DIR"
LOG="$RUN_DIR/llama-$PORT.log"
PIDFILE="$RUN_DIR/llama-$PORT.pid"
setsid "$BIN" "${MODEL_ARGS[@]}" --host 127.0.0.1 --port "$PORT" \
    -c "${LLAMA_CTX:-8192}" -np "${LLAMA_PARALLEL:-4}" -t "${LLAMA_THREADS:-1}" --metrics --jinja \
    "$@" >"$LOG" 2>&1 < /dev/null &
PID=$!
echo "$PID" >"$PIDFILE"

wait_healthy "llama-server ($WHAT)" "$URL" "$PID" "$LOG" "$PIDFILE" "$TIMEOUT" 0.2
echo "URL=$URL"
echo "PID=$PID"
echo "LOG=$LOG"
