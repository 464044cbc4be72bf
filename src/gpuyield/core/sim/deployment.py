"""The deployment file: pools of replicas, their GPUs, model, parallelism, engine knobs, router and prices.

Validated once with pydantic (``extra="forbid"``, frozen); the simulator never re-validates. The format is
documented in ``docs/formats.md`` ("Deployment file"); examples are in ``examples/deployments/``. Loading a
file from disk is the edge's job (:func:`parse_deployment` takes the already-parsed YAML document).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from gpuyield.core.sim.engine.config import (
    EngineConfig,
    OffloadTierConfig,
    engine_family_defaults,
    resolve_scheduler_limits,
)
from gpuyield.core.sim.multiplex import MultiplexSpec
from gpuyield.errors import ConfigError

__all__ = [
    "AdmissionSpec",
    "Deployment",
    "EngineSpec",
    "LinkSpec",
    "OffloadSpec",
    "PdSpec",
    "PoolSpec",
    "RouterSpec",
    "SpeculativeSpec",
    "TenantSpec",
    "link_spec",
    "parse_deployment",
]

_CFG = ConfigDict(extra="forbid", frozen=True)
_GB = 1e9
_GIB = 1024**3


class OffloadSpec(BaseModel):
    """A KV offload tier per replica (CPU DRAM or local NVMe), like LMCache or vLLM's CPU offload."""

    model_config = _CFG
    kind: Literal["cpu", "nvme"] = "cpu"
    capacity_gib: float = Field(gt=0, description="KV bytes the tier keeps per replica, GiB")
    read_gb_s: float = Field(gt=0, description="reload bandwidth into GPU memory, GB/s")

    def to_config(self) -> OffloadTierConfig:
        return OffloadTierConfig(self.kind, int(self.capacity_gib * _GIB), self.read_gb_s * _GB)


class EngineSpec(BaseModel):
    """Engine family and scheduler knobs; unset knobs take the family's defaults."""

    model_config = _CFG
    family: Literal["vllm", "sglang", "trtllm"] = "vllm"
    block_size: int | None = Field(default=None, ge=1, le=1024)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_model_len: int | None = Field(default=None, ge=1)
    kv_admission: Literal["on_demand", "max_output"] | None = None
    offload: OffloadSpec | None = None
    max_decode_run_steps: int | None = Field(default=None, ge=1)

    def to_config(self, model_max_len: int | None = None, own_limits: tuple[int, int] | None = None) -> EngineConfig:
        """The engine config; with chunked prefill off and no token budget given, the budget rises to the longest
        sequence (``max_model_len``, else the model's ``model_max_len``), as vLLM sets it. ``own_limits``: the
        engine's own (max_num_seqs, max_num_batched_tokens) on its GPU
        (:func:`gpuyield.core.perf.closed_loop.own_scheduler_limits`, as ``estimate`` takes them); None: the
        family's defaults for a large data-centre GPU."""
        base: dict[str, Any] = dict(engine_family_defaults(self.family))
        if own_limits is not None:
            base["max_num_seqs"], base["max_num_batched_tokens"] = own_limits
        for k in (
            "block_size",
            "max_num_seqs",
            "max_num_batched_tokens",
            "enable_prefix_caching",
            "enable_chunked_prefill",
            "gpu_memory_utilization",
            "max_model_len",
            "kv_admission",
            "max_decode_run_steps",
        ):
            v = getattr(self, k)
            if v is not None:
                base[k] = v
        base["family"] = self.family
        base["offload"] = self.offload.to_config() if self.offload is not None else None
        if self.enable_chunked_prefill is False and self.max_num_batched_tokens is None:
            longest = self.max_model_len or model_max_len
            if longest:
                base["max_num_batched_tokens"] = max(int(base.get("max_num_batched_tokens", 0) or 0), int(longest))
        # one knob alone is checked against the family's other one, as `estimate` checks it
        base["max_num_seqs"], base["max_num_batched_tokens"] = resolve_scheduler_limits(
            self.family, int(base["max_num_seqs"]), int(base["max_num_batched_tokens"]), self.max_num_seqs,
            self.max_num_batched_tokens,
        )  # fmt: skip
        return EngineConfig(**base)


class RouterSpec(BaseModel):
    model_config = _CFG
    policy: str = "least_outstanding"
    args: dict[str, Any] = Field(default_factory=dict)
    # as `serve` with every backend's kv_events_endpoint set: prefix routing sees what each replica's prefix
    # cache really holds (a lossless event stream) instead of its guess
    kv_events: bool = False

    @model_validator(mode="after")
    def _kv_events_policy(self) -> RouterSpec:
        from gpuyield.core.policy.routing import routes_by_prefix

        if self.kv_events and not routes_by_prefix(self.policy):
            raise ValueError(f"router.kv_events needs a policy that routes by prefix (prefix_affinity or cost), "
                             f"not {self.policy!r}")
        return self


class SpeculativeSpec(BaseModel):
    """Speculative decoding of a pool's replicas (``gpuyield.core.perf.speculative``)."""

    model_config = _CFG
    method: Literal["mtp", "eagle", "eagle3", "ngram"] = "mtp"
    num_draft_tokens: StrictInt = Field(default=1, ge=1, le=16)
    acceptance_rate: float = Field(default=0.7, ge=0, le=1)
    draft_model: str | None = Field(default=None, min_length=1, description="EAGLE head the engines load")

    @field_validator("acceptance_rate", mode="before")
    @classmethod
    def _a_number(cls, v: Any) -> Any:
        if isinstance(v, (bool, str)):
            raise ValueError(f"expected a number in [0, 1], got {v!r}")
        return v

    def to_core(self) -> Any:
        from gpuyield.core.perf.speculative import SpeculativeDecoding

        return SpeculativeDecoding(self.method, self.num_draft_tokens, self.acceptance_rate, self.draft_model)


class PoolSpec(BaseModel):
    """A group of identical replicas."""

    model_config = _CFG
    name: str = Field(min_length=1)
    role: Literal["mixed", "prefill", "decode"] = "mixed"
    replicas: int = Field(ge=1, le=100_000)
    gpu: str = Field(min_length=1, description="catalogue GPU id or alias")
    model: str = Field(min_length=1, description="catalogue model id or alias")
    served_model_names: list[str] = Field(default_factory=list, description="names requests may use")
    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    ep: int = Field(default=1, ge=1)
    weight_precision: str = "bf16"
    kv_dtype: str = "bf16"
    engine: EngineSpec = Field(default_factory=lambda: EngineSpec())
    # decode steps verify draft tokens (MTP, EAGLE, n-gram); None: plain decoding
    speculative: SpeculativeSpec | None = None

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp


class LinkSpec(BaseModel):
    model_config = _CFG
    bandwidth_gb_s: float = Field(gt=0)
    latency_us: float = Field(ge=0)


class PdSpec(BaseModel):
    """Prefill/decode disaggregation: the KV link and the decode pool's router."""

    model_config = _CFG
    link: str = "ib_ndr_400g"  # a name from sim/data/links.yaml
    link_bandwidth_gb_s: float | None = Field(default=None, gt=0)  # overrides the named link's bandwidth
    link_latency_us: float | None = Field(default=None, ge=0)
    decode_router: RouterSpec = Field(default_factory=lambda: RouterSpec(policy="least_kv"))

    def resolved_link(self) -> LinkSpec:
        base = link_spec(self.link)
        return LinkSpec(
            bandwidth_gb_s=self.link_bandwidth_gb_s or base.bandwidth_gb_s,
            latency_us=base.latency_us if self.link_latency_us is None else self.link_latency_us,
        )


class TenantSpec(BaseModel):
    """One tenant's admission limits (the same fields as the gateway's tenants, without keys)."""

    model_config = _CFG
    name: str = Field(min_length=1)
    priority: int = 0
    weight: float = Field(default=1.0, gt=0)
    tokens_per_min: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_queued: int | None = Field(default=None, ge=1)


class AdmissionSpec(BaseModel):
    """The gateway's admission control, simulated: the same ``AdmissionController`` as ``gpuyield serve``."""

    model_config = _CFG
    max_inflight: int = Field(default=256, ge=1)
    # as `serve` does with each replica's max_inflight: when set, the gateway-wide limit is this × the replicas,
    # and each model's requests in flight are limited to this × the replicas that serve it (its own queue)
    max_inflight_per_replica: int | None = Field(default=None, ge=1)
    max_queued: int = Field(default=1024, ge=0)  # per model when max_inflight_per_replica is set
    max_queue_wait_s: float = Field(default=30.0, gt=0)
    default_output_tokens: int = Field(default=256, ge=1)
    fair_share_burst: int = Field(default=0, ge=0)
    tenants: list[TenantSpec] = Field(default_factory=list)

    def build(self) -> Any:
        from gpuyield.core.policy.admission import AdmissionController, AdmissionLimits, TenantLimits

        limits = AdmissionLimits(self.max_inflight, self.max_queued, self.max_queue_wait_s,
                                 self.default_output_tokens, self.fair_share_burst)  # fmt: skip
        return AdmissionController([TenantLimits(**t.model_dump()) for t in self.tenants], limits)


class Deployment(BaseModel):
    """A fleet: pools of replicas, how requests are routed, and optional price overrides."""

    model_config = _CFG
    name: str = "deployment"
    description: str = ""
    pools: list[PoolSpec] = Field(default_factory=list)
    router: RouterSpec = Field(default_factory=RouterSpec)
    pd: PdSpec | None = None
    default_model: str | None = None  # for requests naming no model; default: the first pool's model
    prices: dict[str, float] = Field(default_factory=dict, description="gpu id -> usd_per_gpu_hour override")
    admission: AdmissionSpec | None = None  # gateway admission/fairness in front of the fleet (simulated)
    multiplex: MultiplexSpec | None = None  # GPU groups shared by several models (sleep/wake); see sim/multiplex.py

    @model_validator(mode="after")
    def _check(self) -> Deployment:
        if not self.pools and self.multiplex is None:
            raise ValueError("a deployment needs at least one pool (or a multiplex section)")
        names = [p.name for p in self.pools] + ([g.name for g in self.multiplex.groups] if self.multiplex else [])
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"pool names must be unique; repeated: {sorted(dup)}")
        roles = {p.role for p in self.pools}
        if ("prefill" in roles) != ("decode" in roles):
            raise ValueError("P/D needs both a 'prefill' and a 'decode' pool")
        for gpu, price in self.prices.items():
            if not 0 < price < 1000:
                raise ValueError(f"prices.{gpu}: usd_per_gpu_hour must be in (0, 1000), got {price}")
        return self

    @property
    def is_disaggregated(self) -> bool:
        return any(p.role == "prefill" for p in self.pools)


def parse_deployment(doc: Any, origin: str = "deployment") -> Deployment:
    """Validate a parsed YAML/JSON document; errors name ``origin`` and the offending field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected a mapping with 'pools', got {type(doc).__name__}")
    try:
        return Deployment.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{origin}: {loc}: {err['msg']} (got {err.get('input')!r})") from None


@cache
def _links() -> dict[str, Any]:
    text = resources.files("gpuyield.core.sim").joinpath("data/links.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)["links"]
    return data


def link_spec(name: str) -> LinkSpec:
    """A named KV-transfer link from ``sim/data/links.yaml``."""
    links = _links()
    if name not in links:
        raise ConfigError(f"pd.link: unknown link {name!r}; expected one of {', '.join(sorted(links))}")
    d = links[name]
    return LinkSpec(bandwidth_gb_s=float(d["bandwidth_gb_s"]), latency_us=float(d["latency_us"]))
