"""The gateway's YAML configuration, validated by pydantic at load (format documented in docs/formats.md).

API keys are never stored in the file in clear: a tenant lists ``api_key_sha256`` digests (hex). Make one with
``printf %s "$KEY" | sha256sum`` or ``gpuyield serve --hash-key KEY``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpuyield.edges.gateway.wake_config import ResidencyGroupConfig
from gpuyield.errors import ConfigError

__all__ = [
    "AdmissionConfig",
    "AuthConfig",
    "BackendConfig",
    "GatewayConfig",
    "HealthConfig",
    "LimitsConfig",
    "RequestLogConfig",
    "RouterConfig",
    "TenantConfig",
    "hash_key",
    "load_config",
]

BackendKind = Literal["vllm", "sglang", "llamacpp", "openai"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def hash_key(api_key: str) -> str:
    """sha256 hex digest of an API key, as stored in ``tenants[].api_key_sha256``."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _zmq_endpoint(v: str | None) -> str | None:
    if v is not None and not re.match(r"^(tcp://[^\s/]+:\d+|ipc://\S+)$", v):
        raise ValueError(f"must be a ZeroMQ endpoint like tcp://127.0.0.1:5557 or ipc:///path, got {v!r}")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)


class BackendConfig(_Model):
    name: str = Field(min_length=1)  # replica id: unique, used in metrics, logs and routing
    url: str  # base URL, e.g. http://127.0.0.1:8001 (no /v1)
    kind: BackendKind = "openai"
    models: list[str] = Field(default_factory=list)  # served model names; empty = ask GET /v1/models
    pool: Literal["mixed", "prefill", "decode"] = "mixed"
    max_inflight: int = Field(64, ge=1)  # requests the gateway sends to this replica at once
    api_key_env: str | None = None  # environment variable holding the backend's bearer token
    # vLLM's KV-cache event stream (ZMQ PUB, --kv-events-config), e.g. tcp://10.0.0.5:5557: prefix routing then
    # uses what this replica really holds instead of its guess
    kv_events_endpoint: str | None = None
    kv_events_topic: str = ""
    kv_events_dp_ranks: int = Field(1, ge=1, le=1024)  # data-parallel ranks: rank r publishes on port + r
    # vLLM's replay_endpoint (ZMQ ROUTER, e.g. tcp://10.0.0.5:5558): lost event batches are asked for again
    kv_events_replay_endpoint: str | None = None

    def follows_kv_events(self, bound: bool) -> bool:
        """Its KV events are read: from its own endpoint, or (``bound``) by topic on the gateway's socket."""
        return bool(self.kv_events_endpoint or (bound and self.kv_events_topic))

    @field_validator("kv_events_endpoint", "kv_events_replay_endpoint")
    @classmethod
    def _zmq(cls, v: str | None) -> str | None:
        return _zmq_endpoint(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"must be an http(s) base URL like http://127.0.0.1:8001, got {v!r}")
        return v.rstrip("/")


class TenantConfig(_Model):
    name: str = Field(min_length=1)
    api_key_sha256: list[str] = Field(default_factory=list)  # hex sha256 digests of the tenant's API keys
    allowed_models: list[str] = Field(default_factory=lambda: ["*"])  # "*" = every model
    priority: int = 0
    weight: float = Field(1.0, gt=0)
    tokens_per_min: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)
    max_concurrency: int | None = Field(None, ge=1)
    max_queued: int | None = Field(None, ge=1)

    @field_validator("api_key_sha256")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        out = []
        for d in v:
            d2 = d.strip().lower()
            if not _HEX64.match(d2):
                raise ValueError(f"each entry must be a 64-character hex sha256 digest, got {d!r}")
            out.append(d2)
        return out

    def allows(self, model: str) -> bool:
        return "*" in self.allowed_models or model in self.allowed_models


class AuthConfig(_Model):
    allow_anonymous: bool = False  # requests without a key use ``anonymous_tenant``
    anonymous_tenant: str = "default"


class RouterConfig(_Model):
    policy: str = "least_outstanding"  # a gpuyield.core.policy.routing name
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the policy
    block_size_tokens: int = Field(16, ge=1)  # prefix-hash block size (match the engines' KV block size)
    max_retries: int = Field(2, ge=0)  # other replicas tried when one fails before streaming
    # after lost KV events (or joining a running stream) a replica is routed by the guess this long
    kv_events_stale_s: float = Field(30.0, gt=0)
    # bound mode: the gateway binds this ZMQ endpoint (port + rank per data-parallel rank) and engines connect to
    # it, each publishing under its backend's kv_events_topic (vLLM: "endpoint": "tcp://GATEWAY_HOST:PORT")
    kv_events_bind: str | None = None

    @field_validator("kv_events_bind")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        return _zmq_endpoint(v)


class AdmissionConfig(_Model):
    max_queued: int = Field(1024, ge=0)  # per model: requests of one model waiting (more get 503)
    max_queue_wait_s: float = Field(30.0, gt=0)
    default_output_tokens: int = Field(256, ge=1)
    fair_share_burst: int = Field(8, ge=0)  # extra slots for tenants below their fair share (see admission.py)


class LimitsConfig(_Model):
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    connect_timeout_s: float = Field(2.0, gt=0)
    request_timeout_s: float = Field(600.0, gt=0)  # whole backend request, including a stream


class HealthConfig(_Model):
    interval_s: float = Field(2.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    max_backoff_s: float = Field(30.0, gt=0)  # failing replicas are probed at interval * 2^k up to this
    failure_threshold: int = Field(3, ge=1)  # consecutive failures that open the circuit
    open_s: float = Field(5.0, gt=0)  # time an open circuit stays open before a half-open probe
    scrape_metrics: bool = True  # read running/waiting/KV usage from the engine's /metrics


class RequestLogConfig(_Model):
    path: str | None = None  # JSON Lines; None = no request log
    rotate_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    keep: int = Field(5, ge=0)  # rotated files kept: path.1 ... path.N


class GatewayConfig(_Model):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    backends: list[BackendConfig] = Field(min_length=1)
    tenants: list[TenantConfig] = Field(default_factory=list)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    tokenizer: str | None = None  # local tokenizer.json (or folder); None = bytes/4 approximation
    residency_groups: list[ResidencyGroupConfig] = Field(default_factory=list)  # wake-on-request (wake.py)

    @model_validator(mode="after")
    def _unique(self) -> GatewayConfig:
        names = [b.name for b in self.backends]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"backends: duplicate name(s) {sorted(dup)}")
        tnames = [t.name for t in self.tenants]
        dup = {n for n in tnames if tnames.count(n) > 1}
        if dup:
            raise ValueError(f"tenants: duplicate name(s) {sorted(dup)}")
        seen: dict[str, str] = {}
        for t in self.tenants:
            for d in t.api_key_sha256:
                if d in seen:
                    raise ValueError(f"tenants: one API key is listed for both {seen[d]!r} and {t.name!r}")
                seen[d] = t.name
        if not self.tenants and not self.auth.allow_anonymous:
            raise ValueError("tenants: none configured and auth.allow_anonymous is false, so nobody could call")
        return self

    @model_validator(mode="after")
    def _kv_events(self) -> GatewayConfig:
        bound = self.router.kv_events_bind is not None
        orphans = [b.name for b in self.backends if b.kv_events_replay_endpoint and not b.follows_kv_events(bound)]
        if orphans:
            raise ValueError(f"backends {orphans}: kv_events_replay_endpoint needs kv_events_endpoint "
                             "(or router.kv_events_bind and a kv_events_topic)")
        if bound:
            topics = [b.kv_events_topic for b in self.backends if b.follows_kv_events(True) and not b.kv_events_endpoint]
            if not topics:
                raise ValueError("router.kv_events_bind is set but no backend has a kv_events_topic to listen for")
            dup = {t for t in topics if topics.count(t) > 1}
            if dup:
                raise ValueError(f"backends: kv_events_topic {sorted(dup)} used by several backends; with "
                                 "router.kv_events_bind each engine must publish under its own topic")
        with_events = [b.name for b in self.backends if b.follows_kv_events(bound)]
        if not with_events:
            return self
        from gpuyield.core.policy.routing import routes_by_prefix

        if not routes_by_prefix(self.router.policy):
            raise ValueError(f"backends {with_events} set kv_events_endpoint, but router.policy "
                             f"{self.router.policy!r} does not route by prefix; use prefix_affinity or cost")
        import importlib.util

        missing = [m for m in ("zmq", "msgpack") if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(f"backends {with_events} set kv_events_endpoint, which needs pyzmq and msgpack "
                             f"(missing: {', '.join(missing)}); pip install 'gpuyield[serve]'")
        return self

    @model_validator(mode="after")
    def _residency(self) -> GatewayConfig:
        by_name = {b.name: b for b in self.backends}
        owner: dict[str, str] = {}
        for g in self.residency_groups:
            for bn in g.backends:
                b = by_name.get(bn)
                if b is None:
                    raise ValueError(f"residency_groups.{g.name}: backend {bn!r} is not in backends")
                if b.kind not in ("vllm", "llamacpp"):
                    raise ValueError(f"residency_groups.{g.name}: backend {bn!r} has kind {b.kind!r}; "
                                     "wake-on-request needs kind vllm or llamacpp")
            for m in g.models:
                if m.model in owner:
                    raise ValueError(f"residency_groups: model {m.model!r} is in groups {owner[m.model]!r} "
                                     f"and {g.name!r}")
                owner[m.model] = g.name
                if len(g.backends) > 1:
                    hosts = [bn for bn in g.backends if m.model in by_name[bn].models]
                    if len(hosts) != 1:
                        raise ValueError(f"residency_groups.{g.name}: model {m.model!r} must be listed in the "
                                         f"'models' of exactly one of its backends {g.backends}, found {hosts}")
        return self

    def tenant(self, name: str) -> TenantConfig | None:
        for t in self.tenants:
            if t.name == name:
                return t
        return None


def _format_validation_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {loc}: {err['msg']}{more}"


def load_config(source: str | Path | dict[str, Any]) -> GatewayConfig:
    """Load and validate a gateway config from a YAML file (or a dict); raises :class:`ConfigError`."""
    if isinstance(source, dict):
        data: Any = source
        name = "gateway config"
    else:
        from gpuyield.edges.io.yaml_file import read_yaml

        path = Path(source)
        name = str(path)
        data = read_yaml(path, "gateway config")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level (listen, backends, tenants, ...)")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, name)) from None
