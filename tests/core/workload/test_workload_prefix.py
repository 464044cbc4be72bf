import numpy as np
import pytest

from gpuyield.core.workload import (
    ArrivalSpec,
    PrefixSpec,
    RagSpec,
    SessionSpec,
    SystemPromptSpec,
    Workload,
    WorkloadMeta,
    apply_prefix_structure,
    inspect,
    synthesize,
)


def base(n=400, rate=20.0, seed=0):
    rng = np.random.default_rng(seed)
    isl = rng.integers(50, 3000, size=n)
    osl = rng.integers(1, 500, size=n)
    return synthesize(isl, osl, ArrivalSpec("poisson", rate_per_s=rate), WorkloadMeta("b"), seed=seed)


def test_system_prompts_share_exactly_their_blocks():
    w = base()
    spec = PrefixSpec(system_prompts=SystemPromptSpec(count=1, tokens=1024), block_size_tokens=256)
    p = apply_prefix_structure(w, spec, seed=1)
    assert np.array_equal(p.input_tokens, w.input_tokens + 1024)  # prepended
    firsts = {tuple(p.block_hashes(i)[:4].tolist()) for i in range(len(p))}
    assert len(firsts) == 1  # one system prompt: 4 identical leading blocks everywhere
    fifth = [int(p.block_hashes(i)[4]) for i in range(len(p)) if len(p.block_hashes(i)) > 4]
    assert len(set(fifth)) == len(fifth)  # after the prompt, every request is unique
    # hand count: reuse = (n - 1) * 4 blocks out of all blocks
    s = inspect(p)
    assert s.num_blocks == int((p.input_tokens // 256).sum())
    assert s.prefix_reuse_block_frac == pytest.approx((len(p) - 1) * 4 / s.num_blocks)


def test_sessions_extend_the_previous_context():
    w = base(n=300, rate=2.0)
    spec = PrefixSpec(sessions=SessionSpec(mean_turns=5, min_think_s=0.5), block_size_tokens=64)
    p = apply_prefix_structure(w, spec, seed=2)
    by_session: dict[str, list[int]] = {}
    for i in range(len(p)):
        by_session.setdefault(p.session_of(i), []).append(i)
    multi = [v for v in by_session.values() if len(v) > 1]
    assert multi, "expected multi-turn sessions"
    for turns in multi:
        for prev, nxt in zip(turns, turns[1:], strict=False):
            ctx = int(p.input_tokens[prev] + p.output_tokens[prev])
            assert p.input_tokens[nxt] == ctx + w.input_tokens[nxt]
            k = int(p.input_tokens[prev]) // 64  # the previous prompt's full blocks are the next prompt's prefix
            assert np.array_equal(p.block_hashes(nxt)[:k], p.block_hashes(prev)[:k])
            assert p.arrival_s[nxt] - p.arrival_s[prev] >= 0.5
    assert inspect(p).num_sessions == len(by_session)
    assert np.array_equal(p.arrival_s, w.arrival_s) and np.array_equal(p.output_tokens, w.output_tokens)


def test_preserve_input_tokens_keeps_lengths():
    w = base()
    spec = PrefixSpec(
        system_prompts=SystemPromptSpec(count=4, tokens=2048), sessions=SessionSpec(mean_turns=3, min_think_s=0),
        rag=RagSpec(num_docs=10, doc_tokens=1000), preserve_input_tokens=True, block_size_tokens=128,
    )
    p = apply_prefix_structure(w, spec, seed=3)
    assert np.array_equal(p.input_tokens, w.input_tokens)
    assert all(len(p.block_hashes(i)) == w.input_tokens[i] // 128 for i in range(len(p)))
    assert inspect(p).prefix_reuse_block_frac > 0.3


def test_rag_popularity_and_determinism():
    w = base(n=1000)
    spec = PrefixSpec(rag=RagSpec(num_docs=50, doc_tokens=512, zipf_s=1.2), block_size_tokens=512)
    a = apply_prefix_structure(w, spec, seed=4)
    b = apply_prefix_structure(w, spec, seed=4)
    c = apply_prefix_structure(w, spec, seed=5)
    assert np.array_equal(a.hash_values, b.hash_values)
    assert not np.array_equal(a.hash_values, c.hash_values)
    first = [int(a.block_hashes(i)[0]) for i in range(len(a))]
    counts = sorted(np.unique(first, return_counts=True)[1], reverse=True)
    assert len(counts) <= 50 and counts[0] > 5 * counts[-1]  # Zipf: the top document dominates
    assert "synthetic prefix structure" in a.meta.notes[-1]


def test_max_context_starts_a_new_session():
    w = Workload(arrival_s=np.arange(20) * 10.0, input_tokens=np.full(20, 1000), output_tokens=np.full(20, 100),
                 meta=WorkloadMeta("m"))
    spec = PrefixSpec(sessions=SessionSpec(mean_turns=1e9, min_think_s=0, max_context_tokens=5000))
    p = apply_prefix_structure(w, spec, seed=0)
    assert p.input_tokens.max() <= 5000
    assert inspect(p).num_sessions > 1


# ---------------------------------------------------------------- the layout hashing itself
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gpuyield.core.workload import prefix as prefix_mod  # noqa: E402

layouts = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 70)), min_size=1, max_size=5)


def _tokens(layout):
    return [(uid, off) for uid, n in layout for off in range(n)]


@settings(max_examples=300, deadline=None)
@given(layouts, layouts, st.sampled_from([4, 8, 16]))
def test_layout_hashes_equal_iff_prefix_content_equal(a, b, bs):
    ha = prefix_mod._block_hashes(list(a), sum(n for _, n in a), bs, (), 0)
    hb = prefix_mod._block_hashes(list(b), sum(n for _, n in b), bs, (), 0)
    ta, tb = _tokens(a), _tokens(b)
    for k in range(1, min(len(ha), len(hb)) + 1):
        assert (ha[k - 1] == hb[k - 1]) == (ta[: k * bs] == tb[: k * bs])


@settings(max_examples=100, deadline=None)
@given(layouts, st.sampled_from([4, 8]), st.integers(0, 40))
def test_layout_hashes_do_not_depend_on_copying_or_vectorising(a, bs, fixed):
    total = sum(n for _, n in a)
    full = prefix_mod._block_hashes(list(a), total, bs, (), 0)
    fixed = min(fixed, len(full))
    assert prefix_mod._block_hashes(list(a), total, bs, full, fixed) == full
    old = prefix_mod._VECTOR_MIN_BLOCKS
    try:
        prefix_mod._VECTOR_MIN_BLOCKS = 1
        assert prefix_mod._block_hashes(list(a), total, bs, (), 0) == full
        prefix_mod._VECTOR_MIN_BLOCKS = 10**9
        assert prefix_mod._block_hashes(list(a), total, bs, (), 0) == full
    finally:
        prefix_mod._VECTOR_MIN_BLOCKS = old
