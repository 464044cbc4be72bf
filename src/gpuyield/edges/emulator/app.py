"""The engine emulator's HTTP face: an OpenAI-compatible server with vLLM's metric names and sleep/wake API.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streaming SSE and not), ``GET /v1/models``,
``GET /health``, ``GET /metrics`` (vLLM names), ``POST /sleep?level=N``, ``POST /wake_up``, ``GET /is_sleeping``,
``GET /version``. Output text is deterministic fake words; ``max_tokens``, ``stream``,
``stream_options.include_usage`` and ``ignore_eos`` are honoured. Without ``ignore_eos`` a request stops at a
deterministic "EOS" position derived from its prompt (mean ``mean_output_tokens``), like a real model would.

Two timing modes:

* **engine** (default): requests go through :class:`~gpuyield.edges.emulator.engine.EmulatedEngine`, timed by a
  step-time model (continuous batching, prefix cache, KV limits).
* **fixed delay** (``fixed_delay_s`` set): each request independently waits ``fixed_delay_s`` and then emits a
  token every ``fixed_itl_s`` -- a fast, CPU-cheap backend for measuring router overhead (what
  llm-d-inference-sim does). Not a model of anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gpuyield.edges.emulator.engine import EmulatedEngine, EmuRequest
from gpuyield.edges.gateway.asgi import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    dumps,
    error_body,
    loads,
    query_param,
    read_body,
    send_bytes,
    send_json,
)
from gpuyield.edges.gateway.tokens import TokenCounter, prompt_text

__all__ = ["EmulatorApp", "EmulatorSettings", "fake_token"]

_WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by", "at", "this", "from", "are", "or", "an", "which", "have", "not", "but", "had", "they", "were", "his", "all", "one", "their", "there", "been", "has", "more", "when", "would", "who", "will", "her", "so", "no", "if", "out", "can", "up", "said", "what", "some", "into", "time", "them", "only", "other", "new", "about", "these", "than", "then", "its", "could", "two", "may", "first", "any", "well", "like"]

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_HIST_BUCKETS = {
    "time_to_first_token_seconds": (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                                    5.0, 7.5, 10.0, 20.0, 40.0, 80.0),
    "inter_token_latency_seconds": (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                                    5.0, 7.5, 10.0, 20.0, 40.0, 80.0),
    "e2e_request_latency_seconds": (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                                    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0),
    "request_queue_time_seconds": (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0),
}


def fake_token(seed: int, i: int) -> str:
    """The ``i``-th output token's text for a request whose prompt hashes to ``seed`` (deterministic)."""
    return " " + _WORDS[(seed + i * 7) % len(_WORDS)]


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    served_model_name: str
    mean_output_tokens: int = 128  # mean of the deterministic EOS position when ignore_eos is false
    max_model_len: int = 32768
    max_body_bytes: int = 8 * 1024 * 1024
    fixed_delay_s: float | None = None  # fixed-delay mode: time to first token
    fixed_itl_s: float = 0.0  # fixed-delay mode: time between tokens
    description: str = ""  # what times this emulator, shown in /version


class _Hist:
    __slots__ = ("bounds", "counts", "total", "num")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.num = 0

    def fold(self, samples: list[float]) -> None:
        import bisect

        for v in samples:
            self.counts[bisect.bisect_left(self.bounds, v)] += 1
            self.total += v
        self.num += len(samples)
        samples.clear()


class EmulatorApp:
    """ASGI app for one emulated replica."""

    def __init__(self, settings: EmulatorSettings, engine: EmulatedEngine | None, tokens: TokenCounter) -> None:
        self.settings = settings
        self.engine = engine
        self.tokens = tokens
        self._hists = {name: _Hist(b) for name, b in _HIST_BUCKETS.items()}
        self._fixed_stats = {"prompt": 0, "gen": 0, "running": 0, "stop": 0, "length": 0, "abort": 0}
        self._fixed_samples: dict[str, list[float]] = {k: [] for k in _HIST_BUCKETS}
        self._sleep_level = 0
        self._awake = asyncio.Event()
        self._awake.set()
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.engine is not None and not self._started:
            self.engine.start()
            self._started = True
        path = scope["path"]
        method = scope["method"]
        try:
            if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
                await self._completion(scope, receive, send, chat=path.endswith("chat/completions"))
            elif method == "GET" and path == "/v1/models":
                await send_json(send, 200, {"object": "list", "data": [{
                    "id": self.settings.served_model_name, "object": "model", "created": 0,
                    "owned_by": "gpuyield-emulator", "max_model_len": self.settings.max_model_len}]})
            elif path in ("/health", "/healthz"):
                await send_bytes(send, 200, b"", [(b"content-type", b"text/plain")])
            elif method == "GET" and path == "/metrics":
                await send_bytes(send, 200, self.metrics_text().encode(), [(b"content-type", b"text/plain; version=0.0.4")])
            elif method == "POST" and path == "/sleep":
                level_s = query_param(scope, "level") or "1"
                if level_s not in ("1", "2"):
                    await send_json(send, 400, error_body(400, "level must be 1 or 2", param="level"))
                    return
                self._sleep_level = int(level_s)
                self._awake.clear()
                if self.engine is not None:
                    self.engine.sleep(self._sleep_level)
                await send_bytes(send, 200, b"", [(b"content-type", b"text/plain")])
            elif method == "POST" and path == "/wake_up":
                self._sleep_level = 0
                self._awake.set()
                if self.engine is not None:
                    self.engine.wake_up()
                await send_bytes(send, 200, b"", [(b"content-type", b"text/plain")])
            elif method == "GET" and path == "/is_sleeping":
                await send_json(send, 200, {"is_sleeping": self._sleep_level > 0})
            elif method == "GET" and path == "/version":
                await send_json(send, 200, {"version": "gpuyield-emulator", "timing": self.settings.description})
            else:
                await send_json(send, 404, error_body(404, f"no route {method} {path}"))
        except ConnectionResetError:
            return

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if self.engine is not None and not self._started:
                    self.engine.start()
                    self._started = True
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.engine is not None:
                    await self.engine.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- completions ---------------------------------------------------------------------------------
    async def _completion(self, scope: Scope, receive: Receive, send: Send, chat: bool) -> None:
        try:
            raw = await read_body(receive, self.settings.max_body_bytes, scope)
        except BodyTooLarge:
            await send_json(send, 413, error_body(413, "request body too large"))
            return
        try:
            body = loads(raw)
        except Exception:
            await send_json(send, 400, error_body(400, "request body is not valid JSON"))
            return
        if not isinstance(body, dict):
            await send_json(send, 400, error_body(400, "request body must be a JSON object"))
            return
        model = body.get("model")
        if model != self.settings.served_model_name:
            await send_json(send, 404, error_body(404, f"The model `{model}` does not exist.", "model_not_found", "model"))
            return
        try:
            text = prompt_text(body, chat)
        except ValueError as exc:
            await send_json(send, 400, error_body(400, str(exc)))
            return
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
            await send_json(send, 400, error_body(400, "max_tokens must be a positive integer", param="max_tokens"))
            return
        if body.get("n", 1) != 1:
            await send_json(send, 400, error_body(400, "only n=1 is supported", param="n"))
            return
        stream = bool(body.get("stream", False))
        so = body.get("stream_options") or {}
        include_usage = bool(isinstance(so, dict) and so.get("include_usage"))
        ignore_eos = bool(body.get("ignore_eos", False))
        prompt_tokens, hashes = self.tokens.count_and_hash(text)
        limit = self.settings.max_model_len - prompt_tokens
        if limit < 1 or (max_tokens is not None and max_tokens > limit):
            await send_json(send, 400, error_body(
                400, f"This model's maximum context length is {self.settings.max_model_len} tokens; the prompt has "
                f"{prompt_tokens} tokens and max_tokens is {max_tokens}.", param="max_tokens"))
            return
        seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
        want = limit if max_tokens is None else max_tokens
        finish_reason = "length"
        if not ignore_eos:
            eos_at = 1 + seed % (2 * self.settings.mean_output_tokens)
            if eos_at < want:
                want, finish_reason = eos_at, "stop"
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        meta = {"id": rid, "created": created, "model": model, "chat": chat, "seed": seed}
        await self._awake.wait()
        if self.engine is None:
            await self._fixed(send, meta, prompt_tokens, want, finish_reason, stream, include_usage)
            return
        req = EmuRequest(rid, prompt_tokens, hashes, want, asyncio.get_running_loop().time())
        try:
            self.engine.add_request(req)
        except ValueError as exc:
            await send_json(send, 400, error_body(400, str(exc)))
            return
        # a client that hangs up is noticed at once (ASGI servers drop writes to a closed connection silently)
        deliver = asyncio.ensure_future(self._deliver(send, meta, req, finish_reason, stream, include_usage))
        gone = asyncio.ensure_future(_client_disconnect(receive))
        try:
            await asyncio.wait({deliver, gone}, return_when=asyncio.FIRST_COMPLETED)
            if deliver.done():
                deliver.result()  # counted in _deliver, before its last byte (as vLLM counts at finish)
            else:
                deliver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await deliver
        finally:
            gone.cancel()
            deliver.cancel()
            if not req.finished:
                self.engine.abort(req)

    def _usage(self, prompt_tokens: int, completion_tokens: int, cached: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def _chunk(self, meta: dict[str, Any], text: str | None, finish: str | None, first: bool) -> bytes:
        if meta["chat"]:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return b"data: " + dumps({"id": meta["id"], "object": obj, "created": meta["created"],
                                  "model": meta["model"], "choices": [choice]}) + b"\n\n"

    def _usage_chunk(self, meta: dict[str, Any], usage: dict[str, Any]) -> bytes:
        obj = "chat.completion.chunk" if meta["chat"] else "text_completion"
        return b"data: " + dumps({"id": meta["id"], "object": obj, "created": meta["created"],
                                  "model": meta["model"], "choices": [], "usage": usage}) + b"\n\n"

    def _full(self, meta: dict[str, Any], text: str, finish: str, usage: dict[str, Any]) -> dict[str, Any]:
        if meta["chat"]:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": finish}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return {"id": meta["id"], "object": obj, "created": meta["created"], "model": meta["model"],
                "choices": [choice], "usage": usage}

    async def _deliver(self, send: Send, meta: dict[str, Any], req: EmuRequest, finish_reason: str,
                       stream: bool, include_usage: bool) -> None:
        assert req.queue is not None and self.engine is not None
        seed = meta["seed"]
        if not stream:
            while (await req.queue.get()) != -1:
                pass
            self.engine.stats.request_success_total[finish_reason] += 1
            text = "".join(fake_token(seed, i) for i in range(req.num_output))
            await send_json(send, 200, self._full(meta, text, finish_reason,
                                                  self._usage(req.prompt_tokens, req.num_output, req.num_cached)))
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        i = 0
        while True:
            n = await req.queue.get()
            if n == -1:
                break
            last = i + 1 >= req.max_tokens
            parts = [self._chunk(meta, fake_token(seed, i), None, i == 0)]
            if last:
                parts.append(self._chunk(meta, None if meta["chat"] else "", finish_reason, False))
            i += 1
            await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
        tail = b""
        if include_usage:
            tail = self._usage_chunk(meta, self._usage(req.prompt_tokens, req.num_output, req.num_cached))
        self.engine.stats.request_success_total[finish_reason] += 1
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})

    async def _fixed(self, send: Send, meta: dict[str, Any], prompt_tokens: int, want: int, finish_reason: str,
                     stream: bool, include_usage: bool) -> None:
        s = self.settings
        fs = self._fixed_stats
        samples = self._fixed_samples
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        fs["running"] += 1
        fs["prompt"] += prompt_tokens
        try:
            assert s.fixed_delay_s is not None
            await asyncio.sleep(s.fixed_delay_s)
            samples["time_to_first_token_seconds"].append(loop.time() - t0)
            usage = self._usage(prompt_tokens, want, 0)
            seed = meta["seed"]
            if not stream:
                if want > 1 and s.fixed_itl_s > 0:
                    await asyncio.sleep(s.fixed_itl_s * (want - 1))
                fs["gen"] += want
                text = "".join(fake_token(seed, i) for i in range(want))
                await send_json(send, 200, self._full(meta, text, finish_reason, usage))
            else:
                await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                for i in range(want):
                    if i and s.fixed_itl_s > 0:
                        await asyncio.sleep(s.fixed_itl_s)
                    fs["gen"] += 1
                    body = self._chunk(meta, fake_token(seed, i), None, i == 0)
                    if i == want - 1:
                        body += self._chunk(meta, None if meta["chat"] else "", finish_reason, False)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                tail = self._usage_chunk(meta, usage) if include_usage else b""
                await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})
            fs[finish_reason] += 1
            samples["e2e_request_latency_seconds"].append(loop.time() - t0)
        finally:
            fs["running"] -= 1

    # ---- metrics -------------------------------------------------------------------------------------
    def metrics_text(self) -> str:
        """vLLM-named Prometheus exposition (v1 names; see docs/formats.md "Engine emulator metrics")."""
        name = self.settings.served_model_name.replace("\\", "\\\\").replace('"', '\\"')
        lab = f'model_name="{name}",engine="0"'
        out: list[str] = []

        def metric(mname: str, mtype: str, value: float, help_: str, labels: str = lab) -> None:
            out.append(f"# HELP {mname} {help_}\n# TYPE {mname} {mtype}\n{mname}{{{labels}}} {value}\n")

        eng = self.engine
        if eng is not None:
            st = eng.stats
            running, waiting, kv = eng.num_running, eng.num_waiting, eng.kv_usage
            prompt, gen = st.prompt_tokens_total, st.generation_tokens_total
            success = st.request_success_total
            samples = {"time_to_first_token_seconds": st.ttft_s, "inter_token_latency_seconds": st.itl_s,
                       "e2e_request_latency_seconds": st.e2e_s, "request_queue_time_seconds": st.queue_s}
        else:
            fs = self._fixed_stats
            running, waiting, kv = fs["running"], 0, 0.0
            prompt, gen = fs["prompt"], fs["gen"]
            success = {k: fs[k] for k in ("stop", "length", "abort")}
            samples = self._fixed_samples
        metric("vllm:num_requests_running", "gauge", running, "Number of requests in model execution batches.")
        metric("vllm:num_requests_waiting", "gauge", waiting, "Number of requests waiting to be processed.")
        metric("vllm:kv_cache_usage_perc", "gauge", kv, "KV-cache usage. 1 means 100 percent usage.")
        metric("vllm:prompt_tokens_total", "counter", prompt, "Number of prefill tokens processed.")
        metric("vllm:generation_tokens_total", "counter", gen, "Number of generation tokens processed.")
        if eng is not None:
            metric("vllm:prefix_cache_queries_total", "counter", eng.prefix_cache_queries_total,
                   "Prefix cache queries, in terms of number of queried tokens.")
            metric("vllm:prefix_cache_hits_total", "counter", eng.prefix_cache_hits_total,
                   "Prefix cache hits, in terms of number of cached tokens.")
            metric("vllm:prompt_tokens_cached_total", "counter", eng.prefix_cache_hits_total,
                   "Number of cached prompt tokens (local prefix cache).")
            metric("vllm:num_preemptions_total", "counter", eng.num_preemptions_total,
                   "Cumulative number of preemptions from the engine.")
        out.append("# HELP vllm:request_success_total Count of successfully processed requests.\n"
                   "# TYPE vllm:request_success_total counter\n")
        for reason, v in success.items():
            out.append(f'vllm:request_success_total{{{lab},finished_reason="{reason}"}} {v}\n')
        out.append("# HELP vllm:engine_sleep_state Engine sleep state; awake = 0 means sleeping.\n"
                   "# TYPE vllm:engine_sleep_state gauge\n")
        for state, lvl in (("awake", 0), ("weights_offloaded", 1), ("discard_all", 2)):
            out.append(f'vllm:engine_sleep_state{{{lab},sleep_state="{state}"}} {int(self._sleep_level == lvl)}\n')
        for hname, h in self._hists.items():
            h.fold(samples[hname])
            full = f"vllm:{hname}"
            out.append(f"# HELP {full} Histogram of {hname.replace('_', ' ')}.\n# TYPE {full} histogram\n")
            cum = 0
            for b, c in zip(h.bounds, h.counts, strict=False):
                cum += c
                out.append(f'{full}_bucket{{{lab},le="{b}"}} {cum}\n')
            out.append(f'{full}_bucket{{{lab},le="+Inf"}} {h.num}\n{full}_sum{{{lab}}} {h.total}\n'
                       f"{full}_count{{{lab}}} {h.num}\n")
        return "".join(out)


async def _client_disconnect(receive: Receive) -> None:
    """Return when the client closes the connection (after the request body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
