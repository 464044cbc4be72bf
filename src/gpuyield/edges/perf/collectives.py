"""Microbenchmarks of the collectives a tensor- or expert-parallel step runs, in the table ``calibrate`` reads.

``gpuyield profile --collectives N`` times ``all_reduce``, ``all_gather`` and ``reduce_scatter`` over groups of 2, 4,
… N ranks through ``torch.distributed``: NCCL on CUDA GPUs (one rank a GPU), gloo on the CPU (one rank a process, the
stand-in that exercises the same loop on a machine without GPUs). Each rank is its own process, started with
``torch.multiprocessing`` and rendezvousing on a loopback TCP port. Tensors are 16-bit (bf16): the engines exchange
bf16 activations. The table is AIConfigurator's ``nccl_perf`` form::

    OUT/data/<device>/comm/nccl/<version>/nccl_perf.csv
        framework, version, device, op_name, kernel_source, nccl_dtype (half), num_gpus, message_size, latency

``message_size`` counts elements (2 bytes each) and is the whole buffer: the gathered output of an all-gather, the
input of a reduce-scatter; ``latency`` is the median milliseconds a call over blocks of back-to-back calls between
barriers. ``<version>`` is NCCL's (CUDA) or ``gloo-<torch version>`` (CPU).

Sizes run smallest first; rank 0 stops an operation when its next size (4x the bytes) would end past the deadline,
and tells the other ranks, so the run ends cleanly within its budget.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

from gpuyield.errors import ConfigError

__all__ = ["COLLECTIVE_OPS", "DEFAULT_ELEMENTS", "NCCL_COLS", "group_sizes", "profile_collectives"]

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter")
DEFAULT_ELEMENTS = tuple(256 * 4**i for i in range(10))  # 256 ... 67 M elements (512 B ... 128 MiB in bf16)
NCCL_COLS = (
    "framework",
    "version",
    "device",
    "op_name",
    "kernel_source",
    "nccl_dtype",
    "num_gpus",
    "message_size",
    "latency",
)


def group_sizes(largest: int) -> list[int]:
    """2, 4, 8, ... up to ``largest``, and ``largest`` itself."""
    out = []
    n = 2
    while n <= largest:
        out.append(n)
        n *= 2
    if largest >= 2 and largest not in out:
        out.append(largest)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profile_collectives(
    device: str,
    largest: int,
    deadline: float,
    *,
    elements: tuple[int, ...] = DEFAULT_ELEMENTS,
    repeats: int = 5,
    log: Callable[[str], None] | None = None,
) -> tuple[list[tuple[str, int, int, float]], str, str, bool]:
    """Time the collectives over every group size up to ``largest`` until ``deadline`` (``time.time()``).

    Returns ``(rows, framework, version, stopped)``: rows ``(op, num_gpus, elements, ms)``; ``stopped`` says the
    deadline cut a group size or an operation short."""
    try:
        import torch
        import torch.distributed as dist
        import torch.multiprocessing as mp
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("gpuyield profile --collectives needs torch: pip install 'gpuyield[profile]'") from None
    if not dist.is_available():
        raise ConfigError("--collectives: this torch build has no torch.distributed")
    if device == "cuda":
        have = torch.cuda.device_count()
        if largest > have:
            raise ConfigError(f"--collectives {largest}: torch sees {have} CUDA device(s); one rank runs on each")
        backend = "nccl"
        nccl = getattr(torch.cuda, "nccl", None)
        ver = nccl.version() if nccl is not None else ()
        version = ".".join(str(v) for v in ver) if isinstance(ver, tuple) else str(ver)
        framework = "NCCL"
    else:
        if not dist.is_gloo_available():
            raise ConfigError("--collectives on the CPU needs torch.distributed's gloo backend")
        backend = "gloo"
        version = f"gloo-{torch.__version__.split('+')[0]}"
        framework = "gloo"
    rows: list[tuple[str, int, int, float]] = []
    stopped = False
    ctx = mp.get_context("spawn")
    for n in group_sizes(largest):
        if time.time() >= deadline:
            stopped = True
            break
        queue = ctx.Queue()
        port = _free_port()
        procs = [
            ctx.Process(
                target=_worker, args=(rank, n, backend, device, port, elements, repeats, deadline, queue), daemon=True
            )
            for rank in range(n)
        ]
        for p in procs:
            p.start()
        try:
            got, cut = queue.get(timeout=max(60.0, deadline - time.time() + 60.0))
        except Exception:  # noqa: BLE001 - a rank died or hung: report it, keep what was measured
            got, cut = [], True
            if log:
                log(f"collectives over {n} ranks: no result (a rank failed or hung); stopped")
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        rows += [(op, n, el, ms) for op, el, ms in got]
        stopped = stopped or cut
        if log:
            log(f"collectives over {n} {backend} ranks: {len(got)} timings")
        if not got:
            break
    return rows, framework, version, stopped


def _worker(
    rank: int,
    world: int,
    backend: str,
    device: str,
    port: int,
    elements: tuple[int, ...],
    repeats: int,
    deadline: float,
    queue: Any,
) -> None:  # pragma: no cover - runs in the spawned ranks (the torch test covers it end to end)
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(rank)
    dev = torch.device(device, rank) if device == "cuda" else torch.device("cpu")
    sync: Callable[[], None] = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    # the newer names where torch has them (2.13 deprecates the *_tensor spellings)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    out: list[tuple[str, int, float]] = []
    cut = False
    flag = torch.zeros(1, dtype=torch.int32, device=dev)
    try:
        for op in COLLECTIVE_OPS:
            last_ms = 0.0
            for el in elements:
                if op != "all_reduce" and el % world:
                    continue  # the buffer splits into equal shares
                # rank 0 decides whether the next size (4x the bytes of the last) ends in time; all ranks follow
                if rank == 0:
                    calls = 2 + repeats * 10
                    flag[0] = int(time.time() + calls * 4.0 * last_ms / 1e3 < deadline)
                dist.broadcast(flag, src=0)
                if not int(flag[0]):
                    cut = True
                    break
                whole = torch.ones(el, dtype=torch.bfloat16, device=dev)
                share = torch.ones(el // world, dtype=torch.bfloat16, device=dev)

                def call(whole: Any = whole, share: Any = share, op: str = op) -> None:
                    if op == "all_reduce":
                        dist.all_reduce(whole)
                    elif op == "all_gather":
                        gather(whole, share)
                    else:
                        scatter(share, whole)

                for _ in range(3):  # warm-up (and connection set-up for the first size)
                    call()
                sync()
                inner = 10 if el <= (1 << 20) else 2
                times = []
                for _ in range(repeats):
                    dist.barrier()
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        call()
                    sync()
                    dist.barrier()
                    times.append((time.perf_counter() - t0) / inner)
                last_ms = statistics.median(times) * 1e3
                out.append((op, el, last_ms))
    finally:
        if rank == 0:
            queue.put((out, cut))
        dist.destroy_process_group()
