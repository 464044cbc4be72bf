"""Binds the search to the real catalogue and performance model: ``perf_for``, ``fits``, ``price_for``,
``naive_pool`` for :class:`~gpuyield.core.plan.search.PlanInputs`.

Prices: a GPU's price is, in order, the user's ``--owned`` TCO, the user's ``--prices`` entry, or the
catalogue's default cloud price (:meth:`Catalog.gpu_price`); every price keeps its source and ``as_of``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuyield.core.catalog import Catalog, ModelSpec, resolve_checkpoint
from gpuyield.core.perf import PerfModel
from gpuyield.core.plan.economics import GpuPrice, OwnedDefaults, OwnedHardware, owned_gpu_price
from gpuyield.core.plan.profile import WorkloadProfile
from gpuyield.core.plan.screen import ReplicaPerf
from gpuyield.core.plan.search import PlanInputs
from gpuyield.core.plan.space import PoolShape, SearchSpace, default_kv_dtype, planner_precision
from gpuyield.core.plan.spec import ApiPrice, PlanRequest
from gpuyield.core.plan.to_deployment import PD_LINK
from gpuyield.core.policy.routing import POLICY_NAMES
from gpuyield.core.sim.deployment import link_spec
from gpuyield.core.sim.engine.config import engine_family_defaults
from gpuyield.errors import CatalogError, ConfigError

__all__ = [
    "GPU_MEMORY_UTILIZATION",
    "PlanContext",
    "build_plan_inputs",
    "catalog_api_price",
    "owned_defaults",
]

GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default; the simulator uses the same


def owned_defaults(catalog: Catalog, gpu_id: str) -> OwnedDefaults:
    """Catalogue defaults for an owned-hardware entry of ``gpu_id`` (missing parts stay None)."""
    kw: dict[str, tuple[float, str, str] | None] = {}
    try:
        o = catalog.owned(gpu_id)
        src, day = f"catalogue owned_hardware ({o.source})", str(o.as_of)
        kw["capex_usd_per_gpu"] = (o.capex_usd_per_gpu, src, day)
        kw["amortisation_years"] = (o.amortisation_years, src, day)
        kw["ops_usd_per_gpu_year"] = (o.ops_usd_per_gpu_year, src, day)
    except CatalogError:
        pass
    gpu = catalog.gpu(gpu_id)
    if gpu.tdp_w is not None:
        kw["power_w_per_gpu"] = (gpu.tdp_w, f"{gpu.id} TDP ({gpu.source})", str(gpu.as_of))
    try:
        p = catalog.pue()
        kw["pue"] = (p.pue, f"catalogue PUE {p.facility} ({p.source})", str(p.as_of))
    except CatalogError:
        pass
    try:
        e = catalog.electricity()
        kw["usd_per_kwh"] = (e.usd_per_kwh, f"catalogue electricity {e.region} ({e.source})", str(e.as_of))
    except CatalogError:
        pass
    return OwnedDefaults(**kw)


def catalog_api_price(catalog: Catalog, model_id: str) -> ApiPrice | None:
    """The catalogue's cheapest hosted-API price for the model, if any."""
    rows = catalog.api_prices(model_id)
    if not rows:
        return None
    r = rows[0]
    return ApiPrice(r.usd_per_1m_input_tokens, r.usd_per_1m_output_tokens,
                    f"{r.provider}{' ' + r.variant if r.variant else ''}: {r.source}", str(r.as_of))


@dataclass
class PlanContext:
    """Catalogue-backed callables for the search (picklable: plain data plus caches rebuilt on demand)."""

    catalog: Catalog
    model: ModelSpec
    engine: str = "vllm"
    price_overrides: Mapping[str, GpuPrice] = field(default_factory=dict)
    owned: Mapping[str, OwnedHardware] = field(default_factory=dict)
    calibration: Any = None  # gpuyield.core.perf.Calibration; None = the shipped one
    speculative: Any = None  # gpuyield.core.perf.SpeculativeDecoding of every replica's decode steps; None: off
    # the weight precision of the checkpoint asked for (its name's quantisation suffix, else the entry's native
    # dtype: nvidia/DeepSeek-R1-NVFP4 is nvfp4); None: the entry's native dtype
    checkpoint_dtype: str | None = None
    # (mean prompt, mean output tokens) at which replicas' step times are adjusted to the calibration's measured
    # points near their shape (gpuyield.core.sim.measured), as the simulator does; None: off
    measured_at: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self._perf_cache: dict[tuple[Any, ...], PerfModel] = {}
        self._replica_cache: dict[PoolShape, ReplicaPerf | str] = {}
        self._price_cache: dict[str, GpuPrice] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_perf_cache"], state["_replica_cache"], state["_price_cache"] = {}, {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def perf_model(
        self, gpu_id: str, tp: int, pp: int, ep: int, wp: str, kvd: str, role: str = "mixed"
    ) -> PerfModel:
        """The step model of one replica of a pool of ``role`` (a P/D pool runs the P/D constants:
        ``PerfModel.build_pool``, as ``simulate`` builds it)."""
        key = (gpu_id, tp, pp, ep, wp, kvd, role)
        pm = self._perf_cache.get(key)
        if pm is None:
            pm = PerfModel.build_pool(self.model, self.catalog.gpu(gpu_id), role, tp=tp, pp=pp, ep=ep,
                                      weight_precision=wp, kv_dtype=kvd, engine=self.engine,
                                      calibration=self.calibration)  # fmt: skip
            if self.speculative is not None:
                pm = pm.with_speculative(self.speculative)
            self._perf_cache[key] = pm
        return pm

    def fits(self, gpu_id: str, tp: int, pp: int, wp: str, kvd: str) -> str | None:
        ep = tp if self.model.is_moe else 1  # per pipeline stage, as the search space sets it
        mem = self.perf_model(gpu_id, tp, pp, ep, wp, kvd).memory(GPU_MEMORY_UTILIZATION)
        return None if mem.fits else f"{gpu_id} tp{tp}{f'pp{pp}' if pp > 1 else ''}: {mem.reason}"

    def supports_precision(self, gpu_id: str, precision: str) -> bool:
        return precision == "bf16" or self.catalog.gpu(gpu_id).has_native(precision)

    def perf_for(self, pool: PoolShape) -> ReplicaPerf | str:
        hit = self._replica_cache.get(pool)
        if hit is not None:
            return hit
        pm = self.perf_model(pool.gpu_id, pool.tp, pool.pp, pool.ep, pool.weight_precision, pool.kv_dtype, pool.role)
        scales = self.measured_scales(pool)  # None when off, speculative, or out of the points' reach
        if scales is not None:
            pm = pm.with_measured(scales)
        mem = pm.memory(GPU_MEMORY_UTILIZATION, prefix_caching=pool.enable_prefix_caching)
        out: ReplicaPerf | str
        if not mem.fits:
            out = f"{pool.gpu_id} tp{pool.tp}: {mem.reason}"
        else:
            link_gb_s = link_spec(PD_LINK).bandwidth_gb_s  # per GPU, as the simulator's P/D link
            out = ReplicaPerf(
                step=pm,
                kv_capacity_tokens=int(mem.kv_capacity_tokens),
                kv_bytes_per_token=float(self.model.kv_bytes_per_token(pool.kv_dtype)),
                kv_fixed_tokens_per_seq=float(mem.fixed_tokens_per_seq),
                kv_fixed_tokens_for=mem.fixed_tokens_for,
                prefix_hit_tokens=int(mem.hybrid_block_tokens),
                kv_bytes_for_prompt=functools.partial(self.model.kv_bytes_for_context, kv_dtype=pool.kv_dtype),
                kv_transfer_bytes_per_s=link_gb_s * 1e9 * pool.gpus_per_replica,
                first_token_overhead_s=pm.first_token_overhead_s,
            )
        self._replica_cache[pool] = out
        return out

    def measured_scales(self, pool: PoolShape) -> Any:
        """The measured step scales of a pool's replica shape at ``measured_at`` (None: no measured point
        reaches it, or adjustment off): the same numbers the simulator times that pool's steps with. A prefill
        or decode pool's replica runs the kernels an aggregated replica of its shape runs, so its multipliers
        are solved, against its own (P/D) step model, to that shape's targets."""
        from gpuyield.core.perf import default_calibration
        from gpuyield.core.sim.measured import measured_step_scales_cached

        if self.measured_at is None or self.speculative is not None:
            return None
        pm = self.perf_model(pool.gpu_id, pool.tp, pool.pp, pool.ep, pool.weight_precision, pool.kv_dtype, pool.role)
        cal = self.calibration if self.calibration is not None else default_calibration()
        gpu = cal.accelerator(self.catalog, pool.gpu_id)
        return measured_step_scales_cached(
            pm, model_id=self.model.id, gpu_id=gpu.id, engine=self.engine, isl=self.measured_at[0],
            osl=self.measured_at[1], calibration=cal, catalog=self.catalog, max_num_seqs=pool.max_num_seqs,
        )  # fmt: skip

    def price_for(self, gpu_id: str) -> GpuPrice:
        hit = self._price_cache.get(gpu_id)
        if hit is not None:
            return hit
        gid = self.catalog.gpu(gpu_id).id
        if gid in self.owned:
            price = owned_gpu_price(self.owned[gid], owned_defaults(self.catalog, gid), gpu_id=gid)
        elif gid in self.price_overrides:
            price = self.price_overrides[gid]
        else:
            p = self.catalog.gpu_price(gid)
            where = f"{p.provider} {p.tier}" + (f" {p.instance}" if p.instance else "")
            price = GpuPrice(gid, p.usd_per_gpu_hour, f"{where}: {p.source}", str(p.as_of), "cloud")
        self._price_cache[gpu_id] = price
        return price

    def naive_pool(self, gpu_id: str, tp: int) -> PoolShape:
        """One replica as the engine starts by default on ``gpu_id``: its own scheduler limits there (the
        calibration's pinned ones, else engine_families.yaml's for the GPU, as ``estimate`` and ``simulate`` take
        them) and its other defaults."""
        from gpuyield.core.perf.closed_loop import own_scheduler_limits

        wp = planner_precision(self.checkpoint_dtype or self.model.native_dtype)
        kvd = default_kv_dtype(self.model)
        ep = tp if self.model.is_moe else 1
        # the replica's PerfModel (built and cached for perf_for anyway) looks its calibration entry up
        seqs, budget = own_scheduler_limits(self.perf_model(gpu_id, tp, 1, ep, wp, kvd))
        d = engine_family_defaults(self.engine)
        return PoolShape("mixed", gpu_id, tp, 1, ep, seqs, budget, bool(d.get("enable_prefix_caching", True)), "none",
                         wp, kvd)  # fmt: skip


def build_plan_inputs(
    catalog: Catalog,
    request: PlanRequest,
    profile: WorkloadProfile,
    *,
    price_overrides: Mapping[str, GpuPrice] | None = None,
    owned: Mapping[str, OwnedHardware] | None = None,
    api_price: ApiPrice | None = None,
    routers: tuple[str, ...] | None = None,
    calibration: Any = None,
    measured: bool = True,
) -> tuple[PlanInputs, PlanContext]:
    """The search inputs for ``request`` against ``catalog`` (GPU ids resolved to catalogue ids). ``measured``:
    every pool's step times are adjusted to the calibration's measured points near its replica shape, at the
    workload's mean prompt and output lengths (screen and simulator alike)."""
    model = catalog.model(request.model_id)
    gpu_ids = tuple(dict.fromkeys(catalog.gpu(g).id for g in request.gpu_ids))
    for r in routers or ():
        if r not in POLICY_NAMES:
            raise ConfigError(f"--routers {r!r}: expected one of {', '.join(POLICY_NAMES)}")
    # the checkpoint the name asks for, by the rule `plan`, `estimate` and multi-model plans share
    checkpoint = request.checkpoint_dtype or resolve_checkpoint(model, request.model_id)[1]
    ctx = PlanContext(catalog, model, request.engine, dict(price_overrides or {}), dict(owned or {}), calibration,
                      request.speculative, checkpoint,
                      # measured rows record no speculative decoding: a speculative plan uses the step model alone
                      (max(1, round(profile.input_mean_tokens)), max(1, round(profile.output_mean_tokens)))
                      if measured and request.speculative is None else None)
    if request.speculative is not None:
        request.speculative.draft_layers(model)  # MTP needs the model's MTP layers: say so before searching
    for g in gpu_ids:
        ctx.price_for(g)  # fail early, naming the GPU without a price
    space = SearchSpace.for_request(
        gpu_ids,
        allow_lower_precision=request.allow_lower_precision,
        allow_disaggregated=request.allow_disaggregated,
        is_moe=model.is_moe,
        routers=routers,
        decode_budget_tokens=request.speculative.positions_per_seq if request.speculative is not None else 1,
        native_precision=checkpoint,
        # DeepSeek-V4's engines hold its compressed cache in fp8 only (vLLM refuses any other kv-cache dtype)
        kv_dtypes=("fp8",) if default_kv_dtype(model) == "fp8" else None,
    )
    inputs = PlanInputs(
        request=request,
        profile=profile,
        space=space,
        perf_for=ctx.perf_for,
        price_for=ctx.price_for,
        naive_pool=ctx.naive_pool,
        fits=ctx.fits,
        supports_precision=ctx.supports_precision,
        api_price=api_price if api_price is not None else catalog_api_price(catalog, model.id),
    )
    return inputs, ctx
