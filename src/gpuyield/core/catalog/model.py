"""Model architectures: the fields an engine needs, and everything derived from them.

A :class:`ModelSpec` stores only what a Hugging Face ``config.json`` says (layers, widths, heads, experts,
MLA ranks, attention layer pattern). Parameter counts, KV-cache bytes, weight bytes and GEMM shapes are
*computed* here, so the performance model, the planner and the catalogue CLI all use one piece of
architecture arithmetic.

Counting conventions (documented in ``docs/formats.md``):

- ``params_total`` counts the decoder (embeddings, every layer, final norm, LM head unless tied). It does
  not count multi-token-prediction (MTP / next-n) modules or vision encoders: published totals
  (DeepSeek-V3 671 B, Qwen3.5-397B) count the language model without them.
- ``params_active`` is ``params_total`` minus the routed experts a token does not use
  (``num_experts - num_experts_per_tok`` of them in every MoE layer). Embeddings and LM head count as active,
  which is how Mixtral's 12.9 B and DeepSeek-V3's 37 B are quoted.
- ``kv_bytes_per_token(kv_dtype)`` is the cache that grows with context: every full-attention (or MLA) layer
  stores each token, a compressed layer (DeepSeek-V4) one entry per ``ratio`` tokens. Sliding-window layers hold
  at most ``sliding_window`` tokens and linear-attention layers (Gated DeltaNet, Mamba2, Kimi Delta Attention)
  a fixed recurrent state; both are bounded per sequence and reported by
  :meth:`ModelSpec.kv_bytes_fixed_per_sequence` / :meth:`ModelSpec.kv_bytes_for_context`.
- A layer is a token mixer and an MLP (or experts); Nemotron-H's blocks hold one of the two (``layer_pattern``
  kind ``none``, ``mlp_free_layers``), so ``num_sublayers`` and ``layer_equivalents`` count the depth.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpuyield.errors import CatalogError

__all__ = [
    "BYTES_PER_KV_ELEMENT",
    "COMPRESSED_KINDS",
    "LAYER_KINDS",
    "AttentionKind",
    "GemmShape",
    "LayerKind",
    "LinearAttentionType",
    "ModelSpec",
    "WEIGHT_PRECISIONS",
    "bytes_per_weight",
    "kv_element_bytes",
]

# A layer's token mixer; "none" is a layer with an MLP or experts only (Nemotron-H's MLP and MoE blocks). The two
# compressed kinds (DeepSeek-V4) attend over a sliding window plus a cache of one entry per ``*_compress_ratio``
# tokens: sparsely through an indexer's top-k (CSA) or densely (HCA).
LayerKind = Literal[
    "full_attention",
    "sliding_attention",
    "linear_attention",
    "compressed_sparse_attention",
    "heavily_compressed_attention",
    "none",
]
LAYER_KINDS: tuple[LayerKind, ...] = get_args(LayerKind)
COMPRESSED_KINDS: tuple[LayerKind, ...] = ("compressed_sparse_attention", "heavily_compressed_attention")
LinearAttentionType = Literal["gated_deltanet", "mamba2", "kda"]
AttentionKind = Literal["gqa", "mla"]

# Bytes per cached K/V element, by KV-cache dtype.
BYTES_PER_KV_ELEMENT: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "auto": 2.0,
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
    "int8": 1.0,
    "fp4": 0.5,
    "nvfp4": 0.5,
}

# Bytes per quantised weight element, scales included:
#   fp8   1 byte (block/channel scales add < 0.01 %, ignored)
#   nvfp4 4-bit + one fp8 scale per 16 elements        = 0.5 + 1/16
#   mxfp4 4-bit + one 8-bit exponent per 32 elements    = 0.5 + 1/32
#   int4  4-bit + fp16 scale and 4-bit zero per 128     = 0.5 + 2.5/128 (AWQ/GPTQ, group 128)
WEIGHT_PRECISIONS: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 0.5 + 1 / 16,
    "nvfp4": 0.5 + 1 / 16,
    "mxfp4": 0.5 + 1 / 32,
    "int4": 0.5 + 2.5 / 128,
}


def kv_element_bytes(kv_dtype: str) -> float:
    """Bytes per cached K/V element for ``kv_dtype`` (``bf16``, ``fp16``, ``fp8``, ``fp4``, ...)."""
    key = kv_dtype.strip().lower()
    if key not in BYTES_PER_KV_ELEMENT:
        raise CatalogError(
            f"unknown kv_dtype '{kv_dtype}'; expected one of {', '.join(BYTES_PER_KV_ELEMENT)}"
        )
    return BYTES_PER_KV_ELEMENT[key]


# dtypes a 4-bit release holds the matrices it does not quantise at
_KEPT_DTYPES = ("bf16", "fp16", "fp8", "int8")
_LM_HEAD_DTYPES = ("nvfp4", "fp8")  # an NVFP4 release that quantises its LM head (Qwen3.6: W4A16 NVFP4)


def bytes_per_weight(precision: str) -> float:
    """Bytes per weight element at ``precision`` (``bf16``, ``fp8``, ``fp4``/``nvfp4``, ``mxfp4``, ``int4``)."""
    key = precision.strip().lower()
    if key not in WEIGHT_PRECISIONS:
        raise CatalogError(
            f"unknown weight precision '{precision}'; expected one of {', '.join(WEIGHT_PRECISIONS)}"
        )
    return WEIGHT_PRECISIONS[key]


@dataclass(frozen=True, slots=True)
class GemmShape:
    """One weight matrix of the model: ``y[tokens, n] = x[tokens, k] @ W[k, n]``.

    The performance model multiplies by ``num_layers`` (how many decoder layers hold this matrix). Routed
    experts have ``num_experts > 1``: each token goes through ``experts_per_token`` of them.
    """

    name: str  # e.g. "qkv_proj", "o_proj", "gate_up_proj", "down_proj", "expert_gate_up_proj", "lm_head"
    n: int  # output features
    k: int  # input features
    num_layers: int  # decoder layers holding this matrix (1 for lm_head)
    # moe_latent: the projections into and out of a latent MoE's expert space, which engines replicate on every GPU
    # and keep in 16 bits (vLLM's ReplicatedLinear, left out of ModelOpt's quantisation)
    group: Literal["attention", "mlp", "moe_expert", "moe_shared", "moe_latent", "router", "lm_head"]
    num_experts: int = 1  # copies per layer (routed experts); 1 for dense matrices
    experts_per_token: int = 1  # copies a token uses; == num_experts for dense matrices
    # every GPU holds and runs the whole matrix (engines' ReplicatedLinear) instead of a tensor-parallel shard
    replicated: bool = False
    # held at this precision whatever the deployment's weight precision (engines keep some matrices in 16 bits)
    precision: str | None = None

    @property
    def params(self) -> int:
        """Weights in this matrix over all its layers and copies."""
        return self.n * self.k * self.num_layers * self.num_experts

    @property
    def params_active(self) -> int:
        """Weights a single token touches."""
        return self.n * self.k * self.num_layers * self.experts_per_token


class ModelSpec(BaseModel):
    """A model architecture from the catalogue or from a Hugging Face ``config.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Hugging Face id, e.g. 'meta-llama/Llama-3.1-8B'")
    aliases: tuple[str, ...] = ()
    name: str | None = None
    architecture: str = Field(min_length=1, description="HF model_type, e.g. 'llama', 'deepseek_v3'")
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(ge=0, description="dense (non-expert) MLP width; 0 if there is none")
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # biases on q/k/v (and o for gpt-oss)
    attention_output_gate: bool = False  # Qwen3.5/Qwen3-Next: q_proj also produces a sigmoid gate
    qk_norm: Literal["none", "per_head", "per_layer"] = "none"
    mlp_bias: bool = False  # gpt-oss experts carry biases
    # MoE
    num_experts: int = Field(0, ge=0, description="routed experts per MoE layer; 0 = dense model")
    num_experts_per_tok: int = Field(0, ge=0)
    moe_intermediate_size: int | None = Field(None, gt=0)
    num_shared_experts: int = Field(0, ge=0)
    shared_expert_intermediate_size: int | None = Field(
        None, gt=0, description="width of each shared expert; default moe_intermediate_size"
    )
    shared_expert_gate: bool = False  # Qwen2-MoE/Qwen3.5 scalar gate on the shared expert
    router_bias: bool = False  # gpt-oss router bias; DeepSeek's e_score_correction_bias
    first_dense_layers: int = Field(0, ge=0, description="leading layers with a dense MLP (DeepSeek)")
    moe_layer_step: int = Field(1, ge=1, description="layer i is MoE iff (i + 1) % step == 0 (Qwen)")
    dense_layers: tuple[int, ...] = Field(
        (), description="explicit dense-MLP layer indices (mlp_only_layers)"
    )
    mlp_free_layers: tuple[int, ...] = Field(
        (), description="layers with a token mixer only, no MLP or experts (Nemotron-H's Mamba and attention blocks)"
    )
    mlp_gated: bool = Field(
        True, description="gated MLPs (SwiGLU: gate, up, down); False = up, activation, down (Nemotron-H's relu^2)"
    )
    moe_latent_size: int | None = Field(
        None, gt=0, description="routed experts work in a latent space this wide (Nemotron-3 Super/Ultra)"
    )
    # MLA (DeepSeek-V2/V3, Kimi-K2, GLM-5)
    q_lora_rank: int | None = Field(None, gt=0)
    kv_lora_rank: int | None = Field(None, gt=0)
    qk_rope_head_dim: int | None = Field(None, gt=0)
    qk_nope_head_dim: int | None = Field(None, gt=0)
    v_head_dim: int | None = Field(None, gt=0)
    # DeepSeek sparse attention indexer (DeepSeek-V3.2, GLM-5)
    index_num_heads: int | None = Field(None, gt=0)
    index_head_dim: int | None = Field(None, gt=0)
    # Attention layer pattern, repeated cyclically over the layers; ("full_attention",) = all full.
    layer_pattern: tuple[LayerKind, ...] = ("full_attention",)
    # full-attention layers shaped unlike the sliding ones (Gemma 4: global_head_dim, num_global_key_value_heads,
    # attention_k_eq_v); None = head_dim / num_kv_heads. ``full_attention_k_eq_v``: those layers project K once
    # and use it as V (no v_proj weight); the cache still holds K and V.
    full_attention_head_dim: int | None = Field(None, gt=0)
    full_attention_kv_heads: int | None = Field(None, gt=0)
    full_attention_k_eq_v: bool = False
    sliding_window: int | None = Field(None, gt=0, description="tokens a sliding_attention layer keeps")
    # DeepSeek-V4: compressed attention (every layer also keeps a sliding window), K and V one cached tensor,
    # a grouped low-rank output projection and hyper-connections
    csa_compress_ratio: int | None = Field(None, gt=0, description="tokens per cached entry in CSA layers (4)")
    hca_compress_ratio: int | None = Field(None, gt=0, description="tokens per cached entry in HCA layers (128)")
    index_topk: int | None = Field(None, gt=0, description="compressed entries a CSA query attends to")
    kv_shared: bool = Field(False, description="K and V are one tensor, projected and cached once (DeepSeek-V4)")
    o_groups: int | None = Field(None, gt=0, description="groups of heads in the low-rank output projection")
    o_lora_rank: int | None = Field(None, gt=0, description="each group's output rank before o_b_proj")
    hc_mult: int = Field(1, ge=1, description="hyper-connection residual streams (DeepSeek-V4: 4); 1 = plain")
    # Linear-attention (Gated DeltaNet) layers: fixed-size state per sequence
    linear_num_key_heads: int | None = Field(None, gt=0)
    linear_num_value_heads: int | None = Field(None, gt=0)
    linear_key_head_dim: int | None = Field(None, gt=0)
    linear_value_head_dim: int | None = Field(None, gt=0)
    linear_conv_kernel_dim: int | None = Field(None, gt=0)
    # which recurrence the linear-attention layers run. Mamba2 maps onto the same fields: key heads = n_groups,
    # key head dim = ssm_state_size, value heads = mamba_num_heads, value head dim = mamba_head_dim
    linear_attention_type: LinearAttentionType = "gated_deltanet"
    # Kimi Delta Attention's output gate: projected at full rank (Kimi-K3) or through this rank (Kimi Linear: head dim)
    linear_gate_rank: int | None = Field(None, gt=0)
    linear_state_dtype: str = Field(
        "bf16", description="dtype of the linear layers' recurrent state (Nemotron-H: mamba_ssm_cache_dtype fp32)"
    )
    num_mtp_layers: int = Field(0, ge=0, description="multi-token-prediction layers (not in params_total)")
    max_position_embeddings: int = Field(gt=0)
    native_dtype: str = Field("bf16", description="checkpoint weight dtype: bf16, fp8, mxfp4, nvfp4, ...")
    # an mxfp4 checkpoint quantises its routed experts only: the rest is held at this dtype (DeepSeek-V4: fp8);
    # None: 16-bit (gpt-oss, Kimi-K3)
    native_dense_dtype: str | None = None
    # checkpoint dtype of aliases that are other releases than the entry's own (Qwen/Qwen3.6-27B is the bf16 release
    # of the nvfp4 entry nvidia/Qwen3.6-27B-NVFP4); catalog.checkpoint_precision reads it
    # (stored as sorted pairs so the model stays hashable; the YAML gives a mapping)
    alias_dtypes: tuple[tuple[str, str], ...] = ()
    # what the model's 4-bit float releases (NVIDIA ModelOpt NVFP4, compressed-tensors nvfp4) hold at another dtype
    # than the rule (body matrices 4-bit, the LM head 16-bit): a matrix name or a group of gemm_shapes -> dtype,
    # read from the release's exclude_modules / ignore / quantized_layers (nvidia/DeepSeek-V3.1-NVFP4: the MLA
    # down and up projections in bf16, o_proj in fp4; nvidia/Qwen3.6-27B-NVFP4: attention in fp8 and the LM head
    # in nvfp4). Applies when the deployment's weight precision is fp4/nvfp4 (stored as sorted pairs; the YAML
    # gives a mapping)
    nvfp4_kept: tuple[tuple[str, str], ...] = ()
    # weights a bf16 scale covers in the model's int4 release (compressed-tensors ``group_size``; Kimi-K2.5: 32,
    # 0.5625 bytes a weight); None: AWQ/GPTQ's 128 with zero points (0.52 bytes)
    int4_group_size: int | None = Field(None, gt=0)

    @field_validator("alias_dtypes", "nvfp4_kept", mode="before")
    @classmethod
    def _mapping_pairs(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return tuple(sorted((str(k), str(v)) for k, v in value.items()))
        return value
    source: str = Field(min_length=1)
    as_of: _dt.date
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.num_experts:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                raise ValueError("num_experts_per_tok must be in [1, num_experts] for an MoE model")
            if self.moe_intermediate_size is None:
                raise ValueError("moe_intermediate_size is required when num_experts > 0")
        elif self.num_experts_per_tok or self.num_shared_experts:
            raise ValueError("num_experts_per_tok/num_shared_experts need num_experts > 0")
        mla = (self.kv_lora_rank, self.qk_rope_head_dim, self.qk_nope_head_dim, self.v_head_dim)
        # v_head_dim alone is a GQA model whose values are narrower than its queries and keys (MiMo-V2)
        # qk_rope_head_dim alone, on a shared K = V head, is DeepSeek-V4's partial RoPE (it shapes the cached entry)
        if (mla[0] is not None or mla[2] is not None or (mla[1] is not None and not self.kv_shared)) and any(
            v is None for v in mla
        ):
            raise ValueError("MLA needs all of kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim, v_head_dim")
        if "sliding_attention" in self.layer_pattern and self.sliding_window is None:
            raise ValueError("layer_pattern has sliding_attention layers but sliding_window is not set")
        linear = (
            self.linear_num_key_heads,
            self.linear_num_value_heads,
            self.linear_key_head_dim,
            self.linear_value_head_dim,
        )
        if "linear_attention" in self.layer_pattern and any(v is None for v in linear):
            raise ValueError(
                "linear_attention layers need linear_num_key_heads, linear_num_value_heads, "
                "linear_key_head_dim and linear_value_head_dim"
            )
        if not self.layer_pattern:
            raise ValueError("layer_pattern must not be empty")
        if any(i < 0 or i >= self.num_layers for i in self.dense_layers):
            raise ValueError(f"dense_layers indices must be in [0, {self.num_layers})")
        if any(i < 0 or i >= self.num_layers for i in self.mlp_free_layers):
            raise ValueError(f"mlp_free_layers indices must be in [0, {self.num_layers})")
        empty = [i for i in self.mlp_free_layers if self.layer_kind(i) == "none"]
        if empty:
            raise ValueError(f"layer {empty[0]} has neither a token mixer (layer_pattern 'none') nor an MLP")
        compressed = [k for k in COMPRESSED_KINDS if k in self.layer_pattern]
        if compressed:
            if self.sliding_window is None:
                raise ValueError("compressed attention layers keep a sliding window: set sliding_window")
            if "compressed_sparse_attention" in compressed and not (
                self.csa_compress_ratio and self.index_topk and self.index_num_heads and self.index_head_dim
            ):
                raise ValueError(
                    "compressed_sparse_attention layers need csa_compress_ratio, index_topk, index_num_heads and "
                    "index_head_dim"
                )
            if "heavily_compressed_attention" in compressed and not self.hca_compress_ratio:
                raise ValueError("heavily_compressed_attention layers need hca_compress_ratio")
        if (self.o_groups is None) != (self.o_lora_rank is None):
            raise ValueError("o_groups and o_lora_rank go together")
        if self.o_groups is not None:
            if self.uses_mla:
                raise ValueError("o_groups/o_lora_rank (grouped output projection) do not apply to MLA models")
            if (self.num_attention_heads * self.head_dim) % self.o_groups:
                raise ValueError("num_attention_heads x head_dim must be a multiple of o_groups")
        if self.kv_shared and (self.uses_mla or self.v_head_dim is not None):
            raise ValueError("kv_shared (one K = V tensor) needs GQA heads without v_head_dim")
        if self.moe_latent_size is not None and not self.num_experts:
            raise ValueError("moe_latent_size needs num_experts > 0")
        if self.linear_state_dtype.strip().lower() not in BYTES_PER_KV_ELEMENT:
            raise ValueError(
                f"unknown linear_state_dtype '{self.linear_state_dtype}'; expected one of {', '.join(BYTES_PER_KV_ELEMENT)}"
            )
        if self.full_attention_shaped_apart:
            if self.kv_lora_rank is not None:
                raise ValueError("full_attention_head_dim/_kv_heads/_k_eq_v do not apply to MLA models")
            if self.num_attention_heads % (self.full_attention_kv_heads or self.num_kv_heads):
                raise ValueError(
                    f"num_attention_heads ({self.num_attention_heads}) must be a multiple of full_attention_kv_heads "
                    f"({self.full_attention_kv_heads})"
                )
        if self.nvfp4_kept:
            # routed experts are what an NVFP4 release quantises and routers stay 16-bit; the LM head is 16-bit
            # unless the release quantises it too (to 4 bits or fp8)
            held = [g for g in self.gemm_shapes if g.group not in ("moe_expert", "router")]
            known = {g.name for g in held} | {g.group for g in held}
            for what, dtype in self.nvfp4_kept:
                if what not in known:
                    raise ValueError(
                        f"nvfp4_kept: '{what}' is not a non-expert matrix or group of this model "
                        f"(expected one of {', '.join(sorted(known))})"
                    )
                if what == "lm_head" and self.tie_word_embeddings:
                    raise ValueError(
                        "nvfp4_kept.lm_head: this model ties its LM head to the embeddings, which stay 16-bit"
                    )
                allowed = _LM_HEAD_DTYPES if what == "lm_head" else _KEPT_DTYPES
                if dtype not in allowed:
                    raise ValueError(
                        f"nvfp4_kept.{what}: unknown dtype '{dtype}'; expected one of {', '.join(allowed)}"
                    )
        return self

    def nvfp4_kept_dtype(self, gemm: GemmShape, precision: str) -> str | None:
        """The dtype the model's 4-bit float release holds ``gemm`` at where it departs from the rule
        (``nvfp4_kept``, by matrix name first, then by group: a body matrix left out of the 4-bit quantisation, an
        LM head quantised), or None: the rule, or a deployment at another ``precision`` than fp4/nvfp4."""
        if not self.nvfp4_kept or precision.strip().lower() not in ("fp4", "nvfp4"):
            return None
        kept = dict(self.nvfp4_kept)
        return kept.get(gemm.name) or kept.get(gemm.group)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A validated copy with ``update`` applied; derived values (params, GEMMs) are recomputed, not copied."""
        data = self.model_dump()
        data.update(update or {})
        return type(self).model_validate(data)

    # ----------------------------------------------------------------- structure
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def layers(self) -> int:
        """Alias of ``num_layers`` (the name the JSON output uses)."""
        return self.num_layers

    @property
    def full_attention_shaped_apart(self) -> bool:
        """Whether full-attention layers have their own head width, KV heads or K=V projection (Gemma 4)."""
        return (
            self.full_attention_head_dim is not None
            or self.full_attention_kv_heads is not None
            or self.full_attention_k_eq_v
        )

    @property
    def value_head_dim(self) -> int:
        """Width of a value head in a GQA layer (MiMo-V2: 128 against 192 for queries and keys); ``head_dim``
        unless ``v_head_dim`` says otherwise. MLA models use their own formulas."""
        return self.v_head_dim if self.v_head_dim is not None and not self.uses_mla else self.head_dim

    def attention_dims(self, kind: LayerKind = "full_attention") -> tuple[int, int, int]:
        """(query/key head width, value head width, KV heads) of a GQA layer of ``kind``: values are as wide as
        the keys unless ``v_head_dim`` makes them narrower (for MLA, the stored ``head_dim``/``num_kv_heads``)."""
        hd, kv = self.attention_shape(kind)
        return hd, (hd if self.v_head_dim is None or self.uses_mla else self.v_head_dim), kv

    def attention_shape(self, kind: LayerKind = "full_attention") -> tuple[int, int]:
        """(head width, KV heads) of a softmax-attention layer of ``kind`` (``full_attention`` or
        ``sliding_attention``); for MLA, ``head_dim`` and ``num_kv_heads`` as stored."""
        if kind == "full_attention":
            return (
                self.full_attention_head_dim or self.head_dim,
                self.full_attention_kv_heads or self.num_kv_heads,
            )
        return self.head_dim, self.num_kv_heads

    def layer_kind(self, index: int) -> LayerKind:
        """Attention kind of decoder layer ``index``."""
        return self.layer_pattern[index % len(self.layer_pattern)]

    @cached_property
    def layer_kinds(self) -> tuple[LayerKind, ...]:
        return tuple(self.layer_kind(i) for i in range(self.num_layers))

    def num_layers_of(self, kind: LayerKind) -> int:
        return sum(1 for k in self.layer_kinds if k == kind)

    def has_mlp(self, index: int) -> bool:
        """True when layer ``index`` has an MLP or experts (False for Nemotron-H's Mamba and attention blocks)."""
        return index not in self.mlp_free_layers

    def is_moe_layer(self, index: int) -> bool:
        """True when layer ``index`` has routed experts rather than a dense MLP."""
        if not self.is_moe or index < self.first_dense_layers or index in self.dense_layers:
            return False
        return (index + 1) % self.moe_layer_step == 0 and self.has_mlp(index)

    @cached_property
    def num_moe_layers(self) -> int:
        return sum(1 for i in range(self.num_layers) if self.is_moe_layer(i))

    @property
    def num_dense_mlp_layers(self) -> int:
        return self.num_layers - self.num_moe_layers - len(set(self.mlp_free_layers))

    @cached_property
    def num_attention_layers(self) -> int:
        """Softmax-attention layers (full, sliding and compressed)."""
        return sum(1 for k in self.layer_kinds if k not in ("linear_attention", "none"))

    @cached_property
    def num_window_layers(self) -> int:
        """Layers that keep a sliding window of ``sliding_window`` tokens: sliding and compressed ones."""
        return sum(1 for k in self.layer_kinds if k == "sliding_attention" or k in COMPRESSED_KINDS)

    def compress_ratio(self, kind: LayerKind) -> int:
        """Tokens per cached entry of a compressed layer ``kind`` (0 for the other kinds)."""
        if kind == "compressed_sparse_attention":
            return int(self.csa_compress_ratio or 0)
        if kind == "heavily_compressed_attention":
            return int(self.hca_compress_ratio or 0)
        return 0

    @cached_property
    def num_sublayers(self) -> int:
        """Token mixers plus MLPs over all layers: twice ``num_layers`` for a decoder whose every layer has both;
        Nemotron-H's blocks each hold one. Each sublayer is one residual branch (one all-reduce under TP)."""
        return sum(1 for k in self.layer_kinds if k != "none") + self.num_layers - len(set(self.mlp_free_layers))

    @property
    def layer_equivalents(self) -> float:
        """Depth in standard decoder layers (a mixer and an MLP each): ``num_sublayers / 2``; equals
        ``num_layers`` for every model whose layers all hold both. Per-layer overheads scale with it."""
        return self.num_sublayers / 2.0

    @property
    def moe_dispatch_width(self) -> int:
        """Width of the activations sent to the experts: ``moe_latent_size`` for latent MoE, else ``hidden_size``."""
        return self.moe_latent_size or self.hidden_size

    # ----------------------------------------------------------------- GEMMs
    def _attention_gemms(
        self, n_layers: int, shape: tuple[int, int] | None = None, k_eq_v: bool = False, prefix: str = ""
    ) -> list[GemmShape]:
        h = self.hidden_size
        hd, kv = shape or (self.head_dim, self.num_kv_heads)
        vd = hd if self.v_head_dim is None else self.value_head_dim
        heads = self.num_attention_heads
        out: list[GemmShape] = []
        if n_layers == 0:
            return out
        if self.uses_mla:
            assert self.kv_lora_rank and self.qk_rope_head_dim and self.qk_nope_head_dim and self.v_head_dim
            qk_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                out.append(GemmShape("q_a_proj", self.q_lora_rank, h, n_layers, "attention"))
                out.append(GemmShape("q_b_proj", heads * qk_dim, self.q_lora_rank, n_layers, "attention"))
            else:
                out.append(GemmShape("q_proj", heads * qk_dim, h, n_layers, "attention"))
            out.append(
                GemmShape(
                    "kv_a_proj_with_mqa", self.kv_lora_rank + self.qk_rope_head_dim, h, n_layers, "attention"
                )
            )
            out.append(
                GemmShape(
                    "kv_b_proj",
                    heads * (self.qk_nope_head_dim + self.v_head_dim),
                    self.kv_lora_rank,
                    n_layers,
                    "attention",
                )
            )
            out.append(GemmShape("o_proj", h, heads * self.v_head_dim, n_layers, "attention"))
            if self.attention_output_gate:  # Kimi-K3: a sigmoid gate on the attention output, from the hidden state
                out.append(GemmShape("o_gate_proj", heads * self.v_head_dim, h, n_layers, "attention"))
            if self.index_num_heads and self.index_head_dim:
                q_in = self.q_lora_rank or h
                out.append(
                    GemmShape(
                        "indexer_wq_b",
                        self.index_num_heads * self.index_head_dim,
                        q_in,
                        n_layers,
                        "attention",
                    )
                )
                out.append(GemmShape("indexer_wk", self.index_head_dim, h, n_layers, "attention"))
                out.append(GemmShape("indexer_weights_proj", self.index_num_heads, h, n_layers, "attention"))
            return out
        q_out = heads * hd * (2 if self.attention_output_gate else 1)
        kv_out = kv * hd if (k_eq_v or self.kv_shared) else kv * (hd + vd)
        if self.q_lora_rank:  # low-rank queries without MLA (DeepSeek-V4): q_a -> norm -> q_b, K = V apart
            # SGLang's DeepSeek-V4 replicates the query down-projection and the single KV head's projection
            shared = self.kv_shared
            out.append(GemmShape(f"{prefix}q_a_proj", self.q_lora_rank, h, n_layers, "attention", replicated=shared))
            out.append(GemmShape(f"{prefix}q_b_proj", q_out, self.q_lora_rank, n_layers, "attention"))
            out.append(GemmShape(f"{prefix}kv_proj", kv_out, h, n_layers, "attention", replicated=shared))
        else:
            out.append(GemmShape(f"{prefix}qkv_proj", q_out + kv_out, h, n_layers, "attention"))
        if self.o_groups and self.o_lora_rank:
            # grouped low-rank output: each group of heads to o_lora_rank (block-diagonal), then all groups to hidden
            rank = self.o_groups * self.o_lora_rank
            out.append(  # kept in bf16 by SGLang
                GemmShape(f"{prefix}o_a_proj", rank, heads * vd // self.o_groups, n_layers, "attention", precision="bf16")
            )
            out.append(GemmShape(f"{prefix}o_b_proj", h, rank, n_layers, "attention"))
        else:
            out.append(GemmShape(f"{prefix}o_proj", h, heads * vd, n_layers, "attention"))
        return out

    def _compressor_gemms(self) -> list[GemmShape]:
        """DeepSeek-V4's compressors: KV and gate projections (CSA's two overlapping series, so twice as wide), and in
        CSA layers the lightning indexer's own compressor, query projection and head weights. SGLang holds them all
        in bf16 on every GPU (the indexer is duplicated on every tensor-parallel rank)."""
        h, hd = self.hidden_size, self.head_dim
        out: list[GemmShape] = []
        csa = self.num_layers_of("compressed_sparse_attention")
        hca = self.num_layers_of("heavily_compressed_attention")
        kw: dict[str, Any] = {"replicated": True, "precision": "bf16"}
        if csa:
            assert self.index_num_heads and self.index_head_dim
            ih, ihd = self.index_num_heads, self.index_head_dim
            out.append(GemmShape("csa_compressor_kv_gate", 4 * hd, h, csa, "attention", **kw))
            out.append(GemmShape("indexer_compressor_kv_gate", 4 * ihd, h, csa, "attention", **kw))
            out.append(GemmShape("indexer_q_b_proj", ih * ihd, self.q_lora_rank or h, csa, "attention", **kw))
            out.append(GemmShape("indexer_weights_proj", ih, h, csa, "attention", **kw))
        if hca:
            out.append(GemmShape("hca_compressor_kv_gate", 2 * hd, h, hca, "attention", **kw))
        return out

    def _linear_attention_gemms(self, n_layers: int) -> list[GemmShape]:
        if n_layers == 0:
            return []
        assert self.linear_num_key_heads and self.linear_num_value_heads
        assert self.linear_key_head_dim and self.linear_value_head_dim
        h = self.hidden_size
        key_dim = self.linear_num_key_heads * self.linear_key_head_dim
        value_dim = self.linear_num_value_heads * self.linear_value_head_dim
        if self.linear_attention_type == "kda":
            heads, hd = self.linear_num_value_heads, self.linear_value_head_dim
            gate = (  # the output gate, at full rank or through a low rank
                [GemmShape("in_proj_qkvg", 2 * key_dim + 2 * value_dim, h, n_layers, "attention")]
                if self.linear_gate_rank is None
                else [
                    GemmShape("in_proj_qkv", 2 * key_dim + value_dim, h, n_layers, "attention"),
                    GemmShape("g_a_proj", self.linear_gate_rank, h, n_layers, "attention"),
                    GemmShape("g_b_proj", value_dim, self.linear_gate_rank, n_layers, "attention"),
                ]
            )
            return gate + [
                # per-head beta and the forget gate's low-rank first factor (head dim), then its second factor
                GemmShape("in_proj_bf", heads + hd, h, n_layers, "attention"),
                GemmShape("f_b_proj", value_dim, hd, n_layers, "attention"),
                GemmShape("out_proj", h, value_dim, n_layers, "attention"),
            ]
        if self.linear_attention_type == "mamba2":
            return [
                # z (gate), x, B and C (n_groups x ssm_state_size each) and one dt per head
                GemmShape(
                    "in_proj", 2 * value_dim + 2 * key_dim + self.linear_num_value_heads, h, n_layers, "attention"
                ),
                GemmShape("out_proj", h, value_dim, n_layers, "attention"),
            ]
        return [
            # q, k, v and the output gate z
            GemmShape("in_proj_qkvz", 2 * key_dim + 2 * value_dim, h, n_layers, "attention"),
            # per-head beta and decay a
            GemmShape("in_proj_ba", 2 * self.linear_num_value_heads, h, n_layers, "attention"),
            GemmShape("out_proj", h, value_dim, n_layers, "attention"),
        ]

    @cached_property
    def gemm_shapes(self) -> tuple[GemmShape, ...]:
        """Every weight matrix of the decoder, grouped by kind, with how many layers hold it.

        Dense MLPs and experts are gated (SwiGLU) unless ``mlp_gated`` is off: ``gate_up_proj`` is
        ``[2 * width, hidden]`` (gate and up fused, as engines run them) and ``down_proj`` is ``[hidden, width]``;
        a non-gated MLP has ``up_proj`` ``[width, hidden]`` instead. Latent MoE (``moe_latent_size``) adds the
        projections into and out of the experts' latent space, which every token of the layer runs.
        """
        h = self.hidden_size
        attn_layers = self.num_attention_layers
        lin_layers = self.num_layers_of("linear_attention")
        up, gates = ("gate_up_proj" if self.mlp_gated else "up_proj"), self._mlp_gates
        if self.full_attention_shaped_apart:  # Gemma 4: full-attention layers are shaped apart
            full = self.num_layers_of("full_attention")
            out = self._attention_gemms(attn_layers - full) + self._attention_gemms(
                full, self.attention_shape("full_attention"), self.full_attention_k_eq_v, prefix="full_"
            )
        else:
            out = self._attention_gemms(attn_layers)
        out += self._compressor_gemms() + self._linear_attention_gemms(lin_layers)
        dense = self.num_dense_mlp_layers
        if dense and self.intermediate_size:
            out.append(GemmShape(up, gates * self.intermediate_size, h, dense, "mlp"))
            out.append(GemmShape("down_proj", h, self.intermediate_size, dense, "mlp"))
        moe = self.num_moe_layers
        if moe:
            assert self.moe_intermediate_size is not None
            e, k, w = self.num_experts, self.num_experts_per_tok, self.moe_intermediate_size
            d = self.moe_dispatch_width
            out.append(GemmShape("router", e, h, moe, "router"))
            if self.moe_latent_size:
                kw: dict[str, Any] = {"replicated": True, "precision": "bf16"}
                out.append(GemmShape("latent_in_proj", d, h, moe, "moe_latent", **kw))
                out.append(GemmShape("latent_out_proj", h, d, moe, "moe_latent", **kw))
            out.append(GemmShape(f"expert_{up}", gates * w, d, moe, "moe_expert", e, k))
            out.append(GemmShape("expert_down_proj", d, w, moe, "moe_expert", e, k))
            if self.num_shared_experts:
                sw = (self.shared_expert_intermediate_size or w) * self.num_shared_experts
                out.append(GemmShape(f"shared_expert_{up}", gates * sw, h, moe, "moe_shared"))
                out.append(GemmShape("shared_expert_down_proj", h, sw, moe, "moe_shared"))
                if self.shared_expert_gate:
                    out.append(GemmShape("shared_expert_gate", 1, h, moe, "moe_shared"))
        out.append(GemmShape("lm_head", self.vocab_size, h, 1, "lm_head"))
        return tuple(out)

    # ----------------------------------------------------------------- parameters
    @cached_property
    def _small_params(self) -> dict[str, int]:
        """Non-GEMM parameters: embeddings, norms, biases, convolutions, per-head scalars."""
        h, hd = self.hidden_size, self.head_dim
        heads, kv = self.num_attention_heads, self.num_kv_heads
        attn_layers = self.num_attention_layers
        lin_layers = self.num_layers_of("linear_attention")
        # one pre-norm a sublayer (mixer or MLP) and the final norm
        out = {"embed_tokens": self.vocab_size * h, "norms": (self.num_sublayers + 1) * h}
        per_attn = 0
        if self.uses_mla:
            assert self.kv_lora_rank is not None
            per_attn += self.kv_lora_rank + (self.q_lora_rank or 0)  # kv_a / q_a layernorms
            if self.index_head_dim:
                per_attn += 2 * self.index_head_dim  # indexer k_norm (LayerNorm weight + bias)
        else:
            if self.attention_bias:
                per_attn += heads * hd + 2 * kv * hd + h
            if self.qk_norm == "per_head":
                per_attn += 2 * hd
            elif self.qk_norm == "per_layer":
                per_attn += (heads + kv) * hd
            if self.architecture in ("gpt_oss", "deepseek_v4"):
                per_attn += heads  # attention sinks
            if self.q_lora_rank:
                per_attn += self.q_lora_rank  # q_a norm
            if self.kv_shared:
                per_attn += hd  # kv norm
        per_lin = 0
        if lin_layers:
            assert self.linear_num_key_heads and self.linear_num_value_heads
            assert self.linear_key_head_dim and self.linear_value_head_dim
            key_dim = self.linear_num_key_heads * self.linear_key_head_dim
            value_dim = self.linear_num_value_heads * self.linear_value_head_dim
            conv_dim = 2 * key_dim + value_dim
            conv = conv_dim * (self.linear_conv_kernel_dim or 4)
            if self.linear_attention_type == "mamba2":
                # conv1d weights and bias, dt_bias, A_log and D per head, gated group RMSNorm over all value heads
                per_lin = conv + conv_dim + 3 * self.linear_num_value_heads + value_dim
            elif self.linear_attention_type == "kda":
                # conv1d weights (no bias), a dt_bias per channel, A_log per head, gated RMSNorm over the head dim
                per_lin = conv + value_dim + self.linear_num_value_heads + self.linear_value_head_dim
            else:
                # conv1d weights, A_log and dt_bias per value head, gated RMSNorm over the value head dim
                per_lin = conv + 2 * self.linear_num_value_heads + self.linear_value_head_dim
        out["attention_extras"] = per_attn * attn_layers + per_lin * lin_layers + self._compressor_small_params()
        if self.hc_mult > 1:  # hyper-connections: two mixers a layer (attention, MLP) and the head's
            hc, width = self.hc_mult, self.hc_mult * h
            per_mix = (2 + hc) * hc * width + (2 + hc) * hc + 3
            out["hyper_connections"] = 2 * self.num_layers * per_mix + hc * width + hc + 1
        moe = self.num_moe_layers
        extras = 0
        if moe and self.router_bias:
            extras += self.num_experts * moe
        if self.mlp_bias:
            if moe:
                extras += moe * self.num_experts * self._expert_bias_params
            extras += self.num_dense_mlp_layers * (self._mlp_gates * self.intermediate_size + h)
        out["mlp_extras"] = extras
        return out

    def _compressor_small_params(self) -> int:
        """Compressor position biases and norms (DeepSeek-V4), per CSA and HCA layer."""
        hd, total = self.head_dim, 0
        csa = self.num_layers_of("compressed_sparse_attention")
        if csa:
            assert self.csa_compress_ratio and self.index_head_dim
            r, ihd = self.csa_compress_ratio, self.index_head_dim
            total += csa * (r * 2 * hd + hd + r * 2 * ihd + ihd)
        hca = self.num_layers_of("heavily_compressed_attention")
        if hca:
            assert self.hca_compress_ratio
            total += hca * (self.hca_compress_ratio * hd + hd)
        return total

    @cached_property
    def _active_small_params(self) -> int:
        total = sum(self._small_params.values())
        if self.mlp_bias and self.num_moe_layers:
            unused = self.num_experts - self.num_experts_per_tok
            total -= self.num_moe_layers * unused * self._expert_bias_params
        return total

    @property
    def _mlp_gates(self) -> int:
        """Up-projection widths an MLP has: gate and up (2), or up alone (1) when ``mlp_gated`` is off."""
        return 2 if self.mlp_gated else 1

    @property
    def _expert_bias_params(self) -> int:
        """Bias parameters of one routed expert (``mlp_bias``): its up projections' and its down projection's."""
        assert self.moe_intermediate_size is not None
        return self._mlp_gates * self.moe_intermediate_size + self.moe_dispatch_width

    @cached_property
    def params_total(self) -> int:
        """All decoder parameters (see the module docstring for what is and is not counted)."""
        gemm = sum(
            g.params for g in self.gemm_shapes if not (g.group == "lm_head" and self.tie_word_embeddings)
        )
        return gemm + sum(self._small_params.values())

    @cached_property
    def params_active(self) -> int:
        """Parameters one token touches: total minus the routed experts it does not use."""
        gemm = sum(
            g.params_active
            for g in self.gemm_shapes
            if not (g.group == "lm_head" and self.tie_word_embeddings)
        )
        return gemm + self._active_small_params

    def param_breakdown(self) -> dict[str, int]:
        """Parameters by group: attention, mlp, moe_expert, moe_shared, router, lm_head, embeddings, other."""
        out: dict[str, int] = {}
        for g in self.gemm_shapes:
            if g.group == "lm_head" and self.tie_word_embeddings:
                continue
            out[g.group] = out.get(g.group, 0) + g.params
        small = self._small_params
        out["embed_tokens"] = small["embed_tokens"]
        out["other"] = small["norms"] + small["attention_extras"] + small["mlp_extras"] + small.get("hyper_connections", 0)
        return out

    # ----------------------------------------------------------------- KV cache
    def _kv_elements_per_token_per_layer(self, kind: LayerKind = "full_attention") -> float:
        """Cached elements per token in one attention layer of ``kind`` (K and V, K = V once when ``kv_shared``, or
        MLA latent + rope key)."""
        if self.uses_mla:
            assert self.kv_lora_rank is not None and self.qk_rope_head_dim is not None
            return float(self.kv_lora_rank + self.qk_rope_head_dim)
        hd, vd, kv = self.attention_dims(kind)
        return float(kv * hd if self.kv_shared else kv * (hd + vd))

    @property
    def uses_compressed_attention(self) -> bool:
        """Whether any layer keeps a compressed cache (DeepSeek-V4's CSA and HCA layers)."""
        return any(k in COMPRESSED_KINDS for k in self.layer_pattern)

    def _shared_entry_bytes(self, kv_dtype: str) -> float:
        """One cached K = V entry of DeepSeek-V4 (``kv_shared``): in an 8-bit cache SGLang stores the no-RoPE part in
        fp8 with one scale byte per 64 values and a pad byte, the RoPE part in bf16 (``DeepSeekV4SingleKVPool``: 448
        + 64 x 2 + 7 + 1 = 584 bytes); otherwise every element at the cache's width."""
        hd, _, kv = self.attention_dims("sliding_attention")
        rope = self.qk_rope_head_dim or 0
        if kv_element_bytes(kv_dtype) == 1.0 and rope:
            nope = hd - rope
            return float(kv * (nope + 2 * rope + nope // 64 + 1))
        return float(kv * hd) * kv_element_bytes(kv_dtype)

    def _indexer_entry_bytes(self) -> float:
        """One compressed entry's lightning-indexer key in a CSA layer: fp8 with an fp32 scale per 128 values
        (SGLang's ``DeepSeekV4IndexerPool``: 128 + 4 bytes)."""
        ihd = self.index_head_dim or 0
        return float(ihd + 4 * math.ceil(ihd / 128)) if ihd else 0.0

    def _indexer_bytes_per_token_per_layer(self) -> float:
        # DeepSeek sparse-attention indexer keys of every MLA layer (V3.2, GLM-5): vLLM keeps them in fp8 plus one
        # fp32 scale per token. DeepSeek-V4's indexer sits in its CSA layers only (see compressed_kv_bytes_per_token).
        if not self.index_head_dim or self.uses_compressed_attention:
            return 0.0
        return float(self.index_head_dim + 4)

    def kv_bytes_per_token_per_layer(self, kv_dtype: str = "bf16", kind: LayerKind = "full_attention") -> float:
        """Bytes one token adds to the cache of one attention layer of ``kind`` (full or sliding; a compressed
        layer's window holds entries of this size too)."""
        if self.kv_shared:
            return self._shared_entry_bytes(kv_dtype)
        return self._kv_elements_per_token_per_layer(kind) * kv_element_bytes(kv_dtype) + (
            self._indexer_bytes_per_token_per_layer()
        )

    def compressed_kv_bytes_per_token(self, kv_dtype: str = "bf16") -> float:
        """Cache bytes per token of context in the compressed layers: one entry per ``ratio`` tokens, plus in CSA
        layers the indexer's key for that entry (what the cache holds; a decode reads less, see
        :meth:`compressed_read_bytes_per_token`)."""
        total = 0.0
        for kind in COMPRESSED_KINDS:
            n = self.num_layers_of(kind)
            if not n:
                continue
            entry = self.kv_bytes_per_token_per_layer(kv_dtype, kind)
            if kind == "compressed_sparse_attention":
                entry += self._indexer_entry_bytes()
            total += n * entry / self.compress_ratio(kind)
        return total

    def compressed_read_bytes_per_token(self, kv_dtype: str = "bf16") -> float:
        """Bytes a decode query reads per token of context in the compressed layers: every indexer key of a CSA layer
        (its top-k entries are a fixed read, not per context token) and every entry of an HCA layer."""
        total = 0.0
        csa = self.num_layers_of("compressed_sparse_attention")
        if csa:
            total += csa * self._indexer_entry_bytes() / self.compress_ratio("compressed_sparse_attention")
        hca = self.num_layers_of("heavily_compressed_attention")
        if hca:
            entry = self.kv_bytes_per_token_per_layer(kv_dtype, "heavily_compressed_attention")
            total += hca * entry / self.compress_ratio("heavily_compressed_attention")
        return total

    def compressor_state_bytes_per_sequence(self, speculative: bool = False) -> float:
        """The compressors' partial-window buffers one sequence holds (DeepSeek-V4), in fp32, as SGLang sizes its
        rings (``get_compress_state_ring_size``, ``CompressStatePool``): a CSA layer keeps 2 x ratio slots of KV and
        gate for its two overlapping series (4 x ``head_dim`` floats a slot) and its indexer the same at
        ``index_head_dim``; an HCA layer ratio slots of KV and gate (2 x ``head_dim``). Speculative decoding doubles
        the rings."""
        total = 0.0
        ring = 2 if speculative else 1
        csa = self.num_layers_of("compressed_sparse_attention")
        if csa:
            r = 2 * (self.csa_compress_ratio or 0) * ring
            total += csa * r * (4 * self.head_dim + 4 * (self.index_head_dim or 0)) * 4.0
        hca = self.num_layers_of("heavily_compressed_attention")
        if hca:
            total += hca * (self.hca_compress_ratio or 0) * ring * 2 * self.head_dim * 4.0
        return total

    def kv_bytes_per_token(self, kv_dtype: str = "bf16") -> float:
        """Cache bytes per token of context in the layers whose cache grows with context.

        Counts full-attention (and MLA) layers, and the compressed layers' entries (one per ``ratio`` tokens);
        sliding-window and linear-attention layers are bounded per sequence (see
        :meth:`kv_bytes_fixed_per_sequence`). Llama-3.1-8B in bf16: 32 layers x 8 KV heads x 128 x 2 (K and V)
        x 2 bytes = 131072.
        """
        full = self.num_layers_of("full_attention")
        value = full * self.kv_bytes_per_token_per_layer(kv_dtype) + self.compressed_kv_bytes_per_token(kv_dtype)
        return int(value) if value.is_integer() else value

    def linear_state_bytes_per_sequence(self, state_dtype: str | None = None) -> float:
        """Recurrent + convolution state of all linear-attention layers for one sequence.

        ``state_dtype`` None keeps each part in the dtype the engine holds it in: the recurrent state in
        ``linear_state_dtype`` (Nemotron-H: fp32), the convolution window in 16 bits. A dtype given sizes both.
        (Mamba2's state is heads x head dim x state size, its convolution spans x, B and C: the same formulas.)
        """
        lin = self.num_layers_of("linear_attention")
        if not lin:
            return 0.0
        assert self.linear_num_key_heads and self.linear_num_value_heads
        assert self.linear_key_head_dim and self.linear_value_head_dim
        key_dim = self.linear_num_key_heads * self.linear_key_head_dim
        value_dim = self.linear_num_value_heads * self.linear_value_head_dim
        recurrent = self.linear_num_value_heads * self.linear_key_head_dim * self.linear_value_head_dim
        conv = (2 * key_dim + value_dim) * ((self.linear_conv_kernel_dim or 4) - 1)
        rec_b = kv_element_bytes(state_dtype or self.linear_state_dtype)
        conv_b = kv_element_bytes(state_dtype or "bf16")
        return lin * (recurrent * rec_b + conv * conv_b)

    def kv_bytes_fixed_per_sequence(self, kv_dtype: str = "bf16", state_dtype: str | None = None) -> float:
        """Most a sequence can hold in bounded layers: sliding windows (full; compressed layers keep one too), plus
        linear-attention state and the compressors' buffers."""
        window = self.sliding_window or 0
        # linear-attention state in ``state_dtype``, not the KV cache's dtype: engines keep the recurrent state apart
        # from the paged KV cache (None: the model's own state dtype, see linear_state_bytes_per_sequence)
        return self.num_window_layers * window * self.kv_bytes_per_token_per_layer(kv_dtype, "sliding_attention") + (
            self.linear_state_bytes_per_sequence(state_dtype) + self.compressor_state_bytes_per_sequence()
        )

    def kv_bytes_for_context(
        self, context_tokens: int, kv_dtype: str = "bf16", state_dtype: str | None = None
    ) -> float:
        """Cache bytes one sequence of ``context_tokens`` tokens holds, all layer kinds included (linear-attention
        state in ``state_dtype``)."""
        if context_tokens < 0:
            raise CatalogError(f"context_tokens must be >= 0, got {context_tokens}")
        per_layer = self.kv_bytes_per_token_per_layer(kv_dtype, "sliding_attention")
        sliding = self.num_window_layers * min(context_tokens, self.sliding_window or 0)
        held = self.linear_state_bytes_per_sequence(state_dtype) + self.compressor_state_bytes_per_sequence()
        return self.kv_bytes_per_token(kv_dtype) * context_tokens + sliding * per_layer + (held if context_tokens else 0.0)

    def kv_bytes_per_token_at(self, context_tokens: int, kv_dtype: str = "bf16") -> float:
        """Average cache bytes per token for a sequence of ``context_tokens`` tokens."""
        if context_tokens <= 0:
            raise CatalogError(f"context_tokens must be > 0, got {context_tokens}")
        return self.kv_bytes_for_context(context_tokens, kv_dtype) / context_tokens

    # ----------------------------------------------------------------- weights
    def weight_dtype_of(self, gemm: GemmShape, precision: str) -> str:
        """The dtype the matrix ``gemm`` is held in by a deployment at weight ``precision`` (a key of
        ``WEIGHT_PRECISIONS``): the one rule :meth:`bytes_per_weight_of` charges and the step model computes in.

        A matrix pinned to a precision (``GemmShape.precision``) keeps it; routers stay 16-bit, and the LM head
        too unless the model's NVFP4 release quantises it (``nvfp4_kept``, at fp4/nvfp4); routed experts take
        ``precision``. Of the rest: at fp4/nvfp4 what the model's NVFP4 release leaves out of
        its quantisation keeps its dtype (``nvfp4_kept``); gpt-oss keeps attention 16-bit (its checkpoint
        quantises the experts only); an mxfp4 checkpoint (gpt-oss, Kimi-K3, DeepSeek-V4) run at a 4-bit precision
        keeps everything but its routed experts at ``native_dense_dtype`` (16-bit when unset); a MoE model's int4
        release keeps everything but its routed experts 16-bit (Kimi-K2.5's compressed-tensors config ignores
        self_attn, shared_experts and the dense MLP; a dense model's AWQ/GPTQ quantises every linear layer); else
        ``precision``."""
        if gemm.precision is not None:
            return gemm.precision.strip().lower()
        key = precision.strip().lower()
        if gemm.group == "lm_head":
            return self.nvfp4_kept_dtype(gemm, key) or "bf16"  # a release that quantises its LM head (Qwen3.6)
        if gemm.group == "router":
            return "bf16"
        if gemm.group == "moe_expert":
            return key
        kept = self.nvfp4_kept_dtype(gemm, key)
        if kept is not None:
            return kept
        if gemm.group == "attention" and self.architecture == "gpt_oss":
            return "bf16"
        if self.native_dtype == "mxfp4" and key in ("mxfp4", "fp4", "nvfp4"):
            return self.native_dense_dtype or "bf16"
        if key == "int4" and self.is_moe:
            return "bf16"
        return key

    def bytes_per_weight_of(self, gemm: GemmShape, precision: str) -> float:
        """Bytes one weight of ``gemm`` takes in a deployment at weight ``precision``: the one rule the memory
        model, the step model (``PerfModel``) and :meth:`weight_bytes` share. The dtype is
        :meth:`weight_dtype_of`'s; an int4 matrix of a model with a known ``int4_group_size`` carries one bf16
        scale per group (symmetric groups, no zero points) instead of AWQ/GPTQ's default."""
        dtype = self.weight_dtype_of(gemm, precision)
        if dtype == "int4" and gemm.precision is None and self.int4_group_size:
            return 0.5 + 2.0 / self.int4_group_size
        return bytes_per_weight(dtype)

    def weight_bytes(self, precision: str | None = None) -> float:
        """Bytes of weights at ``precision`` (default: the checkpoint's ``native_dtype``), each matrix at
        :meth:`bytes_per_weight_of`; embeddings, norms, biases and convolutions 16-bit, as engines keep them."""
        prec = precision or self.native_dtype
        total = 0.0
        for g in self.gemm_shapes:
            if g.group == "lm_head" and self.tie_word_embeddings:
                continue
            total += g.params * self.bytes_per_weight_of(g, prec)
        return total + sum(self._small_params.values()) * 2.0

    def weight_gb(self, precision: str | None = None) -> float:
        """:meth:`weight_bytes` in GB (1e9 bytes)."""
        return self.weight_bytes(precision) / 1e9
