"""Per-replica request state, owned by one replica's scheduler.

Follows vLLM v1's ``vllm/v1/request.py``: one plain slotted class, an explicit :class:`RequestStatus` whose
ordering carries meaning (every status after ``PREEMPTED`` is finished), and derived counts. A request in the
pure-decode phase is tracked in aggregate by the scheduler (see ``scheduler.py``): its ``num_computed_tokens``
is then ``decode_c0 + (G - decode_g0)`` for the replica's decode-step counter ``G`` and is materialised only
when the request leaves the decode set.
"""

from __future__ import annotations

from enum import IntEnum

from gpuyield.core.sim.engine.block_pool import CacheEntry

__all__ = ["EngineRequest", "RequestStatus"]


class RequestStatus(IntEnum):
    WAITING = 0
    WAITING_FOR_REMOTE_KVS = 1  # P/D decode side: blocks allocated, KV being transferred in
    RUNNING = 2
    PREEMPTED = 3  # back in the waiting queue after losing its KV (recompute)
    FINISHED_STOPPED = 4  # generated all its output tokens
    FINISHED_ABORTED = 5
    FINISHED_IGNORED = 6  # rejected before running (e.g. longer than the KV capacity)

    @staticmethod
    def is_finished(status: RequestStatus) -> bool:
        return status > RequestStatus.PREEMPTED


class EngineRequest:
    """One request's state on one replica. ``idx`` indexes the caller's result arrays."""

    __slots__ = (
        "idx",
        "arrival_s",
        "num_prompt_tokens",
        "max_output_tokens",
        "unit_hashes",
        "unit_blocks",
        "status",
        "num_computed_tokens",
        "num_output_tokens",
        "entries",
        "num_entry_blocks",
        "num_anon_blocks",
        "num_fixed_blocks",
        "num_cached_tokens",
        "num_preemptions",
        "first_token_s",
        "remote_kv",
        "decode_c0",
        "decode_g0",
        "decode_g_finish",
        "decode_phase",
        "lookup_done",
        "load_tokens",
    )

    def __init__(
        self,
        idx: int,
        arrival_s: float,
        num_prompt_tokens: int,
        max_output_tokens: int,
        unit_hashes: tuple[int, ...] = (),
        unit_blocks: int = 1,
        remote_kv: bool = False,
    ) -> None:
        self.idx = idx
        self.arrival_s = arrival_s  # when it reached this replica (simulated s)
        self.num_prompt_tokens = num_prompt_tokens
        self.max_output_tokens = max_output_tokens  # output tokens to generate in total (>= 1)
        self.unit_hashes = unit_hashes  # chained hashes of the prompt's full cache units, prefix order
        self.unit_blocks = unit_blocks  # KV blocks per cache unit (unit tokens = unit_blocks * block_size)
        self.status = RequestStatus.WAITING
        self.num_computed_tokens = 0  # tokens whose KV is in this replica's cache (<= num_tokens)
        self.num_output_tokens = 0  # output tokens generated so far (across preemptions)
        self.entries: list[CacheEntry] = []  # prefix-cache entries this request holds a reference on
        self.num_entry_blocks = 0  # sum of num_blocks over ``entries``
        self.num_anon_blocks = 0  # private (unhashed) blocks held, outside the decode set
        # of those, the blocks of its bounded cache (sliding windows, linear state), held from admission to release
        self.num_fixed_blocks = 0
        self.num_cached_tokens = -1  # prefix-cache hit tokens at first scheduling (-1: not yet looked up)
        self.num_preemptions = 0
        self.first_token_s = -1.0  # when the first output token was produced (-1: not yet)
        self.remote_kv = remote_kv  # P/D: the prompt's KV arrives from a prefill replica
        self.decode_c0 = 0  # decode set: num_computed_tokens when it joined
        self.decode_g0 = 0  # decode set: the replica's decode-step counter when it joined
        self.decode_g_finish = 0  # decode set: counter value at which it has generated all tokens
        self.decode_phase = 0  # decode set: (decode_c0 - decode_g0) mod block_size
        self.lookup_done = False  # prefix cache looked up since it last (re)entered the waiting queue
        self.load_tokens = 0  # tokens reloaded from the offload tier at the current admission

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens (the KV a full recompute would need)."""
        return self.num_prompt_tokens + self.num_output_tokens

    def __repr__(self) -> str:
        return (
            f"EngineRequest(idx={self.idx}, status={self.status.name}, prompt={self.num_prompt_tokens}, "
            f"out={self.num_output_tokens}/{self.max_output_tokens}, computed={self.num_computed_tokens})"
        )
