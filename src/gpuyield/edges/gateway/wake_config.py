"""Gateway config for wake-on-request: ``residency_groups`` (validated by pydantic; see docs/formats.md).

A *residency group* is one GPU group whose memory several models share: either one multi-model server
(llama.cpp router mode, the multi-model ``engine-emulator``) or several single-model vLLM engines on the same
GPUs. The gateway runs one :class:`gpuyield.core.policy.residency.ResidencyPolicy` per group.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ResidencyGroupConfig", "ResidencyModelConfig"]


class ResidencyModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)  # the served model name requests use
    weight_gb: float = Field(gt=0)  # weights + runtime reserve while awake, whole group (GB = 1e9 bytes)
    kv_budget_gb: float = Field(0.0, ge=0)  # KV cache reserved while awake, whole group
    # expected transition times; default: from the sourced cost model (core/sim/data/multiplex.yaml)
    wake_l1_s: float | None = Field(None, gt=0)
    wake_l2_s: float | None = Field(None, gt=0)
    cold_load_s: float | None = Field(None, gt=0)
    sleep_s: float | None = Field(None, ge=0)


class ResidencyGroupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    backends: list[str] = Field(min_length=1)  # backend names (kind vllm or llamacpp) hosting the models
    memory_gb: float = Field(gt=0)  # memory the models share (weights + KV budgets), whole group
    host_memory_gb: float = Field(0.0, ge=0)  # host RAM for level-1 sleep (weights offloaded), whole group
    gpu: str | None = None  # catalogue GPU id: picks the host-link bandwidth for the default wake times
    num_gpus: int = Field(1, ge=1)
    models: list[ResidencyModelConfig] = Field(min_length=1)
    initially_awake: list[str] = Field(default_factory=list)
    prewarmed: bool = True  # models not initially awake were loaded once and put to sleep (vLLM); False = unloaded
    idle_sleep_s: float | None = Field(None, gt=0)  # put a model to sleep after this long idle; None = never
    forecast_halflife_s: float = Field(60.0, gt=0)
    wake_timeout_s: float = Field(120.0, gt=0)  # a held request waits at most this long for its model
    sync_on_start: bool = True  # at start-up, put the models not in initially_awake to sleep via the API

    @model_validator(mode="after")
    def _check(self) -> ResidencyGroupConfig:
        names = [m.model for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: {dup} listed twice")
        unknown = [m for m in self.initially_awake if m not in names]
        if unknown:
            raise ValueError(f"initially_awake: {unknown} are not in this group's models")
        too_big = [m.model for m in self.models if m.weight_gb + m.kv_budget_gb > self.memory_gb]
        if too_big:
            raise ValueError(f"models {too_big}: weight_gb + kv_budget_gb exceeds memory_gb={self.memory_gb}")
        return self
