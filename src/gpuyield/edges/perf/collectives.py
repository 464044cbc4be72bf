"""Microbenchmarks of the collectives a tensor- or expert-parallel step runs, in the table ``calibrate`` reads.

``gpuyield profile --collectives N`` times ``all_reduce``, ``all_gather`` and ``reduce_scatter`` over groups of 2, 4,
… N ranks through ``torch.distributed``: NCCL on CUDA GPUs (one rank a GPU), gloo on the CPU (one rank a process, the
stand-in that exercises the same loop on a machine without GPUs). Each rank is its own process, started with
``torch.multiprocessing`` and rendezvousing on a loopback TCP port. Tensors are 16-bit (bf16): the engines exchange
bf16 activations. The table is AIConfigurator's ``nccl_perf`` form::

    OUT/data/<device>/comm/nccl/<version>/nccl_perf.csv
        framework, version, device, op_name, kernel_source, nccl_dtype (half), num_gpus, message_size, latency

``message_size`` counts elements (2 bytes each) and is the whole buffer: the gathered output of an all-gather, the
input of a reduce-scatter (rounded down to a multiple of the group, which splits it in equal shares); ``latency`` is
the median milliseconds a call over blocks of back-to-back calls (timed on rank 0 from one barrier to the end of its
last call). ``<version>`` is NCCL's (CUDA) or torch's (CPU; ``framework`` says gloo).

Sizes run smallest first; rank 0 stops an operation when its next size (4x the bytes) would end past the deadline,
and tells the other ranks. Starting the rank processes is not in that estimate (a few seconds each group on a CPU),
and a group whose ranks fail or hang is given up at the deadline plus a grace period, its timings so far kept and
the run reported as cut short.
"""

from __future__ import annotations

import datetime
import queue as queue_mod
import statistics
import time
from collections.abc import Callable
from typing import Any

from gpuyield.errors import ConfigError

__all__ = [
    "COLLECTIVE_OPS",
    "DEFAULT_ELEMENTS",
    "NCCL_COLS",
    "check_collectives",
    "group_sizes",
    "profile_collectives",
]

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


GRACE_S = 30.0  # how long past the deadline a group's ranks may take to report before they are stopped


def check_collectives(device: str, largest: int) -> tuple[str, str, str]:
    """Refuse what cannot run before anything is measured; return ``(backend, framework, version)``."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("gpuyield profile --collectives needs torch: pip install 'gpuyield[profile]'") from None
    if not dist.is_available():
        raise ConfigError("--collectives: this torch build has no torch.distributed")
    if device == "cuda":
        have = torch.cuda.device_count()
        if largest > have:
            raise ConfigError(f"--collectives {largest}: torch sees {have} CUDA device(s); one rank runs on each")
        if not dist.is_nccl_available():
            raise ConfigError("--collectives on CUDA needs torch.distributed's NCCL backend")
        nccl = getattr(torch.cuda, "nccl", None)
        ver = nccl.version() if nccl is not None else ()
        version = ".".join(str(v) for v in ver) if isinstance(ver, tuple) else str(ver)
        return "nccl", "NCCL", version or "unknown"
    if not dist.is_gloo_available():
        raise ConfigError("--collectives on the CPU needs torch.distributed's gloo backend")
    return "gloo", "gloo", torch.__version__.split("+")[0]


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
    deadline, or a failing rank, cut a group size or an operation short."""
    backend, framework, version = check_collectives(device, largest)
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if device == "cuda":
        torch.cuda.empty_cache()  # rank 0 shares GPU 0 with this process
    rows: list[tuple[str, int, int, float]] = []
    stopped = False
    ctx = mp.get_context("spawn")
    for n in group_sizes(largest):
        if time.time() >= deadline:
            stopped = True
            break
        # the rendezvous store lives here, on a port the OS picked and this process holds: no port race
        store = dist.TCPStore("127.0.0.1", 0, n + 1, is_master=True, wait_for_workers=False)
        q = ctx.Queue()
        procs = [
            ctx.Process(
                target=_worker,
                args=(rank, n, backend, device, store.port, elements, repeats, deadline, q),
                daemon=True,
            )
            for rank in range(n)
        ]
        for p in procs:
            p.start()
        got: list[tuple[str, int, float]] = []
        finished, failure = False, ""
        give_up = deadline + GRACE_S
        while not finished and not failure:
            try:
                msg = q.get(timeout=1.0)
            except queue_mod.Empty:
                dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    failure = f"rank {dead[0]} exited with code {procs[dead[0]].exitcode}"
                elif time.time() > give_up:
                    failure = f"no result {GRACE_S:.0f} s past the budget"
                continue
            if msg[0] == "row":
                got.append(msg[1])
            elif msg[0] == "done":
                finished, stopped = True, stopped or bool(msg[1])
            else:  # ("error", rank, text)
                failure = f"rank {msg[1]} failed: {msg[2]}"
        for p in procs:
            p.join(timeout=5.0 if finished else 0.5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5.0)
        rows += [(op, n, el, ms) for op, el, ms in got]
        if failure:
            stopped = True
            if log:
                log(f"collectives over {n} {backend} ranks: {failure}; {len(got)} timings kept, larger groups skipped")
            break
        if log:
            log(f"collectives over {n} {backend} ranks: {len(got)} timings")
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
    q: Any,
) -> None:  # pragma: no cover - runs in the spawned ranks (the torch tests cover it end to end)
    import torch
    import torch.distributed as dist

    joined = False
    try:
        if device == "cuda":
            torch.cuda.set_device(rank)
        dev = torch.device(device, rank) if device == "cuda" else torch.device("cpu")
        sync: Callable[[], None] = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        store = dist.TCPStore("127.0.0.1", port, world + 1, is_master=False)
        # a rank that dies leaves the others in a collective: the backend's timeout ends their wait
        wait = datetime.timedelta(seconds=max(30.0, deadline - time.time() + GRACE_S))
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=wait)
        joined = True
        # the newer names where torch has them (2.13 deprecates the *_tensor spellings)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        cut = False
        flag = torch.zeros(1, dtype=torch.int32, device=dev)
        for op in COLLECTIVE_OPS:
            last_ms = 0.0
            done: set[int] = set()
            for size in elements:
                el = size if op == "all_reduce" else max(world, size // world * world)  # equal shares
                if el in done:
                    continue
                done.add(el)
                # rank 0 decides whether the next size (4x the bytes of the last) ends in time; all ranks follow
                if rank == 0:
                    calls = 3 + repeats * 10
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
                    times.append((time.perf_counter() - t0) / inner)
                last_ms = statistics.median(times) * 1e3
                if rank == 0:
                    q.put(("row", (op, el, last_ms)))
        dist.barrier()
        if rank == 0:
            q.put(("done", cut))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the group
        q.put(("error", rank, f"{type(exc).__name__}: {exc}"[:300]))
    finally:
        if joined:
            dist.destroy_process_group()
