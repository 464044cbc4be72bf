"""The gateway's request log: one record per request, the format ``gpuyield serve`` writes and every loader reads.

The log is JSON Lines (one :class:`RequestLogRecord` per line, UTF-8) or Parquet with the same column names.
It is the bridge from live traffic back to the fleet model: ``load_workload("requests.jsonl")`` turns it into a
:class:`~gpuyield.core.workload.workload.Workload` that ``simulate``/``plan`` replay, and ``baseline`` reads
delivered tokens from it. The full schema is documented in ``docs/formats.md`` ("Request log").

Times are Unix epoch seconds (UTC, float, microsecond resolution is enough). Token counts are integers as the
engine reported them (``usage`` of the OpenAI response), never estimates, except ``input_tokens`` when the
engine did not answer (then the gateway's own tokenizer count; ``input_tokens_estimated`` says so).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "REQUEST_LOG_SCHEMA_VERSION",
    "REQUEST_LOG_STATUSES",
    "RequestLogRecord",
    "RequestStatus",
]

REQUEST_LOG_SCHEMA_VERSION = 1

RequestStatus = Literal["ok", "error", "rejected", "cancelled", "timeout"]
REQUEST_LOG_STATUSES: tuple[str, ...] = ("ok", "error", "rejected", "cancelled", "timeout")


class RequestLogRecord(BaseModel):
    """One request as the gateway saw it.

    Status meanings: ``ok`` finished normally (stop or length); ``error`` the backend failed (5xx, broken
    stream); ``rejected`` admission control or rate limiting refused it before any backend work;
    ``cancelled`` the client went away; ``timeout`` the gateway gave up waiting.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(REQUEST_LOG_SCHEMA_VERSION, ge=1, le=REQUEST_LOG_SCHEMA_VERSION)
    request_id: str = Field(min_length=1)  # the gateway's id (also returned as the response's id)

    # --- timing: Unix epoch seconds, UTC ---
    arrival_ts: float = Field(ge=0)  # request fully received by the gateway
    first_token_ts: float | None = Field(None, ge=0)  # first output token sent to the client; None if none
    finish_ts: float | None = Field(None, ge=0)  # last byte sent / request ended; None if never ended cleanly

    # --- who and what ---
    tenant: str = Field("default", min_length=1)  # API key's tenant, or "default"
    model: str | None = None  # the model name the client asked for (catalogue id or served name)
    priority: int = 0  # larger = more important
    session_id: str | None = None  # conversation/session id when the client sent one (header or `user`)

    # --- where it went ---
    backend: str | None = None  # pool / backend name the router chose among
    replica: str | None = None  # replica id that served it (None if rejected before routing)
    routing_policy: str | None = None  # e.g. "prefix_affinity"
    routing_reason: str | None = None  # one short phrase, e.g. "prefix hit 12 blocks", "load guard"

    # --- tokens ---
    input_tokens: int = Field(ge=0)  # prompt tokens (usage.prompt_tokens)
    input_tokens_estimated: bool = False  # True when counted by the gateway, not reported by the engine
    cached_tokens: int | None = Field(None, ge=0)  # usage.prompt_tokens_details.cached_tokens if reported
    output_tokens: int = Field(0, ge=0)  # generated tokens (usage.completion_tokens); 0 if none
    max_output_tokens: int | None = Field(None, ge=1)  # the client's max_tokens / max_completion_tokens

    # --- outcome ---
    status: RequestStatus = "ok"
    http_status: int | None = Field(None, ge=100, le=599)
    error: str | None = None  # one line when status != "ok"
    stream: bool | None = None

    # --- prefix structure (optional) ---
    block_size_tokens: int | None = Field(None, ge=1)  # tokens per entry of block_hashes
    block_hashes: list[int] | None = None  # chained hashes of the prompt's full blocks (see prefix.py)

    @model_validator(mode="after")
    def _check(self) -> RequestLogRecord:
        if self.first_token_ts is not None and self.first_token_ts < self.arrival_ts:
            raise ValueError("first_token_ts is before arrival_ts")
        if self.finish_ts is not None and self.finish_ts < self.arrival_ts:
            raise ValueError("finish_ts is before arrival_ts")
        if (
            self.first_token_ts is not None
            and self.finish_ts is not None
            and self.finish_ts < self.first_token_ts
        ):
            raise ValueError("finish_ts is before first_token_ts")
        if self.cached_tokens is not None and self.cached_tokens > self.input_tokens:
            raise ValueError("cached_tokens exceeds input_tokens")
        if self.block_hashes is not None:
            if self.block_size_tokens is None:
                raise ValueError("block_hashes given without block_size_tokens")
            if len(self.block_hashes) > -(-self.input_tokens // self.block_size_tokens):
                raise ValueError("more block_hashes than ceil(input_tokens / block_size_tokens)")
            if any(h < 0 or h >= 2**63 for h in self.block_hashes):
                raise ValueError("block_hashes must be integers in [0, 2**63)")
        return self

    @property
    def ttft_s(self) -> float | None:
        """Time to first token, seconds, or None."""
        return None if self.first_token_ts is None else self.first_token_ts - self.arrival_ts

    @property
    def e2e_s(self) -> float | None:
        """Arrival to finish, seconds, or None."""
        return None if self.finish_ts is None else self.finish_ts - self.arrival_ts
