#!/usr/bin/env bash
# Stop engines started by scripts/start_vllm_cpu.sh and scripts/start_llama_server.sh.
#
# Usage: scripts/stop_engines.sh [PORT...]      (no PORT: every engine with a PID file)
#   env GPUYIELD_ENGINE_RUN_DIR [/tmp/gpuyield-engines]
# Only processes recorded in this run directory's PID files are signalled (their whole process
# group: vLLM's API server and its engine-core child), and only if the PID still runs an engine.
set -uo pipefail

RUN_DIR="${GPUYIELD_ENGINE_RUN_DIR:-/tmp/gpuyield-engines}"
shopt -s nullglob
if [[ $# -gt 0 ]]; then
    files=()
    for port in "$@"; do files+=("$RUN_DIR"/*-"$port".pid); done
else
    files=("$RUN_DIR"/*.pid)
fi
[[ ${#files[@]} -gt 0 ]] || { echo "no engines recorded in $RUN_DIR"; exit 0; }

for f in "${files[@]}"; do
    pid="$(cat "$f")"
    name="$(basename "$f" .pid)"
    cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)"
    if [[ -z "$cmd" ]]; then
        echo "$name: not running (stale PID file)"; rm -f "$f"; continue
    fi
    if [[ "$cmd" != *vllm* && "$cmd" != *llama-server* ]]; then
        echo "$name: PID $pid now runs something else; leaving it alone"; rm -f "$f"; continue
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        echo "$name: killed PID $pid"
    else
        echo "$name: stopped PID $pid"
    fi
    rm -f "$f"
done
