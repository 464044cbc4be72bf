# shellcheck shell=bash
# Shared by scripts/start_vllm_cpu.sh and scripts/start_llama_server.sh (sourced, not run).

# require_port_free URL: exit 1 when something already answers URL/health.
require_port_free() {
    local url="$1"
    if curl -s -o /dev/null --max-time 2 "$url/health"; then
        echo "error: something already answers on $url (stop it first: scripts/stop_engines.sh ${url##*:})" >&2
        exit 1
    fi
}

# wait_healthy NAME URL PID LOG PIDFILE TIMEOUT_S POLL_S: wait until URL/health answers 200. If the process
# exits first, or TIMEOUT_S passes (then its process group is stopped), print the log's tail and exit 1.
wait_healthy() {
    local name="$1" url="$2" pid="$3" log="$4" pidfile="$5" timeout="$6" poll="$7"
    local deadline=$((SECONDS + timeout))
    until curl -sf -o /dev/null --max-time 2 "$url/health"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: $name exited during start-up; last lines of $log:" >&2
            tail -n 30 "$log" >&2
            rm -f "$pidfile"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "error: $name not healthy on $url after ${timeout}s; stopping it. Last lines of $log:" >&2
            tail -n 30 "$log" >&2
            kill -TERM -- "-$pid" 2>/dev/null || true
            rm -f "$pidfile"
            exit 1
        fi
        sleep "$poll"
    done
}
