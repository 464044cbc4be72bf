"""Raw series (from files, endpoints, DuckDB or Prometheus) → :class:`~gpuyield.core.baseline.BaselineInputs`.

Grouping:

- **GPUs** come from DCGM series; one GPU is ``host`` + ``gpu`` index (+ MIG ``GPU_I_ID``), or its UUID when
  there is no host label. Series of one GPU whose labels change over time (a pod starting) are merged.
- **Engines** come from ``vllm:``/``sglang:``/``llamacpp:`` series; one engine is the set of its identifying
  labels (``pod``, ``namespace``, ``instance``, ``host``, ``container``, vLLM's ``engine`` index) — plus
  the source file/URL when none of ``pod``/``instance``/``host`` is present. ``model_name`` is an
  attribute of the engine (series without it, like ``vllm:cache_config_info``, belong to the same engine).
- **Tenants** come from the gateway's ``gpuyield_*`` counters (labels ``tenant``, ``model``).

Joining engines to GPUs, in order: the mapping file's deployments; then equal ``pod`` (and ``namespace``
when both have one) between an engine and the GPUs DCGM reports that pod on. Nothing is joined by guess:
an engine left over becomes a deployment without GPUs and a note says so.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gpuyield.core.baseline import (
    BaselineInputs,
    Deployment,
    EngineTelemetry,
    GpuTelemetry,
    Histogram,
    Price,
    TenantTelemetry,
    TimeSeries,
)
from gpuyield.edges.telemetry.exposition import SeriesKey
from gpuyield.edges.telemetry.families import (
    ENGINE_COUNTERS,
    ENGINE_GAUGES,
    ENGINE_HISTOGRAMS,
    GATEWAY_COUNTERS,
    GATEWAY_TOKEN_KINDS,
    GPU_COUNTERS,
    GPU_GAUGES,
    LEGACY_NAMES,
    PROMPT_EXCLUDES_CACHED,
    engine_kind,
    normalise_labels,
)
from gpuyield.edges.telemetry.mapping import MapFile, selector_matches

__all__ = ["RawSeries", "assemble_inputs", "group_samples"]

_ENGINE_ID_LABELS = ("namespace", "pod", "container", "instance", "host", "engine")
_HIST_SUFFIXES = ("_bucket", "_sum", "_count")

PriceFn = Callable[[str | None], Price | None]


@dataclass(frozen=True, slots=True)
class RawSeries:
    """One series with vendor name and raw labels, its source, and its samples (epoch seconds)."""

    name: str
    labels: dict[str, str]
    source: str
    series: TimeSeries


def group_samples(
    keys: Sequence[SeriesKey], sources: Sequence[str], sid: np.ndarray, ts_ms: np.ndarray, values: np.ndarray
) -> list[RawSeries]:
    """Column arrays (as from :class:`SampleBuffer` or the DuckDB store) → one :class:`RawSeries` per key
    (NaN samples dropped)."""
    finite = ~np.isnan(values)  # NaN samples (stale markers, empty summaries) carry no information
    if not finite.all():
        sid, ts_ms, values = sid[finite], ts_ms[finite], values[finite]
    order = np.argsort(sid, kind="stable")
    sid_sorted = sid[order]
    bounds = np.searchsorted(sid_sorted, np.arange(len(keys) + 1))
    out = []
    for i, key in enumerate(keys):
        idx = order[bounds[i] : bounds[i + 1]]
        if len(idx) == 0:
            continue
        out.append(RawSeries(key.name, dict(key.labels), sources[i], TimeSeries.of(ts_ms[idx] / 1000.0, values[idx])))
    return out


def _merge(series: list[TimeSeries]) -> TimeSeries:
    if len(series) == 1:
        return series[0]
    return TimeSeries.of(np.concatenate([s.ts_s for s in series]), np.concatenate([s.values for s in series]))


@dataclass
class _GpuAcc:
    labels: dict[str, str] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)
    gauges: dict[str, list[TimeSeries]] = field(default_factory=lambda: defaultdict(list))
    counters: dict[str, list[TimeSeries]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class _EngineAcc:
    kind: str
    labels: dict[str, str]
    source: str
    raw: dict[str, dict[tuple[tuple[str, str], ...], list[TimeSeries]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    hist: dict[str, dict[tuple[tuple[str, str], ...], dict[str, list[TimeSeries]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    )
    prefix_caching: bool | None = None


def _gpu_id(labels: dict[str, str], source: str) -> str:
    host, index, uuid = labels.get("host"), labels.get("gpu"), labels.get("uuid")
    mig = labels.get("mig_instance")
    if host and index is not None:
        base = f"{host}/gpu{index}"
    elif uuid:
        base = uuid
    else:
        base = f"{source}/gpu{index if index is not None else '?'}"
    return f"{base}/mig{mig}" if mig else base


def _engine_key(labels: dict[str, str], source: str) -> tuple[tuple[str, str], ...]:
    key = [(k, labels[k]) for k in _ENGINE_ID_LABELS if k in labels]
    if not any(k in labels for k in ("pod", "instance", "host")):
        key.append(("source", source))
    return tuple(key)


def _engine_id(key: tuple[tuple[str, str], ...], model_name: str | None = None) -> str:
    d = dict(key)
    if model_name:
        d["model_name"] = model_name
    where = d.get("pod") or d.get("instance") or d.get("host") or d.get("source", "?")
    if d.get("namespace") and d.get("pod"):
        where = f"{d['namespace']}/{d['pod']}"
    parts = [where]
    if "model_name" in d:
        parts.append(d["model_name"])
    if "engine" in d:
        parts.append(f"engine{d['engine']}")
    return " · ".join(parts)


def _variant(labels: dict[str, str], drop: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted((k, v) for k, v in labels.items() if k not in _ENGINE_ID_LABELS and k != "model_name" and k not in drop)
    )


def _histogram(parts: dict[str, list[TimeSeries]], buckets: dict[float, list[TimeSeries]]) -> Histogram:
    bounds = tuple(sorted(buckets))
    return Histogram(
        bounds=bounds,
        buckets=tuple(_merge(buckets[b]) for b in bounds),
        sum=_merge(parts["sum"]) if parts.get("sum") else None,
        count=_merge(parts["count"]) if parts.get("count") else None,
    )


def assemble_inputs(
    raw: Sequence[RawSeries],
    *,
    mapping: MapFile | None = None,
    price_fn: PriceFn | None = None,
    single_scrape_s: float = 15.0,
    notes: Sequence[str] = (),
) -> BaselineInputs:
    """Group raw series into GPUs, engines, tenants and deployments (see the module docstring)."""
    notes_out = list(notes)
    gpus: dict[str, _GpuAcc] = defaultdict(_GpuAcc)
    engines: dict[tuple[tuple[str, str], ...], _EngineAcc] = {}
    tenants: dict[tuple[str, str | None], dict[str, list[TimeSeries]]] = defaultdict(lambda: defaultdict(list))
    hist_names = {n for names in ENGINE_HISTOGRAMS.values() for n in names}
    legacy_seen: dict[tuple[tuple[str, str], ...], set[str]] = defaultdict(set)

    # After Prometheus relabelling, a DCGM series with a workload has exported_pod (the workload) and pod (the
    # exporter itself); a series without a workload still carries the exporter's pod. Drop that one.
    exporter_pods = {r.labels["pod"] for r in raw if "exported_pod" in r.labels and "pod" in r.labels}

    # A counter absent from earlier scrapes of its source did not exist then: it started at 0 at the scrape
    # before its first sample (e.g. the gateway creates a tenant's counters on its first request).
    scrape_times: dict[str, np.ndarray] = {}
    by_source: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in raw:
        by_source[r.source].append(r.series.ts_s)
    for src, arrays in by_source.items():
        scrape_times[src] = np.unique(np.concatenate(arrays))
    counter_names = {n for names in ENGINE_COUNTERS.values() for n in names} | set(GATEWAY_COUNTERS)

    def born_at_zero(r: RawSeries) -> TimeSeries:
        times = scrape_times[r.source]
        earlier = times[times < r.series.first_s]
        if len(earlier) == 0:
            return r.series
        return TimeSeries(np.concatenate([[earlier[-1]], r.series.ts_s]), np.concatenate([[0.0], r.series.values]))

    # ``X_created`` (set by prometheus_client-based exporters such as vLLM) is when counter X last started:
    # a change between two scrapes is a restart even when the new value already exceeds the old one, so the
    # counter is given its value 0 at that creation time.
    created = {
        (r.source, r.name[: -len("_created")], tuple(sorted(r.labels.items()))): r.series
        for r in raw if r.name.endswith("_created")
    }

    def restarts_from_created(r: RawSeries) -> TimeSeries:
        base = next((r.name[: -len(sfx)] for sfx in ("_total", *_HIST_SUFFIXES) if r.name.endswith(sfx)), r.name)
        key_labels = tuple(sorted((k, v) for k, v in r.labels.items() if k != "le"))
        c = created.get((r.source, base, key_labels))
        s = r.series
        if c is None or c.num_samples < 2 or s.num_samples < 2:
            return s
        births = []
        for i in range(1, c.num_samples):
            born = float(c.values[i])
            if born != float(c.values[i - 1]):
                prev = s.ts_s[s.ts_s < c.ts_s[i]]
                if len(prev) and born > prev[-1] and born < c.ts_s[i]:
                    births.append(born)
                elif len(prev):
                    births.append((float(prev[-1]) + float(c.ts_s[i])) / 2.0)  # clock skew: mid-interval
        if not births:
            return s
        return TimeSeries.of(np.concatenate([s.ts_s, births]), np.concatenate([s.values, np.zeros(len(births))]))

    for r in raw:
        name = r.name
        if name in counter_names or (name.endswith(_HIST_SUFFIXES) and engine_kind(name) is not None):
            r = RawSeries(r.name, r.labels, r.source, restarts_from_created(RawSeries(
                r.name, r.labels, r.source, born_at_zero(r))))
        labels = normalise_labels(r.labels)
        is_gpu = name in GPU_GAUGES or name in GPU_COUNTERS
        if is_gpu and "exported_pod" not in r.labels and (
            r.labels.get("pod") in exporter_pods or "dcgm-exporter" in r.labels.get("pod", "")
        ):
            for k in ("pod", "namespace", "container"):
                labels.pop(k, None)
        if is_gpu:
            gid = _gpu_id(labels, r.source)
            acc = gpus[gid]
            for k in ("host", "gpu", "uuid", "device_name", "mig_profile", "pod", "namespace", "container"):
                if k in labels:
                    acc.labels[k] = labels[k]
            acc.sources.add(r.source)
            if name in GPU_GAUGES:
                acc.gauges[GPU_GAUGES[name]].append(r.series)
            else:
                acc.counters[GPU_COUNTERS[name]].append(r.series)
            continue
        if name in GATEWAY_COUNTERS:
            tenant = labels.get("tenant", "default")
            if GATEWAY_COUNTERS[name] == "tokens":
                canon = GATEWAY_TOKEN_KINDS.get(labels.get("kind", ""))
            else:
                canon = "requests" if labels.get("status", "200").startswith("2") else None
            if canon is not None:
                tenants[(tenant, labels.get("model_name"))][canon].append(r.series)
            continue
        kind = engine_kind(name)
        if kind is None:
            continue
        ekey = _engine_key(labels, r.source)
        eng = engines.get(ekey)
        if eng is None:
            eng = engines[ekey] = _EngineAcc(kind, {k: v for k, v in ekey}, r.source)
        if "model_name" in labels and "model_name" not in eng.labels:
            eng.labels["model_name"] = labels["model_name"]
        if name in LEGACY_NAMES:
            legacy_seen[ekey].add(name)
        if name == "vllm:cache_config_info":
            flag = r.labels.get("enable_prefix_caching")
            eng.prefix_caching = {"True": True, "False": False}.get(flag or "")
            continue
        base = next((name[: -len(s)] for s in _HIST_SUFFIXES if name.endswith(s) and name[: -len(s)] in hist_names), None)
        if base is not None:
            part = name[len(base) + 1 :]
            variant = _variant(labels, ("le",))
            if part == "bucket":
                try:
                    bound = float(labels.get("le", "nan"))
                except ValueError:
                    continue
                eng.hist[base][variant][f"le:{bound!r}"].append(r.series)
            else:
                eng.hist[base][variant][part].append(r.series)
            continue
        eng.raw[name][_variant(labels)].append(r.series)

    _fold_engine_less(engines)

    mig_share = _fold_mig_parents(gpus, notes_out)

    gpu_list = []
    for gid, acc in sorted(gpus.items()):
        lab = acc.labels
        gpu_list.append(
            GpuTelemetry(
                gpu_id=gid,
                host=lab.get("host"),
                index=lab.get("gpu"),
                uuid=lab.get("uuid"),
                device_name=lab.get("device_name"),
                mig_profile=lab.get("mig_profile"),
                pod=lab.get("pod"),
                namespace=lab.get("namespace"),
                container=lab.get("container"),
                gauges={k: _merge(v) for k, v in acc.gauges.items()},
                counters={k: _merge(v) for k, v in acc.counters.items()},
            )
        )

    engine_list = []
    for ekey, eng in engines.items():
        def pick(table: dict[str, tuple[str, ...]], e: _EngineAcc = eng) -> dict[str, list[TimeSeries]]:
            out: dict[str, list[TimeSeries]] = {}
            for canon, names in table.items():
                for n in names:
                    if n in e.raw:
                        out[canon] = [_merge(v) for v in e.raw[n].values()]
                        break
            return out

        hists: dict[str, list[Histogram]] = {}
        for canon, names in ENGINE_HISTOGRAMS.items():
            for n in names:
                if n in eng.hist:
                    built = []
                    for parts in eng.hist[n].values():
                        buckets = {float(k[3:]): v for k, v in parts.items() if k.startswith("le:")}
                        built.append(_histogram(parts, buckets))
                    hists[canon] = built
                    break
        lab = eng.labels
        engine_list.append(
            EngineTelemetry(
                engine_id=_engine_id(ekey, eng.labels.get("model_name")),
                kind=eng.kind,
                model_name=lab.get("model_name"),
                pod=lab.get("pod"),
                namespace=lab.get("namespace"),
                host=lab.get("host"),
                counters=pick(ENGINE_COUNTERS),
                gauges=pick(ENGINE_GAUGES),
                histograms=hists,
                prefix_caching_enabled=eng.prefix_caching,
                prompt_excludes_cached=eng.kind in PROMPT_EXCLUDES_CACHED,
                legacy_names=tuple(sorted(legacy_seen.get(ekey, ()))),
            )
        )
    engine_list.sort(key=lambda e: e.engine_id)
    for e in engine_list:
        if e.legacy_names:
            notes_out.append(f"engine {e.engine_id}: read removed/deprecated vLLM names {', '.join(e.legacy_names)}")

    deployments = _join(gpu_list, engine_list, engines, mapping, notes_out)
    prices: dict[str, Price | None] = {}
    for g in gpu_list:
        price = price_fn(g.device_name) if price_fn else None
        share = mig_share.get(g.gpu_id)
        if price is not None and share is not None:
            price = Price(price.usd_per_gpu_hour * share, f"{price.source} × {share:.3g} (MIG share)", price.as_of)
        prices[g.gpu_id] = price
    tenant_list = [
        TenantTelemetry(tenant=t, model_name=m, counters={k: list(v) for k, v in c.items()})
        for (t, m), c in sorted(tenants.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]
    return BaselineInputs(
        gpus=tuple(gpu_list),
        engines=tuple(engine_list),
        deployments=tuple(deployments),
        tenants=tuple(tenant_list),
        prices=prices,
        single_scrape_s=single_scrape_s,
        notes=tuple(notes_out),
    )


_MIG_SLICES_RE = re.compile(r"^(\d+)g\.")
_MIG_COMPUTE_SLICES = 7  # A100/H100/H200 MIG: 7 compute slices per GPU


def _fold_mig_parents(gpus: dict[str, _GpuAcc], notes: list[str]) -> dict[str, float]:
    """A GPU split into MIG instances is counted once: its instances are the units (GPU-hours, price share
    ``Ng`` of 7 compute slices, or an equal share when the profile does not say), and the parent's
    device-level series (power, energy) are shared among them equally. Returns instance id → price share."""
    shares: dict[str, float] = {}
    for parent in [gid for gid in gpus if "/mig" not in gid]:
        children = sorted(gid for gid in gpus if gid.startswith(parent + "/mig"))
        if not children:
            continue
        acc = gpus.pop(parent)
        n = len(children)
        for child in children:
            cacc = gpus[child]
            m = _MIG_SLICES_RE.match(cacc.labels.get("mig_profile", ""))
            shares[child] = int(m.group(1)) / _MIG_COMPUTE_SLICES if m else 1.0 / n
            for k, v in acc.labels.items():
                cacc.labels.setdefault(k, v)
            for kind, table in (("gauges", acc.gauges), ("counters", acc.counters)):
                target = getattr(cacc, kind)
                for name, series in table.items():
                    if name in ("power_w", "energy_mj") and name not in target:
                        target[name] = [TimeSeries(s.ts_s, s.values / n) for s in series]
        notes.append(f"GPU {parent} is split into {n} MIG instances: they are the units; its power/energy is "
                     "shared equally among them and its price by compute slices")
    return shares


def _fold_engine_less(engines: dict[tuple[tuple[str, str], ...], _EngineAcc]) -> None:
    """Series without vLLM's ``engine`` label (e.g. ``vllm:admission_rejections_total``) belong to the one
    engine of the same process: fold them in when exactly one engine-labelled key matches."""
    for key in [k for k in engines if "engine" not in dict(k)]:
        targets = [k for k in engines if "engine" in dict(k) and tuple(x for x in k if x[0] != "engine") == key]
        if len(targets) != 1:
            continue
        src, dst = engines.pop(key), engines[targets[0]]
        for name, variants in src.raw.items():
            for variant, series in variants.items():
                dst.raw[name][variant].extend(series)
        for name, hvariants in src.hist.items():
            for variant, parts in hvariants.items():
                for part, series in parts.items():
                    dst.hist[name][variant][part].extend(series)
        if dst.prefix_caching is None:
            dst.prefix_caching = src.prefix_caching
        if "model_name" in src.labels:
            dst.labels.setdefault("model_name", src.labels["model_name"])


def _join(
    gpus: list[GpuTelemetry],
    engines: list[EngineTelemetry],
    accs: dict[tuple[tuple[str, str], ...], _EngineAcc],
    mapping: MapFile | None,
    notes: list[str],
) -> list[Deployment]:
    source_of = {_engine_id(k, a.labels.get("model_name")): a.source for k, a in accs.items()}
    gpu_labels = {
        g.gpu_id: {k: v for k, v in {
            "host": g.host, "gpu": g.index, "uuid": g.uuid, "pod": g.pod, "namespace": g.namespace,
            "container": g.container, "device_name": g.device_name, "mig_profile": g.mig_profile,
        }.items() if v is not None}
        for g in gpus
    }
    taken_engines: set[str] = set()
    taken_gpus: set[str] = set()
    out: list[Deployment] = []
    for dm in mapping.deployments if mapping else []:
        engs = [
            e.engine_id for e in engines
            if e.engine_id not in taken_engines and any(
                selector_matches(sel, {k: v for k, v in (("model_name", e.model_name), ("pod", e.pod),
                                                          ("namespace", e.namespace), ("host", e.host)) if v},
                                 source_of.get(e.engine_id, ""))
                for sel in dm.engines)
        ]
        gs = [
            g.gpu_id for g in gpus
            if g.gpu_id not in taken_gpus and any(selector_matches(sel, gpu_labels[g.gpu_id], "") for sel in dm.gpus)
        ]
        if not gs:
            notes.append(f"mapping deployment {dm.name}: no GPU matched its selectors {dm.gpus}")
        if dm.engines and not engs:
            notes.append(f"mapping deployment {dm.name}: no engine matched its selectors {dm.engines}")
        taken_engines.update(engs)
        taken_gpus.update(gs)
        out.append(Deployment(dm.name, dm.model, tuple(engs), tuple(gs), "map file"))
    # pod-label join
    by_pod: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for g in gpus:
        if g.pod and g.gpu_id not in taken_gpus:
            by_pod[(g.pod, g.namespace)].append(g.gpu_id)
    groups: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    loose: list[EngineTelemetry] = []
    for e in engines:
        if e.engine_id in taken_engines:
            continue
        match = None
        if e.pod:
            for (pod, ns), _ids in by_pod.items():
                if pod == e.pod and (ns is None or e.namespace is None or ns == e.namespace):
                    match = (pod, ns)
                    break
        if match is None:
            loose.append(e)
        else:
            groups[match].append(e.engine_id)
    for (pod, ns), eng_ids in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        name = f"{ns}/{pod}" if ns else pod
        model = next((e.model_name for e in engines if e.engine_id in eng_ids and e.model_name), None)
        out.append(Deployment(name, model, tuple(eng_ids), tuple(by_pod[(pod, ns)]), "pod label"))
    for e in loose:
        notes.append(
            f"engine {e.engine_id} is not joined to any GPU (no pod label shared with DCGM and no --map entry): "
            "its tokens are reported, GPU-hours and $ are not"
        )
        out.append(Deployment(e.engine_id, e.model_name, (e.engine_id,), (), "not joined"))
    return out
