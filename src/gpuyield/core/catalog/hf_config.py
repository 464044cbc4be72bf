"""Hugging Face ``config.json`` (already parsed into a dict) → :class:`ModelSpec`.

Understands the dense decoders (llama, mistral, qwen2, qwen3 and look-alikes), Mixtral/Qwen-MoE/MiniMax-M2
style MoE, DeepSeek-V2/V3/V3.2 / Kimi-K2 / GLM-5 (MLA + MoE, sparse-attention indexer), gpt-oss (sliding
layers, biases, mxfp4) and Qwen3.5/Qwen3-Next (linear-attention layers, gated attention, shared expert).
Llama 4 (chunked attention, interleaved MoE with a shared expert) is read too; its chunked layers are counted
like sliding-window layers of ``attention_chunk_size`` tokens. Multimodal configs are read from their
``text_config``; the vision tower is not counted. MiniMax-M3 (per-layer MoE flags, a separate dense width) is
read with its block-sparse attention counted dense; Gemma 4 with its full-attention layers shaped apart
(``global_head_dim``, ``num_global_key_value_heads``, K=V) and its dense MLP beside the experts read as a shared
expert; MiMo-V2 with its sliding layers' own KV heads and its values narrower than its keys; Nemotron-H /
Nemotron-3 as one block a layer (Mamba2 mixers as linear-attention layers, attention, non-gated relu^2 MLPs or
latent MoE); DeepSeek-V4 with its sliding-window and compressed (CSA, HCA) layers, shared K = V head, grouped output
projection and hyper-connections; Kimi Linear / Kimi-K3 with Kimi Delta Attention as linear-attention layers and
gated MLA. Architectures whose layers a :class:`ModelSpec` cannot
describe (NAS-pruned blocks, Gemma 4 E2B/E4B) are refused with the
reason (``_UNMODELLED``), never read as a plain decoder of the wrong size.
Reading the file is the caller's job (see ``gpuyield.edges.io.models``).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from gpuyield.core.catalog.model import ModelSpec
from gpuyield.errors import CatalogError

__all__ = ["UNKNOWN_AS_OF", "load_hf_config", "spec_fields_from_hf_config"]

UNKNOWN_AS_OF = _dt.date(1970, 1, 1)  # used when the caller cannot date a config

_LAYER_KINDS = {
    "full_attention": "full_attention",
    "attention": "full_attention",
    "global": "full_attention",
    "sliding_attention": "sliding_attention",
    "sliding_window": "sliding_attention",
    "local": "sliding_attention",
    "linear_attention": "linear_attention",
    # GLM-5.2/5.3 name their MLA layers with the DeepSeek Sparse Attention indexer this way; the indexer comes
    # from index_n_heads/index_head_dim and the attention itself is counted dense, as for DeepSeek-V3.2
    "deepseek_sparse_attention": "full_attention",
}
_QK_NORM_PER_HEAD = {
    "qwen3",
    "qwen3_moe",
    "qwen3_next",
    "qwen3_5",
    "qwen3_5_moe",
    "qwen3_5_text",
    "qwen3_5_moe_text",
    "gemma3",
    "gemma3_text",
    "gemma4",
    "gemma4_text",
}
_GEMMA4 = {"gemma4", "gemma4_text"}
_SHARED_GATE = {"qwen2_moe", "qwen3_next", "qwen3_5_moe", "qwen3_5_moe_text"}
_QKV_BIAS = {"qwen2", "qwen2_moe"}


def _first(cfg: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if key in cfg and cfg[key] is not None:
            return cfg[key]
    return default


def _mapped(items: list[Any], table: Mapping[str, str], refusal: Callable[[int, Any], str]) -> list[str]:
    """``items`` looked up in ``table``; the first unknown one is refused with ``refusal(index, item)``."""
    out = []
    for i, item in enumerate(items):
        kind = table.get(str(item))
        if kind is None:
            raise CatalogError(refusal(i, item))
        out.append(kind)
    return out


def _period(kinds: list[str]) -> tuple[str, ...]:
    """Shortest pattern that, repeated, gives ``kinds``."""
    n = len(kinds)
    for p in range(1, n + 1):
        if all(kinds[i] == kinds[i % p] for i in range(n)):
            return tuple(kinds[:p])
    return tuple(kinds)


def _native_dtype(cfg: Mapping[str, Any], top: Mapping[str, Any]) -> str:
    quant = _first(cfg, "quantization_config") or _first(top, "quantization_config")
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method", "")).lower()
        algo = str(quant.get("quant_algo", "")).lower()
        if method == "fp8" or algo == "fp8" or "fp8" in str(quant.get("fmt", "")).lower():
            return "fp8"
        if algo == "mixed_precision":  # ModelOpt per-layer formats: NVFP4 MLPs or experts beside FP8 attention
            text = str(quant).lower()
            return "nvfp4" if "nvfp4" in text else ("fp8" if "fp8" in text else "bf16")
        if method == "mxfp4":
            return "mxfp4"
        if "nvfp4" in algo or "nvfp4" in method:
            return "nvfp4"
        if method in ("awq", "gptq"):
            return "int4"
        if method == "compressed-tensors":
            text = str(quant).lower()
            if "mxfp4" in text:
                return "mxfp4"
            if "nvfp4" in text:
                return "nvfp4"
            if "'num_bits': 4" in text:
                return "int4"
            if "'num_bits': 8" in text and "float" in text:
                return "fp8"
    dtype = str(
        _first(cfg, "torch_dtype", "dtype", default=_first(top, "torch_dtype", "dtype", default="bfloat16"))
    )
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, "bf16")


def _int4_group_size(quant: Any) -> int | None:
    """Weights one scale covers in a symmetric int4 compressed-tensors checkpoint (``config_groups.*.weights.
    group_size``; Kimi-K2.5: 32), or None (AWQ/GPTQ with zero points, or not stated)."""
    if not isinstance(quant, Mapping) or str(quant.get("quant_method", "")).lower() != "compressed-tensors":
        return None
    for group in (quant.get("config_groups") or {}).values():
        w = group.get("weights") if isinstance(group, Mapping) else None
        if isinstance(w, Mapping) and w.get("num_bits") == 4 and str(w.get("type", "int")) == "int":
            size = w.get("group_size")
            if isinstance(size, int) and not isinstance(size, bool) and size > 0 and w.get("symmetric", True):
                return size
    return None


# Config keys of architectures whose layers this catalogue cannot describe: reading such a config as a plain
# decoder would give a wrong parameter count and KV size without a word (e.g. Nemotron-3-Nano, 30 B, read as
# 102 B), so it is refused, naming what is missing.
_UNMODELLED: tuple[tuple[str, str], ...] = (
    ("block_configs", "per-layer pruned blocks (Nemotron NAS / DeciLM)"),
    # the small Gemma 4 models (E2B, E4B)
    ("hidden_size_per_layer_input", "per-layer input embeddings (Gemma 4 E2B/E4B)"),
    ("num_kv_shared_layers", "layers that reuse an earlier layer's KV cache (Gemma 4 E2B/E4B)"),
    ("use_double_wide_mlp", "double-width MLPs in the KV-sharing layers (Gemma 4 E2B/E4B)"),
)


def _refuse_unmodelled(cfg: Mapping[str, Any], arch: str) -> None:
    if "hybrid_layer_pattern" in cfg:  # MiMo-V2: sliding layers may differ from the full ones only in KV heads
        for swa, full in (("swa_head_dim", "head_dim"), ("swa_v_head_dim", "v_head_dim"),
                          ("swa_num_attention_heads", "num_attention_heads")):  # fmt: skip
            if swa in cfg and cfg[swa] != cfg.get(full):
                raise CatalogError(
                    f"config.json ({arch}) has {swa}={cfg[swa]} but {full}={cfg.get(full)}: sliding layers with "
                    "their own head width or query heads are not modelled; describe the model in a catalogue YAML "
                    "if an approximation will do (docs/formats.md)"
                )
    for key, what in _UNMODELLED:
        value = cfg.get(key)
        if value is None or value is False or value in (0, "", [], {}):  # absent, off or empty: nothing unmodelled
            continue
        raise CatalogError(
            f"config.json ({arch}) has '{key}': {what} are not modelled, so its parameter count, step time and "
            "KV cache would be wrong; describe the model in a catalogue YAML if an approximation will do "
            "(docs/formats.md)"
        )


# Nemotron-H blocks (``hybrid_override_pattern`` characters or ``layers_block_type`` names, old and new): each
# block is one token mixer or one MLP, never both
_NEMOTRON_H_BLOCKS = {
    "M": "mamba", "mamba": "mamba", "linear_attention": "mamba",
    "*": "attention", "attention": "attention", "full_attention": "attention",
    "E": "moe", "moe": "moe",
    "-": "mlp", "mlp": "mlp",
}  # fmt: skip


def _nemotron_h_blocks(cfg: Mapping[str, Any]) -> list[str] | None:
    """Nemotron-H's block list (mamba, attention, moe, mlp), or None for any other architecture."""
    raw = _first(cfg, "layers_block_type", "hybrid_override_pattern")
    nemotron = str(cfg.get("model_type", "")) == "nemotron_h"
    if raw is None and nemotron:
        raw = _first(cfg, "layer_types")
    if raw is None:
        return None
    if not nemotron:  # another Mamba hybrid (Zamba2, ...) names its blocks alike but shapes them otherwise
        raise CatalogError(
            f"config.json ({cfg.get('model_type')}) has Mamba (state-space) blocks mixed with attention; only "
            "Nemotron-H's (model_type nemotron_h) are modelled, so its parameter count, step time and KV cache would "
            "be wrong; describe the model in a catalogue YAML if an approximation will do (docs/formats.md)"
        )
    blocks = _mapped(
        list(raw), _NEMOTRON_H_BLOCKS,
        lambda i, item: f"config.json Nemotron-H block {i} is '{item}'; expected one of M, *, E, - (mamba, attention, moe, mlp)",
    )  # fmt: skip
    if not blocks:
        raise CatalogError("config.json Nemotron-H block list is empty")
    return blocks


_STATE_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _state_dtype(arch: str, key: str, value: Any) -> str:
    """A recurrent state's dtype as the config names it (``float32`` ...), in catalogue spelling."""
    if str(value) not in _STATE_DTYPES:
        raise CatalogError(f"config.json ({arch}) {key} '{value}' is not one of {', '.join(_STATE_DTYPES)}")
    return _STATE_DTYPES[str(value)]


def _nemotron_h_fields(cfg: Mapping[str, Any], fields: Mapping[str, Any], blocks: list[str]) -> dict[str, Any]:
    """Nemotron-H / Nemotron-3 (transformers' ``NemotronHConfig``): one block a layer, each a Mamba2 mixer, a GQA
    attention mixer, a non-gated relu^2 MLP or an MoE of such experts (with a shared expert, a routing bias and,
    in Super/Ultra, a latent space the experts work in). Mamba2 layers are linear-attention layers whose state is
    held in ``mamba_ssm_cache_dtype`` (vLLM reads it from the config)."""
    out: dict[str, Any] = {"num_layers": len(blocks), "mlp_gated": False}
    mixer = {"mamba": "linear_attention", "attention": "full_attention", "moe": "none", "mlp": "none"}
    out["layer_pattern"] = _period([mixer[b] for b in blocks])
    out["mlp_free_layers"] = tuple(i for i, b in enumerate(blocks) if b in ("mamba", "attention"))
    out["head_dim"] = int(_first(cfg, "head_dim", "attention_head_dim", default=fields["head_dim"]))
    if "moe" in blocks:
        if not fields.get("num_experts"):
            raise CatalogError("config.json (nemotron_h) has MoE blocks but no n_routed_experts")
        out["first_dense_layers"], out["moe_layer_step"] = 0, 1
        out["dense_layers"] = tuple(i for i, b in enumerate(blocks) if b == "mlp")
        out["router_bias"] = True  # NemotronHTopkRouter's e_score_correction_bias
        latent = _first(cfg, "moe_latent_size")
        if latent:
            out["moe_latent_size"] = int(latent)
    else:
        for key in ("num_experts", "num_experts_per_tok", "num_shared_experts"):
            out[key] = 0
        for key in ("moe_intermediate_size", "shared_expert_intermediate_size"):
            out[key] = None
        out["router_bias"] = False
    if "mamba" in blocks:
        missing = [k for k in ("mamba_num_heads", "mamba_head_dim", "ssm_state_size") if _first(cfg, k) is None]
        if missing:
            raise CatalogError(f"config.json (nemotron_h) has Mamba blocks but lacks '{missing[0]}'")
        out["linear_attention_type"] = "mamba2"
        out["linear_num_key_heads"] = int(_first(cfg, "n_groups", "mamba_n_groups", default=8))  # transformers' default
        out["linear_key_head_dim"] = int(cfg["ssm_state_size"])
        out["linear_num_value_heads"] = int(cfg["mamba_num_heads"])
        out["linear_value_head_dim"] = int(cfg["mamba_head_dim"])
        out["linear_conv_kernel_dim"] = int(_first(cfg, "conv_kernel", "mamba_d_conv", default=4))
        # vLLM reads mamba_ssm_cache_dtype from the config, float32 when it names none (DEFAULT_MAMBA_SSM_CACHE_DTYPE
        # in vllm/model_executor/models/config.py), as transformers' NemotronHConfig defaults it
        state = str(_first(cfg, "mamba_ssm_cache_dtype", default="float32"))
        out["linear_state_dtype"] = _state_dtype(
            "nemotron_h", "mamba_ssm_cache_dtype", "float32" if state == "auto" else state
        )
    return out


_DEEPSEEK_V4_KINDS = {
    "sliding_attention": "sliding_attention",
    "compressed_sparse_attention": "compressed_sparse_attention",
    "heavily_compressed_attention": "heavily_compressed_attention",
}


def _is_deepseek_v4(cfg: Mapping[str, Any]) -> bool:
    return str(cfg.get("model_type", "")) == "deepseek_v4" or cfg.get("hc_mult") is not None or (
        cfg.get("compress_ratios") is not None
    )


def _deepseek_v4_fields(cfg: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """DeepSeek-V4 (transformers' ``DeepseekV4Config``): every layer attends over a sliding window with one shared
    K = V head, and CSA / HCA layers over a compressed cache as well (``layer_types``, or the legacy per-layer
    ``compress_ratios`` 0 / 4 / 128, whose extra trailing entries belong to the MTP block); low-rank queries, a
    grouped low-rank output projection, hyper-connections, MoE in every layer."""
    layers = int(fields["num_layers"])
    rates = _first(cfg, "compress_rates", default={}) or {}
    csa_r = int(rates.get("compressed_sparse_attention", _first(cfg, "compress_rate_csa", default=4)))
    hca_r = int(rates.get("heavily_compressed_attention", _first(cfg, "compress_rate_hca", default=128)))
    kinds_raw = _first(cfg, "layer_types")
    if kinds_raw is None:
        ratios = _first(cfg, "compress_ratios")
        if isinstance(ratios, str):
            ratios = [int(v) for v in ratios.strip("[] ").split(",") if v.strip()]
        if ratios is None:
            raise CatalogError("config.json (deepseek_v4) has neither layer_types nor compress_ratios")
        by_ratio = {0: "sliding_attention", csa_r: "compressed_sparse_attention", hca_r: "heavily_compressed_attention"}
        unknown = sorted({int(r) for r in ratios[:layers]} - set(by_ratio))
        if unknown:
            raise CatalogError(f"config.json (deepseek_v4) compress_ratios has {unknown[0]}; expected 0, {csa_r} or {hca_r}")
        kinds_raw = [by_ratio[int(r)] for r in ratios[:layers]]
    kinds = _mapped(
        list(kinds_raw)[:layers], _DEEPSEEK_V4_KINDS,
        lambda i, kind: f"config.json (deepseek_v4) layer_types[{i}] = '{kind}' is not a DeepSeek-V4 layer type",
    )  # fmt: skip
    if len(kinds) != layers:
        raise CatalogError(f"config.json (deepseek_v4) gives {len(kinds)} layer types for {layers} layers")
    missing = [k for k in ("o_groups", "o_lora_rank", "q_lora_rank", "sliding_window") if _first(cfg, k) is None]
    if missing:
        raise CatalogError(f"config.json (deepseek_v4) lacks '{missing[0]}'")
    out: dict[str, Any] = {
        "layer_pattern": _period(kinds),
        "kv_shared": True,
        "q_lora_rank": int(cfg["q_lora_rank"]),
        "o_groups": int(cfg["o_groups"]),
        "o_lora_rank": int(cfg["o_lora_rank"]),
        "sliding_window": int(cfg["sliding_window"]),
        "hc_mult": int(_first(cfg, "hc_mult", default=1)),
        "architecture": "deepseek_v4",  # also for the sgl-project copies (model_type deepseek_ref)
    }
    # DeepSeek's own checkpoints hold the routed experts in fp4 (expert_dtype, ue8m0 scales per 32: mxfp4) and the
    # rest in fp8
    if str(_first(cfg, "expert_dtype", default="")).lower() in ("fp4", "mxfp4"):
        out["native_dtype"] = "mxfp4"
        out["native_dense_dtype"] = fields.get("native_dtype", "fp8") if fields.get("native_dtype") != "bf16" else None
    rope = _first(cfg, "qk_rope_head_dim")
    if rope is not None:  # partial RoPE: the cached entry keeps these dims in bf16 (SGLang)
        out["qk_rope_head_dim"] = int(rope)
    if "compressed_sparse_attention" in kinds:
        missing = [k for k in ("index_n_heads", "index_head_dim", "index_topk") if _first(cfg, k) is None]
        if missing:
            raise CatalogError(f"config.json (deepseek_v4) has CSA layers but lacks '{missing[0]}'")
        out["csa_compress_ratio"] = csa_r
        out["index_num_heads"] = int(_first(cfg, "index_n_heads", "index_num_heads"))
        out["index_head_dim"] = int(_first(cfg, "index_head_dim"))
        out["index_topk"] = int(_first(cfg, "index_topk"))
    if "heavily_compressed_attention" in kinds:
        out["hca_compress_ratio"] = hca_r
    return out


def _kimi_linear_fields(cfg: Mapping[str, Any], lin: Mapping[str, Any], layers: int) -> dict[str, Any]:
    """Kimi Linear / Kimi-K3 (``linear_attn_config``): Kimi Delta Attention layers (``kda_layers``, 1-based) and MLA
    layers (``full_attn_layers``), as transformers' ``KimiLinearConfig`` and vLLM read them. KDA maps onto the
    linear-attention fields with as many key as value heads; its recurrent state is fp32 (vLLM's
    ``kda_state_dtype`` for ``auto``); its output gate is full-rank when ``use_full_rank_gate`` says so (K3), else
    through the head dim (Kimi Linear). ``mla_use_output_gate`` gates the MLA output from the hidden state."""
    kda = {int(i) for i in (lin.get("kda_layers") or [])}
    full = {int(i) for i in (lin.get("full_attn_layers") or [])}
    if not kda:
        raise CatalogError("config.json linear_attn_config has no kda_layers")
    bad = sorted(i for i in kda | full if not 1 <= i <= layers)
    if bad or kda & full:
        raise CatalogError(
            f"config.json linear_attn_config: layer {(bad or sorted(kda & full))[0]} is out of 1..{layers} or both "
            "KDA and full attention"
        )
    heads, hd = lin.get("num_heads"), lin.get("head_dim")
    if not heads or not hd:
        raise CatalogError("config.json linear_attn_config lacks num_heads or head_dim")
    kinds = ["linear_attention" if (i + 1) in kda else "full_attention" for i in range(layers)]
    out: dict[str, Any] = {
        "layer_pattern": _period(kinds),
        "linear_attention_type": "kda",
        "linear_num_key_heads": int(heads),
        "linear_num_value_heads": int(heads),
        "linear_key_head_dim": int(hd),
        "linear_value_head_dim": int(hd),
        "linear_conv_kernel_dim": int(lin.get("short_conv_kernel_size") or 4),
        "linear_state_dtype": "fp32",
    }
    if not lin.get("use_full_rank_gate", False):
        out["linear_gate_rank"] = int(hd)
    if _first(cfg, "mla_use_output_gate", default=False):
        out["attention_output_gate"] = True
    return out


def spec_fields_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`ModelSpec` architecture fields for a HF config (no id/source/as_of)."""
    if not isinstance(config, Mapping):
        raise CatalogError(f"config.json must be a JSON object, got {type(config).__name__}")
    top = config
    cfg: Mapping[str, Any] = config
    text_config = config.get("text_config")
    if isinstance(text_config, Mapping) and "num_hidden_layers" in text_config:
        cfg = text_config
    arch = str(_first(cfg, "model_type", default=_first(top, "model_type", default="llama")))
    _refuse_unmodelled(cfg, arch)

    blocks = _nemotron_h_blocks(cfg)  # Nemotron-H may give its block list instead of num_hidden_layers
    required = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")
    missing = [k for k in required[1 if blocks else 0 :] if k not in cfg]
    if missing:
        raise CatalogError(f"config.json ({arch}) lacks required field '{missing[0]}'")
    layers = len(blocks) if blocks else int(cfg["num_hidden_layers"])
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(_first(cfg, "num_key_value_heads", default=heads))
    fields: dict[str, Any] = {
        "architecture": arch,
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": int(_first(cfg, "head_dim", default=hidden // heads)),
        # MiniMax-M3 names its leading dense layers' MLP width apart from intermediate_size (the expert width)
        "intermediate_size": int(_first(cfg, "dense_intermediate_size", "intermediate_size", default=0)),
        "vocab_size": int(cfg["vocab_size"]),
        "tie_word_embeddings": bool(
            _first(cfg, "tie_word_embeddings", default=_first(top, "tie_word_embeddings", default=False))
        ),
        "max_position_embeddings": int(_first(cfg, "max_position_embeddings", "max_seq_len", default=4096)),
        "native_dtype": _native_dtype(cfg, top),
    }
    if fields["native_dtype"] == "int4":
        group = _int4_group_size(_first(cfg, "quantization_config") or _first(top, "quantization_config"))
        if group:
            fields["int4_group_size"] = group
    attention_bias = bool(_first(cfg, "attention_bias", default=arch in _QKV_BIAS))
    fields["attention_bias"] = attention_bias
    if _first(cfg, "attn_output_gate", default=False):
        fields["attention_output_gate"] = True
    if arch in _QK_NORM_PER_HEAD:
        fields["qk_norm"] = "per_head"
    elif _first(cfg, "use_qk_norm", default=False) and not arch.startswith("llama4"):  # llama4: weightless L2 norm
        fields["qk_norm"] = (
            "per_layer" if _first(cfg, "qk_norm_type", default="per_head") == "per_layer" else "per_head"
        )

    # --- MoE
    experts = int(_first(cfg, "n_routed_experts", "num_local_experts", "num_experts", default=0) or 0)
    if experts:
        fields["num_experts"] = experts
        fields["num_experts_per_tok"] = int(
            _first(cfg, "num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_topk", "top_k_experts", default=0)
        )
        fields["moe_intermediate_size"] = int(_first(cfg, "moe_intermediate_size", "intermediate_size"))
        shared_width = (
            _first(
                cfg,
                "shared_expert_intermediate_size",
                "shared_intermediate_size",
                "moe_shared_expert_intermediate_size",
                default=0,
            )
            or 0
        )
        n_shared = int(_first(cfg, "n_shared_experts", "num_shared_experts", default=0) or 0)
        if shared_width and not n_shared:
            n_shared = 1
        if _first(cfg, "enable_moe_block", default=False) and not n_shared and fields["intermediate_size"]:
            # Gemma 4: every layer runs its dense MLP beside the routed experts and sums the two, which is what
            # a shared expert of the dense width is
            n_shared, shared_width = 1, fields["intermediate_size"]
        if arch.startswith("llama4"):
            n_shared = 1  # every Llama 4 MoE layer has one shared expert of the expert width
            fields["intermediate_size"] = int(_first(cfg, "intermediate_size_mlp", default=0) or 0)
        if n_shared:
            fields["num_shared_experts"] = n_shared
            if shared_width:
                fields["shared_expert_intermediate_size"] = int(shared_width)
            if arch in _SHARED_GATE:
                fields["shared_expert_gate"] = True
        fields["first_dense_layers"] = int(_first(cfg, "first_k_dense_replace", default=0) or 0)
        step = _first(cfg, "decoder_sparse_step", "moe_layer_freq", "interleave_moe_layer_step", default=1) or 1
        dense = list(_first(cfg, "mlp_only_layers", default=[]) or [])
        if isinstance(step, list):  # MiniMax-M3, MiMo-V2: one 0/1 flag a layer (1 = MoE)
            if len(step) != layers:
                raise CatalogError(
                    f"config.json moe_layer_freq has {len(step)} entries but num_hidden_layers is {layers}"
                )
            lead = next((i for i, flag in enumerate(step) if flag), layers)  # a leading dense run is first_k_dense
            fields["first_dense_layers"] = max(fields["first_dense_layers"], lead)
            dense += [i for i, flag in enumerate(step) if not flag]
            step = 1
        fields["moe_layer_step"] = int(step)
        first_dense = fields["first_dense_layers"]
        fields["dense_layers"] = tuple(sorted({int(i) for i in dense if int(i) >= first_dense}))
        if (
            arch == "gpt_oss"
            or _first(cfg, "topk_method", default="") == "noaux_tc"
            or _first(cfg, "use_routing_bias", default=False)
        ):
            fields["router_bias"] = True
        if arch == "gpt_oss":
            fields["mlp_bias"] = True
        latent = _first(cfg, "routed_expert_hidden_size")  # Kimi-K3's latent MoE (Nemotron's is read apart)
        if latent and int(latent) != hidden:
            fields["moe_latent_size"] = int(latent)
        if arch in ("mixtral", "minimax_m2", "gpt_oss") and "moe_intermediate_size" not in cfg:
            fields["intermediate_size"] = 0  # the only MLPs are experts

    # --- MLA
    if _first(cfg, "kv_lora_rank") is not None:
        fields["q_lora_rank"] = _first(cfg, "q_lora_rank")
        fields["kv_lora_rank"] = int(cfg["kv_lora_rank"])
        fields["qk_rope_head_dim"] = int(cfg["qk_rope_head_dim"])
        fields["qk_nope_head_dim"] = int(cfg["qk_nope_head_dim"])
        fields["v_head_dim"] = int(cfg["v_head_dim"])
        fields["head_dim"] = fields["qk_nope_head_dim"] + fields["qk_rope_head_dim"]
        fields["num_kv_heads"] = heads
        if _first(cfg, "index_n_heads") is not None and _first(cfg, "index_head_dim") is not None:
            fields["index_num_heads"] = int(cfg["index_n_heads"])
            fields["index_head_dim"] = int(cfg["index_head_dim"])

    # --- full-attention layers shaped apart from the sliding ones (Gemma 4, read as transformers' Gemma4TextConfig
    # does: global_head_dim defaults to 512, and num_global_key_value_heads applies where attention_k_eq_v is on
    # or not declared)
    if arch in _GEMMA4 and _first(cfg, "kv_lora_rank") is None:
        global_hd = int(_first(cfg, "global_head_dim", default=512))
        k_eq_v = _first(cfg, "attention_k_eq_v")
        global_kv = _first(cfg, "num_global_key_value_heads") if k_eq_v in (None, True) else None
        if global_hd != fields["head_dim"]:
            fields["full_attention_head_dim"] = global_hd
        if global_kv is not None and int(global_kv) != fields["num_kv_heads"]:
            fields["full_attention_kv_heads"] = int(global_kv)
        if k_eq_v:
            fields["full_attention_k_eq_v"] = True

    # --- values narrower than queries and keys in a GQA model (MiMo-V2: 128 against 192)
    v_dim = _first(cfg, "v_head_dim")
    if _first(cfg, "kv_lora_rank") is None and v_dim is not None and int(v_dim) != fields["head_dim"]:
        fields["v_head_dim"] = int(v_dim)

    # --- attention layer pattern
    kimi = _first(cfg, "linear_attn_config")
    if isinstance(kimi, Mapping):
        fields.update(_kimi_linear_fields(cfg, kimi, layers))
        fields["num_mtp_layers"] = int(_first(cfg, "num_nextn_predict_layers", default=0) or 0)
        return fields
    if _is_deepseek_v4(cfg):
        fields.update(_deepseek_v4_fields(cfg, fields))
        fields["num_mtp_layers"] = int(_first(cfg, "num_nextn_predict_layers", default=0) or 0)
        return fields
    if blocks is not None:
        fields.update(_nemotron_h_fields(cfg, fields, blocks))
        mtp = _first(cfg, "num_nextn_predict_layers", default=0) or 0
        fields["num_mtp_layers"] = int(mtp)
        return fields
    window = _first(cfg, "sliding_window")
    layer_types = _first(cfg, "layer_types")
    pattern = _first(cfg, "hybrid_layer_pattern")
    if pattern is not None and not layer_types:
        # MiMo-V2: 1 = a sliding-window layer (vLLM's "compressed softmax" layer), 0 = full attention; the sliding
        # layers carry their own KV-head count
        if len(pattern) != layers or any(v not in (0, 1) for v in pattern):
            raise CatalogError(
                f"config.json hybrid_layer_pattern must hold {layers} entries of 0 or 1, got {len(pattern)}"
            )
        layer_types = ["sliding_attention" if v else "full_attention" for v in pattern]
        window = _first(cfg, "sliding_window_size", "sliding_window")
        swa_kv = _first(cfg, "swa_num_key_value_heads")
        if swa_kv is not None and int(swa_kv) != fields["num_kv_heads"]:
            fields["full_attention_kv_heads"] = fields["num_kv_heads"]
            fields["num_kv_heads"] = int(swa_kv)
    if layer_types:
        kinds = _mapped(
            list(layer_types), _LAYER_KINDS,
            lambda i, kind: f"config.json layer_types[{i}] = '{kind}' is not supported; "
            "expected full_attention, sliding_attention or linear_attention",
        )  # fmt: skip
        if len(kinds) != layers:
            raise CatalogError(
                f"config.json layer_types has {len(kinds)} entries but num_hidden_layers is {layers}"
            )
        fields["layer_pattern"] = _period(kinds)
    elif arch.startswith("llama4") and _first(cfg, "attention_chunk_size"):
        # Llama 4: rope layers use chunked local attention (at most attention_chunk_size tokens cached, counted
        # like a sliding window); NoPE layers (every 4th by default) attend globally.
        no_rope = _first(cfg, "no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(layers)]
        kinds = ["sliding_attention" if flag else "full_attention" for flag in no_rope]
        fields["layer_pattern"] = _period(kinds)
        window = _first(cfg, "attention_chunk_size")
    elif window and (arch == "mistral" or _first(cfg, "use_sliding_window", default=False)):
        first_sliding = int(_first(cfg, "max_window_layers", default=0) or 0) if arch != "mistral" else 0
        kinds = ["full_attention" if i < first_sliding else "sliding_attention" for i in range(layers)]
        fields["layer_pattern"] = _period(kinds)
    if "sliding_attention" in fields.get("layer_pattern", ()):
        fields["sliding_window"] = int(window) if window else None
    if "linear_attention" in fields.get("layer_pattern", ()):
        fields["linear_num_key_heads"] = _first(cfg, "linear_num_key_heads")
        fields["linear_num_value_heads"] = _first(cfg, "linear_num_value_heads")
        fields["linear_key_head_dim"] = _first(cfg, "linear_key_head_dim")
        fields["linear_value_head_dim"] = _first(cfg, "linear_value_head_dim")
        fields["linear_conv_kernel_dim"] = _first(cfg, "linear_conv_kernel_dim", default=4)
        # Qwen3.5/3.6 name their recurrent state's dtype; vLLM holds the state in it (Qwen3_5...Config.
        # verify_and_update_config copies mamba_ssm_dtype into mamba_ssm_cache_dtype)
        state = _first(cfg, "mamba_ssm_dtype", "mamba_ssm_cache_dtype")
        if state is not None:
            fields["linear_state_dtype"] = _state_dtype(arch, "mamba_ssm_dtype", state)

    mtp = _first(cfg, "num_nextn_predict_layers", "mtp_num_hidden_layers", default=0) or 0
    if not mtp and _first(cfg, "use_mtp", default=False):
        mtp = _first(cfg, "num_mtp_modules", default=0) or 0
    fields["num_mtp_layers"] = int(mtp)
    return fields


# How a checkpoint names each of ModelSpec.gemm_shapes' non-expert matrices inside a decoder layer (every name the
# matrix may go by, across architectures), to read which of them a 4-bit float release leaves out of its quantisation
_HF_MODULES: Mapping[str, tuple[str, ...]] = {
    "q_a_proj": ("self_attn.q_a_proj", "attn.wq_a"),
    "q_b_proj": ("self_attn.q_b_proj", "attn.wq_b"),
    "kv_a_proj_with_mqa": ("self_attn.kv_a_proj_with_mqa", "attn.wkv_a"),
    "kv_b_proj": ("self_attn.kv_b_proj", "attn.wkv_b"),
    "qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mixer.q_proj", "mixer.k_proj",
                 "mixer.v_proj"),
    "full_qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o_proj": ("self_attn.o_proj", "mixer.o_proj", "attn.wo"),
    "full_o_proj": ("self_attn.o_proj",),
    "indexer_wq_b": ("self_attn.indexer.wq_b",),
    "indexer_wk": ("self_attn.indexer.wk",),
    "indexer_weights_proj": ("self_attn.indexer.weights_proj",),
    "in_proj_qkvz": ("linear_attn.in_proj_qkvz", "linear_attn.in_proj_qkv", "linear_attn.in_proj_z"),
    "in_proj_ba": ("linear_attn.in_proj_ba", "linear_attn.in_proj_a", "linear_attn.in_proj_b"),
    "out_proj": ("linear_attn.out_proj", "mixer.out_proj"),
    "in_proj": ("mixer.in_proj",),
    "gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "down_proj": ("mlp.down_proj",),
    "shared_expert_gate_up_proj": ("mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj",
                                   "mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj",
                                   "block_sparse_moe.shared_experts.gate_proj", "block_sparse_moe.shared_experts.up_proj",
                                   "mixer.shared_experts.up_proj", "ffn.shared_experts.w1", "ffn.shared_experts.w3"),
    "shared_expert_up_proj": ("mixer.shared_experts.up_proj",),
    "shared_expert_down_proj": ("mlp.shared_experts.down_proj", "mlp.shared_expert.down_proj",
                                "block_sparse_moe.shared_experts.down_proj", "mixer.shared_experts.down_proj",
                                "ffn.shared_experts.w2"),
    "shared_expert_gate": ("mlp.shared_expert_gate",),
}  # fmt: skip
# Gemma 4 runs a dense MLP beside its experts (the catalogue's shared expert), named mlp like a dense model's
_HF_MODULES_GEMMA4 = {
    "shared_expert_gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "shared_expert_down_proj": ("mlp.down_proj",),
}
_LAYER_PREFIXES = ("model.layers", "model.language_model.layers", "language_model.model.layers", "backbone.layers",
                   "layers", "model.model.layers")  # fmt: skip
_FP8_ALGOS = {"fp8": "fp8", "mxfp8": "fp8", "fp8_pb_wo": "fp8", "fp8_block": "fp8", "int8": "int8"}


_LINEAR_MATRICES = frozenset({"in_proj_qkvz", "in_proj_ba", "out_proj", "in_proj"})


def _holds(spec: ModelSpec, gemm: Any, layer: int) -> bool:
    """Whether decoder layer ``layer`` of ``spec`` holds the non-expert matrix ``gemm``."""
    kind = spec.layer_kind(layer)
    if gemm.group == "mlp":
        return spec.has_mlp(layer) and not spec.is_moe_layer(layer)
    if gemm.group == "moe_shared":
        return spec.is_moe_layer(layer)
    if gemm.name in _LINEAR_MATRICES:
        return kind == "linear_attention"
    if gemm.name.startswith("full_"):
        return kind == "full_attention"
    if kind in ("linear_attention", "none"):
        return False
    # a model whose full-attention layers are shaped apart (Gemma 4) names their matrices full_*
    return not (spec.full_attention_shaped_apart and kind == "full_attention")


def _module_patterns(patterns: list[str]) -> re.Pattern[str] | None:
    """ModelOpt's ``exclude_modules`` globs and compressed-tensors' ``ignore`` names (``re:``-prefixed entries are
    regular expressions, as llm-compressor writes them) as one expression."""
    parts = [p[3:] if p.startswith("re:") else fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


def nvfp4_kept_from_quantization(quant: Any, spec: ModelSpec) -> dict[str, str]:
    """Which of ``spec``'s non-expert matrices a 4-bit float checkpoint leaves out of its 4-bit quantisation, and
    the dtype it holds them at (``ModelSpec.nvfp4_kept``), from its ``quantization_config`` (or ModelOpt's
    ``hf_quant_config.json`` ``quantization`` section).

    ModelOpt lists the modules it leaves alone in ``exclude_modules`` (globs; compressed-tensors: ``ignore``), held
    at the checkpoint's 16-bit dtype; a ``MIXED_PRECISION`` export names each quantised module's format in
    ``quantized_layers`` (FP8 attention beside NVFP4 MLPs), and leaves in 16 bits a module it does not name beside
    ones of the same module it does (Qwen3.6's in_proj_a/b beside its FP8 in_proj_qkv). The LM head, 16-bit
    otherwise, is quantised where such an export names it (Qwen3.6: ``lm_head`` W4A16_NVFP4). A
    matrix counts as kept when every decoder layer that holds it keeps it alike (NVIDIA's Nemotron-3-Nano keeps 6
    of its 23 Mamba layers' projections in 16 bits: not represented). Empty for other checkpoints. Excluded
    modules are taken as bf16 (an export from an fp8 base, such as DeepSeek-V4's, may hold them at fp8: give the
    catalogue entry's ``nvfp4_kept`` by hand then)."""
    if not isinstance(quant, Mapping) or spec.native_dtype != "nvfp4":
        return {}
    excluded = [str(p) for p in (quant.get("exclude_modules") or quant.get("ignore") or ()) if isinstance(p, str)]
    mixed = str(quant.get("quant_algo", "")).upper() == "MIXED_PRECISION"
    layers_q: dict[str, str] = {}
    if mixed and isinstance(quant.get("quantized_layers"), Mapping):
        for name, cfg in quant["quantized_layers"].items():
            algo = str(cfg.get("quant_algo", "") if isinstance(cfg, Mapping) else cfg).lower()
            layers_q[str(name)] = algo
    if not excluded and not layers_q:
        return {}
    excluded_re = _module_patterns(excluded)  # a release lists hundreds, one a layer and module
    table = dict(_HF_MODULES)
    if spec.architecture.startswith("gemma4"):
        table.update(_HF_MODULES_GEMMA4)

    def listed(name: str) -> str | None:
        """The format quantized_layers gives the module ``name`` (itself, or a parent module it names whole, such as
        ``…mlp.experts``)."""
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            algo = layers_q.get(".".join(parts[:end]))
            if algo is not None:
                return algo
        return None

    def kept_dtype(names: list[str], kin: list[str]) -> str | None:
        """The dtype a layer keeps a matrix at (None: quantised to 4 bits), from the module names it may go by
        and those of its group's other matrices in the same module (``kin``)."""
        if excluded_re is not None and any(excluded_re.match(n) for n in names):
            return "bf16"
        if not mixed:
            return None
        for n in names:
            algo = listed(n)
            if algo is not None:
                return _FP8_ALGOS.get(algo)
        # a mixed-precision export leaves unquantised what it does not name beside what it does (Qwen3.6's
        # in_proj_a/b beside its FP8 in_proj_qkv); a module it names nothing of may go by a name not read here
        return "bf16" if any(listed(k) is not None for k in kin) else None

    # the layer prefix: in a mixed export the one most of its quantized_layers use, else any the patterns match
    prefixes: tuple[str, ...] = _LAYER_PREFIXES
    if layers_q:
        found_prefixes = [m.group(1) for m in (re.match(r"(.*?)\.\d+\.", n) for n in layers_q) if m]
        if found_prefixes:
            prefixes = (max(sorted(set(found_prefixes)), key=found_prefixes.count),)
    out: dict[str, str] = {}
    for g in spec.gemm_shapes:
        if g.group in ("moe_expert", "lm_head", "router") or g.precision is not None or g.name not in table:
            continue
        holding = [i for i in range(spec.num_layers) if _holds(spec, g, i)]
        if len(holding) != g.num_layers:  # a layout this reading does not know: leave the matrix quantised
            continue
        heads = {mod.split(".", 1)[0] for mod in table[g.name]}
        kin = [mod for h in spec.gemm_shapes if h.group == g.group and h.name != g.name
               for mod in table.get(h.name, ()) if mod.split(".", 1)[0] in heads]  # fmt: skip
        for prefix in prefixes:
            found = {
                kept_dtype([f"{prefix}.{i}.{mod}" for mod in table[g.name]], [f"{prefix}.{i}.{mod}" for mod in kin])
                for i in holding
            }
            if len(found) == 1 and None not in found:
                out[g.name] = str(found.pop())
                break
    # the LM head: 16-bit unless a mixed-precision export names it among its quantised layers (Qwen3.6's
    # W4A16_NVFP4 lm_head); DeepSeek-V4 calls it "head"
    head_algo = next((a for a in (listed("lm_head"), listed("head")) if a is not None), None) if mixed else None
    if head_algo is not None and not spec.tie_word_embeddings and any(g.group == "lm_head" for g in spec.gemm_shapes):
        head = "nvfp4" if "nvfp4" in head_algo else _FP8_ALGOS.get(head_algo)
        if head in ("nvfp4", "fp8"):
            out["lm_head"] = head
    # a group every matrix of which is kept is written as the group, at its most common dtype (others by name)
    for group in {g.group for g in spec.gemm_shapes}:
        names = [g.name for g in spec.gemm_shapes if g.group == group]
        if len(names) < 2 or any(n not in out for n in names):
            continue
        dtypes = [out[n] for n in names]
        common = max(sorted(set(dtypes)), key=dtypes.count)
        for n in names:
            if out[n] == common:
                del out[n]
        out[group] = common
    return out


def load_hf_config(
    config: Mapping[str, Any],
    *,
    model_id: str | None = None,
    source: str | None = None,
    as_of: _dt.date | None = None,
    aliases: tuple[str, ...] = (),
    notes: str = "",
) -> ModelSpec:
    """Build a :class:`ModelSpec` from a parsed Hugging Face ``config.json``.

    ``model_id`` defaults to the config's ``_name_or_path`` (or ``"hf-config"``); ``source`` to
    ``"config.json"``; ``as_of`` to :data:`UNKNOWN_AS_OF` (the edge passes the file's date).
    """
    fields = spec_fields_from_hf_config(config)
    ident = model_id or str(config.get("_name_or_path") or "") or "hf-config"
    try:
        spec = ModelSpec(
            id=ident,
            aliases=aliases,
            source=source or "config.json",
            as_of=as_of or UNKNOWN_AS_OF,
            notes=notes,
            **fields,
        )
        text_config = config.get("text_config")
        quant = config.get("quantization_config") or (
            text_config.get("quantization_config") if isinstance(text_config, Mapping) else None
        )
        kept = nvfp4_kept_from_quantization(quant, spec)
        return spec.model_copy(update={"nvfp4_kept": kept}) if kept else spec
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(config)"
        raise CatalogError(f"config.json for '{ident}': field '{loc}': {err.get('msg', 'invalid')}") from None
