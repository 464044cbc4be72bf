"""Speculative decoding (MTP, EAGLE, n-gram): what one decode step costs and how many tokens it yields.

A speculative engine proposes ``num_draft_tokens`` (K) tokens per running sequence with a cheap drafter, then
runs the target model once over all K + 1 positions and keeps the accepted prefix plus one token of its own.
With a per-position acceptance rate ``a`` (the chance that a draft token is accepted given that the previous
one was; the usual geometric model, as in vLLM's and SGLang's spec-decode metrics), a step yields on average

    E = 1 + a + a^2 + ... + a^K = (1 - a^(K+1)) / (1 - a)

tokens per sequence. Its cost, in :class:`gpuyield.core.perf.PerfModel`:

- **verification**: the target model over ``D x (K + 1)`` tokens: dense and expert GEMMs, collectives and the
  LM head see K + 1 tokens per sequence (so a small batch, weight-bound, gets them almost free and a large,
  compute-bound one pays for them); decode attention reads each sequence's KV once and computes K + 1 queries;
- **drafting**: K sequential drafter passes over the ``D`` sequences, each ``draft_layers`` decoder layers of the
  target's width (MTP: the checkpoint's MTP modules; EAGLE: one layer; n-gram: none) plus an LM head, the same
  scaling AIConfigurator applies to MTP ((L + K) / L on the generation ops).

The engine model keeps one output token per scheduler step, so a step is charged what its prefill chunks alone
would take plus the rest of the real step (verification of the decodes on top of the chunks, and drafting)
divided by E: a pure decode step costs its real duration / E per token, a prefill chunk keeps its whole cost
(shared weight reads and overhead included), and the step time stays monotone in every argument and affine in
the decode context, as the engine model needs. Decoding requests take K + 1 tokens each of a step's token
budget (the engine model's scheduler and the analytic solver's chunking, as vLLM counts draft tokens).
Approximation: the K + 1 positions of a sequence route to experts as independent tokens.
``estimate`` (both methods), ``simulate`` (a pool's ``speculative:``), ``plan --spec-method`` (screen and
simulations) and ``engine-emulator --spec-method`` time steps through that one method.

Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpuyield.errors import ConfigError

__all__ = ["SPEC_METHODS", "SpeculativeDecoding"]

# method -> what drafts the tokens (documented above)
SPEC_METHODS = ("mtp", "eagle", "eagle3", "ngram")


@dataclass(frozen=True, slots=True)
class SpeculativeDecoding:
    """K draft tokens per step, accepted position by position with probability ``acceptance_rate``."""

    method: str = "mtp"
    num_draft_tokens: int = 1
    acceptance_rate: float = 0.7
    # the drafter checkpoint deployment files load (EAGLE's head, a Hugging Face id); not used for timing
    draft_model: str | None = None

    def __post_init__(self) -> None:
        if self.method not in SPEC_METHODS:
            raise ConfigError(f"speculative.method: expected one of {', '.join(SPEC_METHODS)}, got {self.method!r}")
        k = self.num_draft_tokens
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 16:
            raise ConfigError(f"speculative.num_draft_tokens: expected an integer in 1..16, got {k!r}")
        a = self.acceptance_rate
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not (0.0 <= a <= 1.0) or math.isnan(a):
            raise ConfigError(f"speculative.acceptance_rate: expected a number in [0, 1], got {a!r}")
        if self.draft_model is not None and (not isinstance(self.draft_model, str) or not self.draft_model.strip()):
            raise ConfigError(f"speculative.draft_model: expected a model id, got {self.draft_model!r}")

    @property
    def positions_per_seq(self) -> int:
        """Positions a decoding sequence runs through the target model per step (K + 1): what it takes of the
        step's token budget, as vLLM counts draft tokens."""
        return self.num_draft_tokens + 1

    def times_pool(self, role: str) -> bool:
        """Whether a pool of ``role`` (mixed | prefill | decode) has its steps timed with this setting: every
        pool that decodes."""
        return role != "prefill"

    def launches_on(self, role: str) -> bool:
        """Whether a pool's servers are launched with it: every pool that decodes, and a P/D prefill pool too
        when the drafter is a model (its KV is filled on the prefill side; vLLM's NIXL handshake refuses a
        mismatch); n-gram lookup has no KV."""
        return self.times_pool(role) or self.method != "ngram"

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens a sequence gains per decode step (accepted drafts plus the target's own)."""
        a, k = float(self.acceptance_rate), self.num_draft_tokens
        if a >= 1.0:
            return float(k + 1)
        return (1.0 - a ** (k + 1)) / (1.0 - a)

    def draft_layers(self, model: Any) -> int:
        """Decoder layers one drafter pass runs: the checkpoint's MTP modules (an error if it has none), one
        for EAGLE (-1/-2 heads as ``eagle``, EAGLE-3 heads as ``eagle3``), none for n-gram lookup."""
        if self.method == "ngram":
            return 0
        if self.method in ("eagle", "eagle3"):
            return 1
        n = int(getattr(model, "num_mtp_layers", 0) or 0)
        if n < 1:
            raise ConfigError(
                f"speculative.method mtp: model {getattr(model, 'id', model)!r} has no MTP layers in the catalogue; "
                "use method eagle or eagle3 (a one-layer drafter) or ngram"
            )
        return n

    def describe(self) -> str:
        return (
            f"speculative decoding: {self.method}, {self.num_draft_tokens} draft token(s), acceptance "
            f"{self.acceptance_rate:g} -> {self.tokens_per_step:.2f} tokens per step"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "num_draft_tokens": self.num_draft_tokens,
                               "acceptance_rate": self.acceptance_rate}  # fmt: skip
        if self.draft_model is not None:
            out["draft_model"] = self.draft_model
        return out

    def vllm_config(self) -> dict[str, Any]:
        """vLLM's ``--speculative-config`` for this setting (an EAGLE head needs ``draft_model``)."""
        cfg: dict[str, Any] = {"method": self.method, "num_speculative_tokens": self.num_draft_tokens}
        if self.method in ("eagle", "eagle3"):
            cfg["model"] = self._head()
        if self.method == "ngram":
            cfg["prompt_lookup_max"] = 4
        return cfg

    def sglang_args(self) -> list[str]:
        """SGLang's launch flags for this setting (MTP runs as EAGLE over the checkpoint's NextN layers)."""
        k = self.num_draft_tokens
        if self.method == "ngram":
            return ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", str(k + 1)]
        algorithm = "EAGLE3" if self.method == "eagle3" else "EAGLE"
        args = ["--speculative-algorithm", algorithm, "--speculative-num-steps", str(k), "--speculative-eagle-topk", "1",
                "--speculative-num-draft-tokens", str(k + 1)]  # fmt: skip
        if self.method in ("eagle", "eagle3"):
            args += ["--speculative-draft-model-path", self._head()]
        return args

    def _head(self) -> str:
        if self.draft_model is None:
            raise ConfigError(
                f"speculative.method {self.method}: deployment files need the EAGLE head "
                "(draft_model; plan --spec-draft-model HF_ID)"
            )
        return self.draft_model
