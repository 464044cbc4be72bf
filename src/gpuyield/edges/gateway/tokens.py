"""Prompt token counting and prefix-block hashing for routing decisions.

With a local Hugging Face ``tokenizer.json`` (``tokenizers`` installed, a path in the config or on the emulator
command line) prompts are tokenised exactly. Without one the **documented approximation** applies: the prompt's
UTF-8 bytes are cut into 4-byte pieces and each piece is one "token" (id = its little-endian value), so
``tokens ≈ ceil(bytes / 4)`` — close to BPE tokenisers' ~4 characters per token on English text — and the
pseudo-token ids are deterministic, so two prompts sharing a prefix share their leading block hashes exactly as
real tokens would (up to the 4-byte alignment). Block hashes use ``gpuyield.core.workload.hashing`` (chained,
process-independent), the same function the workload loaders and the simulator use.

Chat messages are flattened with :func:`chat_to_text` (role header + content per message), the same in the
gateway and the emulator so both count and hash identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuyield.errors import ConfigError

__all__ = ["APPROX_BYTES_PER_TOKEN", "TokenCounter", "chat_to_text", "prompt_text"]

APPROX_BYTES_PER_TOKEN = 4


def chat_to_text(messages: Sequence[Any]) -> str:
    """Flatten OpenAI chat messages to one string (content parts of type text are concatenated)."""
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict):
            raise ValueError("each message must be an object")
        role = m.get("role")
        content = m.get("content", "")
        if not isinstance(role, str):
            raise ValueError("each message needs a string 'role'")
        if content is None:
            content = ""
        if isinstance(content, list):
            texts = []
            for p in content:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    texts.append(p["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise ValueError("message 'content' must be a string or a list of parts")
        parts.append(f"<|{role}|>\n{content}\n")
    return "".join(parts)


def prompt_text(body: dict[str, Any], chat: bool) -> str:
    """The prompt of a completions or chat request as one string; raises ValueError when malformed."""
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("'messages' must be a non-empty array")
        return chat_to_text(msgs)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "".join(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return " ".join(str(p) for p in prompt)
    raise ValueError("'prompt' must be a string, an array of strings or an array of token ids")


class TokenCounter:
    """Counts tokens and computes prefix block hashes, exactly (HF tokenizer) or approximately (bytes/4)."""

    def __init__(self, tokenizer_path: str | Path | None = None, block_size_tokens: int = 16) -> None:
        self.block_size_tokens = int(block_size_tokens)
        self._tok: Any = None
        self.exact = False
        if tokenizer_path is not None:
            path = Path(tokenizer_path)
            if path.is_dir():
                path = path / "tokenizer.json"
            if not path.is_file():
                raise ConfigError(f"tokenizer: {path} does not exist (expected a tokenizer.json or its folder)")
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ConfigError(
                    "tokenizer: the 'tokenizers' package is not installed (pip install tokenizers)"
                ) from exc
            self._tok = Tokenizer.from_file(str(path))
            self.exact = True

    def token_ids(self, text: str) -> list[int]:
        return [int(i) for i in self._ids(text)]

    def _ids(self, text: str) -> Any:
        """The token ids as an int64 numpy array (one conversion; block hashing then slices it, no per-block
        list-to-array work: ~15x less CPU than a list for a 60 kB prompt)."""
        import numpy as np

        if self._tok is not None:
            return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        data = text.encode("utf-8", "surrogatepass")
        pad = -len(data) % APPROX_BYTES_PER_TOKEN
        if pad:  # a short last piece is zero-padded at its high end: the same little-endian value
            data += b"\0" * pad
        return np.frombuffer(data, dtype="<u4").astype(np.int64)

    def count(self, text: str) -> int:
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False).ids)
        return max(1, -(-len(text.encode("utf-8", "surrogatepass")) // APPROX_BYTES_PER_TOKEN))

    def count_and_hash(self, text: str) -> tuple[int, tuple[int, ...]]:
        """(number of tokens, chained hashes of the full blocks of ``block_size_tokens``)."""
        from gpuyield.core.workload.hashing import hash_token_blocks

        ids = self._ids(text)
        return max(1, len(ids)), hash_token_blocks(ids, self.block_size_tokens)
