"""Prefix-block hashing: chained 63-bit hashes of token blocks, deterministic across processes and machines.

A prompt is cut into full blocks of ``block_size_tokens`` tokens; block ``k``'s hash is
``chain(hash[k-1], key[k])`` where ``key[k]`` identifies the block's content. Because each hash folds in its
parent, two prompts share their first ``k`` hashes iff they share their first ``k`` blocks (up to hash
collisions, about 2^-63 per pair) -- the property vLLM's prefix cache relies on.

Keys come from real tokens (:func:`hash_token_blocks`, BLAKE2b of the token ids) or from synthetic content ids
(:func:`content_key`, used by the synthetic prefix generators and to re-key Mooncake ``hash_ids``). Python's
salted ``hash()`` is never used. Hashes are ints in ``[0, 2**63)`` so they fit a signed 64-bit column
(Parquet, DuckDB, numpy int64).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "HASH_MASK",
    "ROOT_HASH",
    "chain_hash",
    "chain_hashes",
    "chain_hashes_np",
    "content_key",
    "hash_token_blocks",
    "mix64",
    "mix64_np",
]

HASH_MASK = (1 << 63) - 1
_M64 = (1 << 64) - 1
ROOT_HASH = 0x2545F4914F6CDD1D & HASH_MASK  # the parent of a prompt's first block


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a bijective 64-bit mix (Steele, Lea, Flood 2014)."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def mix64_np(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Vectorised :func:`mix64` over uint64 arrays (wrapping arithmetic, same results)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def chain_hash(parent: int, key: int) -> int:
    """The hash of a block with content key ``key`` whose prefix hashes to ``parent``."""
    return mix64((mix64(parent) ^ (key & _M64)) + 0x9E3779B97F4A7C15) & HASH_MASK


def chain_hashes(keys: Sequence[int], parent: int = ROOT_HASH) -> tuple[int, ...]:
    """Chain ``keys`` (one per block, in prefix order) starting from ``parent``."""
    out: list[int] = []
    h = parent
    for k in keys:
        h = chain_hash(h, int(k))
        out.append(h)
    return tuple(out)


def chain_hashes_np(
    keys: npt.NDArray[np.int64], parents: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """One chaining step for many blocks at once: ``chain_hash(parents[i], keys[i])`` for every ``i``."""
    p = mix64_np(parents.astype(np.uint64))
    with np.errstate(over="ignore"):
        v = (p ^ keys.astype(np.uint64)) + np.uint64(0x9E3779B97F4A7C15)
    return (mix64_np(v) & np.uint64(HASH_MASK)).astype(np.int64)


def content_key(namespace: str, *ids: int) -> int:
    """A 64-bit content key for synthetic content, e.g. ``content_key("sys", prompt_id, block_index)``."""
    h = hashlib.blake2b(namespace.encode("utf-8"), digest_size=8)
    for i in ids:
        h.update((int(i) & _M64).to_bytes(8, "little"))  # two's complement for negatives
    return int.from_bytes(h.digest(), "little")


def hash_token_blocks(
    token_ids: Sequence[int], block_size_tokens: int, parent: int = ROOT_HASH
) -> tuple[int, ...]:
    """Chained hashes of the full blocks of a token sequence (a trailing partial block is not hashed)."""
    if block_size_tokens < 1:
        raise ValueError(f"block_size_tokens must be >= 1, got {block_size_tokens}")
    num_blocks = len(token_ids) // block_size_tokens
    # one little-endian int64 buffer for all blocks, and a keyed hasher copied per block (cheaper than building
    # one per block; the digests are the same as hashing each block's int64 bytes on its own)
    data = memoryview(np.asarray(token_ids[: num_blocks * block_size_tokens], dtype="<i8").tobytes())
    template = hashlib.blake2b(digest_size=8, person=b"gpuyield-blk")
    step = 8 * block_size_tokens
    keys = []
    for b in range(num_blocks):
        h = template.copy()
        h.update(data[b * step : (b + 1) * step])
        keys.append(int.from_bytes(h.digest(), "little"))
    return chain_hashes(keys, parent)
