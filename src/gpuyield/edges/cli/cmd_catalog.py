"""``gpuyield catalog``: the accelerators, models and prices every other command uses.

``catalog gpus|models|prices`` list them, ``catalog show ID`` details one GPU, model, or price provider. All
take ``--catalog FILE`` (repeatable; also ``GPUYIELD_CATALOG``) to layer your own YAML over the built-in data,
and ``--json [FILE]``. A model can also be a local ``config.json`` (or a directory holding one).
"""

from __future__ import annotations

from typing import Any

import typer

from gpuyield.core.catalog.model import LAYER_KINDS
from gpuyield.edges.cli.common import (
    CATALOG_OPTION_HELP,
    JSON_OPTION_HELP,
    console,
    emit_json,
    load_catalog,
    run_command,
)

__all__ = ["catalog_app", "gpu_record", "model_record", "register"]

catalog_app = typer.Typer(
    help=(
        "Accelerators, model architectures and prices (with source and as_of), built in and overridable.\n\n"
        "Examples:\n\n"
        "  gpuyield catalog gpus\n\n"
        "  gpuyield catalog models --json\n\n"
        "  gpuyield catalog prices --gpu h100\n\n"
        "  gpuyield catalog show 'NVIDIA H100 80GB HBM3'\n\n"
        "  gpuyield catalog show meta-llama/Llama-3.1-70B-Instruct --json\n\n"
        "  gpuyield catalog show ./my-model/config.json\n\n"
        "  gpuyield catalog gpus --catalog my-gpus.yaml"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

_CATALOG_OPTION = typer.Option(None, "--catalog", help=CATALOG_OPTION_HELP, metavar="FILE")
_JSON_OPTION = typer.Option(None, "--json", help=JSON_OPTION_HELP)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _no_wrap(col: str, justify: str) -> bool:
    """Numbers and dates never wrap or get cut; names may wrap."""
    return justify == "right" or col == "as_of"


def _table(title: str) -> Any:
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def _billions(n: int) -> str:
    return f"{n / 1e9:,.2f} B" if n >= 1e9 else f"{n / 1e6:,.1f} M"


# ---------------------------------------------------------------------------------------------- records
def gpu_record(gpu: Any) -> dict[str, Any]:
    """The JSON object for one accelerator (every stored field, plus ``memory_capacity_bytes``)."""
    out: dict[str, Any] = gpu.model_dump(mode="json")
    out["memory_capacity_bytes"] = gpu.memory_capacity_bytes
    return out


def model_record(spec: Any, *, full: bool = False) -> dict[str, Any]:
    """The JSON object for one model: identity, computed sizes, and (``full``) every stored field."""
    out: dict[str, Any] = {
        "id": spec.id,
        "aliases": list(spec.aliases),
        "name": spec.name,
        "architecture": spec.architecture,
        "params_total": spec.params_total,
        "params_active": spec.params_active,
        "kv_bytes_per_token_bf16": spec.kv_bytes_per_token("bf16"),
        "kv_bytes_per_token_fp8": spec.kv_bytes_per_token("fp8"),
        "kv_bytes_fixed_per_sequence_bf16": spec.kv_bytes_fixed_per_sequence("bf16"),
        "layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_kv_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        # null unless the full-attention layers are shaped apart from the others (Gemma 4)
        "full_attention_kv_heads": spec.full_attention_kv_heads,
        "full_attention_head_dim": spec.full_attention_head_dim,
        "full_attention_k_eq_v": spec.full_attention_k_eq_v,
        "is_moe": spec.is_moe,
        "uses_mla": spec.uses_mla,
        "num_experts": spec.num_experts,
        "num_experts_per_tok": spec.num_experts_per_tok,
        "max_position_embeddings": spec.max_position_embeddings,
        "native_dtype": spec.native_dtype,
        "weight_bytes_bf16": spec.weight_bytes("bf16"),
        "weight_bytes_native": spec.weight_bytes(),
        "weight_bytes_nvfp4": spec.weight_bytes("nvfp4"),
        "nvfp4_kept": dict(spec.nvfp4_kept),
        "source": spec.source,
        "as_of": spec.as_of.isoformat(),
    }
    if full:
        out["spec"] = spec.model_dump(mode="json")
        out["param_breakdown"] = spec.param_breakdown()
        out["layer_kinds"] = {kind: spec.num_layers_of(kind) for kind in LAYER_KINDS}
        out["mlp_free_layers"] = len(set(spec.mlp_free_layers))
        out["gemm_shapes"] = [
            {
                "name": g.name,
                "n": g.n,
                "k": g.k,
                "num_layers": g.num_layers,
                "group": g.group,
                "num_experts": g.num_experts,
                "experts_per_token": g.experts_per_token,
            }
            for g in spec.gemm_shapes
        ]
    return out


# ---------------------------------------------------------------------------------------------- commands
def _gpus(catalog_files: list[str] | None, json_out: str | None) -> None:

    cat = load_catalog(catalog_files)
    gpus = cat.gpus
    if json_out is not None:
        emit_json([gpu_record(g) for g in gpus], json_out)
        return
    table = _table(f"Accelerators ({len(gpus)})")
    for col, justify in [
        ("id", "left"),
        ("GB", "right"),
        ("TB/s", "right"),
        ("bf16", "right"),
        ("fp8", "right"),
        ("fp4", "right"),
        ("link", "right"),
        ("TDP", "right"),
        ("as_of", "left"),
    ]:
        table.add_column(col, justify=justify, no_wrap=_no_wrap(col, justify), overflow="fold")  # type: ignore[arg-type]
    for g in gpus:
        table.add_row(
            g.id,
            _fmt(g.memory_gb),
            _fmt(g.memory_bandwidth_tb_s, 2),
            _fmt(g.bf16_dense_tflops, 1),
            _fmt(g.fp8_dense_tflops),
            _fmt(g.fp4_dense_tflops),
            _fmt(g.interconnect_gb_s),
            _fmt(g.tdp_w),
            g.as_of.isoformat(),
        )
    console.print(table)
    console.print(
        "[dim]Dense (non-sparse) peak rates. 'gpuyield catalog show ID' for sources and notes.[/dim]"
    )


def _models(catalog_files: list[str] | None, json_out: str | None) -> None:

    cat = load_catalog(catalog_files)
    models = cat.models
    if json_out is not None:
        emit_json([model_record(m) for m in models], json_out)
        return
    table = _table(f"Models ({len(models)})")
    for col, justify in [
        ("id", "left"),
        ("params", "right"),
        ("active", "right"),
        ("L", "right"),
        ("attention", "left"),
        ("KV B/tok", "right"),
        ("experts", "right"),
    ]:
        table.add_column(col, justify=justify, no_wrap=_no_wrap(col, justify), overflow="fold")  # type: ignore[arg-type]
    for m in models:
        attn = "MLA" if m.uses_mla else f"GQA {m.num_attention_heads}/{m.num_kv_heads}"
        if m.full_attention_shaped_apart:  # Gemma 4: the full layers' own KV heads
            attn += f" (full /{m.attention_shape('full_attention')[1]})"
        kinds = [k for k in ("sliding_attention", "linear_attention") if m.num_layers_of(k)]
        if m.uses_compressed_attention:
            kinds.append("compressed_attention")
        if kinds:
            attn += " + " + ", ".join(
                "mamba2" if k == "linear_attention" and m.linear_attention_type == "mamba2" else k.split("_")[0]
                for k in kinds
            )
        table.add_row(
            m.id,
            _billions(m.params_total),
            _billions(m.params_active),
            str(m.num_layers),
            attn,
            f"{m.kv_bytes_per_token('bf16'):,.0f}",
            f"{m.num_experts_per_tok}/{m.num_experts}" if m.is_moe else "—",
        )
    console.print(table)
    console.print(
        "[dim]Params, active params and KV bytes are computed from the architecture. KV B/token counts layers "
        "whose cache grows with context; sliding/linear layers are bounded per sequence.[/dim]"
    )


def _price_rows(cat: Any, gpu: str | None, model: str | None, provider: str | None) -> dict[str, Any]:
    gpu_id = cat.gpu(gpu).id if gpu else None
    model_id = cat.model(model).id if model else None
    prov = provider.lower() if provider else None
    gpu_prices = [
        p
        for p in cat.gpu_prices
        if (gpu_id is None or p.gpu == gpu_id)
        and (prov is None or p.provider.lower() == prov)
        and model_id is None
    ]
    api_prices = [
        p
        for p in cat.api_price_entries
        if (model_id is None or p.model == model_id)
        and (prov is None or p.provider.lower() == prov)
        and gpu_id is None
    ]
    gpu_prices.sort(key=lambda p: (p.gpu, p.usd_per_gpu_hour))
    api_prices.sort(key=lambda p: (p.model, p.usd_per_1m_output_tokens))
    defaults: dict[str, Any] = {}
    for gid in sorted({p.gpu for p in gpu_prices}):
        if prov is None:
            d = cat.gpu_price(gid)
            defaults[gid] = d.model_dump(mode="json")
    return {
        "gpu_prices": [p.model_dump(mode="json") for p in gpu_prices],
        "default_gpu_prices": defaults,
        "api_prices": [p.model_dump(mode="json") for p in api_prices],
        "electricity": [p.model_dump(mode="json") for p in cat.electricity_prices],
        "pue": [p.model_dump(mode="json") for p in cat.pue_entries],
        "owned_hardware": [p.model_dump(mode="json") for p in cat.owned_hardware],
        "defaults": {
            "electricity_region": cat.defaults.electricity_region,
            "electricity_sector": cat.defaults.electricity_sector,
            "pue_facility": cat.defaults.pue_facility,
            "gpu_price_tier": cat.defaults.gpu_price_tier,
            "gpu_price_provider_kind": cat.defaults.gpu_price_provider_kind,
            "gpu_price_rule": "lower median of the default tier among the default provider kind",
        },
    }


def _print_prices(data: dict[str, Any], *, energy: bool = True) -> None:

    if data["gpu_prices"]:
        t = _table("GPU-hour prices")
        for col, justify in [
            ("gpu", "left"),
            ("provider", "left"),
            ("tier", "left"),
            ("$/GPU-h", "right"),
            ("as_of", "left"),
            ("default", "center"),
        ]:
            t.add_column(col, justify=justify, no_wrap=_no_wrap(col, justify), overflow="fold")  # type: ignore[arg-type]
        for p in data["gpu_prices"]:
            d = data["default_gpu_prices"].get(p["gpu"])
            is_default = d is not None and d["provider"] == p["provider"] and d["tier"] == p["tier"]
            t.add_row(
                p["gpu"],
                p["provider"],
                p["tier"],
                f"{p['usd_per_gpu_hour']:.2f}",
                p["as_of"],
                "✓" if is_default else "",
            )
        console.print(t)
    if data["api_prices"]:
        t = _table("Hosted-API prices ($ per 1M tokens)")
        for col, justify in [
            ("model", "left"),
            ("provider", "left"),
            ("input", "right"),
            ("output", "right"),
            ("cached in", "right"),
            ("as_of", "left"),
        ]:
            t.add_column(col, justify=justify, no_wrap=_no_wrap(col, justify), overflow="fold")  # type: ignore[arg-type]
        for p in data["api_prices"]:
            cached = p.get("usd_per_1m_cached_input_tokens")
            prov = p["provider"] + (f" ({p['variant']})" if p.get("variant") else "")
            t.add_row(
                p["model"],
                prov,
                f"{p['usd_per_1m_input_tokens']:.2f}",
                f"{p['usd_per_1m_output_tokens']:.2f}",
                "—" if cached is None else f"{cached:.3f}",
                p["as_of"],
            )
        console.print(t)
    if energy:
        t = _table("Energy and ownership")
        for col in ("item", "value", "as_of"):
            t.add_column(col)
        for e in data["electricity"]:
            t.add_row(
                f"electricity {e['region']} ({e['sector']})", f"${e['usd_per_kwh']:.4f}/kWh", e["as_of"]
            )
        for p in data["pue"]:
            t.add_row(f"PUE {p['facility']}", f"{p['pue']:.2f}", p["as_of"])
        for o in data["owned_hardware"]:
            t.add_row(
                f"owned {o['gpu']}",
                f"${o['capex_usd_per_gpu']:,.0f} capex / {o['amortisation_years']:g} y + ${o['ops_usd_per_gpu_year']:,.0f}/y ops",
                o["as_of"],
            )
        console.print(t)
    console.print(
        "[dim]Prices go stale: check as_of. Default GPU price = lower median of on-demand specialised-cloud "
        "entries. 'gpuyield catalog show PROVIDER' lists sources.[/dim]"
    )


def _prices(
    catalog_files: list[str] | None,
    gpu: str | None,
    model: str | None,
    provider: str | None,
    json_out: str | None,
) -> None:
    cat = load_catalog(catalog_files)
    data = _price_rows(cat, gpu, model, provider)
    if json_out is not None:
        emit_json(data, json_out)
        return
    _print_prices(data, energy=gpu is None and model is None and provider is None)


def _show(ident: str, catalog_files: list[str] | None, json_out: str | None) -> None:
    from gpuyield.edges.io.models import looks_like_path, resolve_model
    from gpuyield.errors import CatalogError

    cat = load_catalog(catalog_files)
    if looks_like_path(ident):
        _show_model(cat, resolve_model(cat, ident), json_out)
        return
    gpu = cat.find_gpu(ident)
    if gpu is not None:
        _show_gpu(cat, gpu, json_out)
        return
    spec = cat.find_model(ident)
    if spec is not None:
        _show_model(cat, spec, json_out)
        return
    providers = {p.provider.lower() for p in cat.gpu_prices} | {
        p.provider.lower() for p in cat.api_price_entries
    }
    if ident.strip().lower() in providers:
        data = _price_rows(cat, None, None, ident.strip())
        if json_out is not None:
            emit_json({"kind": "provider", "provider": ident.strip().lower(), **data}, json_out)
        else:
            _print_prices(data, energy=False)
            for p in data["gpu_prices"] + data["api_prices"]:
                what = p.get("gpu") or p.get("model")
                console.print(f"[dim]{what}: {p['source']} (as_of {p['as_of']})[/dim]", soft_wrap=True)
        return
    hint = cat.suggest(ident)
    raise CatalogError(f"unknown GPU or model '{ident}'" + (f"; did you mean '{hint}'?" if hint else ""))


def _show_gpu(cat: Any, gpu: Any, json_out: str | None) -> None:
    prices = cat.gpu_prices_for(gpu.id)
    try:
        default = cat.gpu_price(gpu.id).model_dump(mode="json") if prices else None
    except Exception:
        default = None
    owned = next((o for o in cat.owned_hardware if o.gpu == gpu.id), None)
    if json_out is not None:
        emit_json(
            {
                "kind": "gpu",
                **gpu_record(gpu),
                "origin": cat.origin(gpu.id),
                "prices": [p.model_dump(mode="json") for p in prices],
                "default_price": default,
                "owned_hardware": owned.model_dump(mode="json") if owned else None,
            },
            json_out,
        )
        return
    from rich.table import Table

    t = Table(title=f"{gpu.name}  [dim]({gpu.id})[/dim]", show_header=False, title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    rows = [
        ("aliases", ", ".join(gpu.aliases)),
        ("vendor / form factor", f"{gpu.vendor} / {gpu.form_factor}"),
        ("memory", f"{_fmt(gpu.memory_gb)} GB {gpu.memory_type or ''} ({gpu.memory_capacity_bytes:,} bytes)"),
        ("memory bandwidth", f"{gpu.memory_bandwidth_tb_s} TB/s"),
        (
            "dense TFLOPs bf16 / fp8 / fp4",
            f"{_fmt(gpu.bf16_dense_tflops, 1)} / {_fmt(gpu.fp8_dense_tflops, 1)} / {_fmt(gpu.fp4_dense_tflops, 1)}",
        ),
        ("int8 dense TOPs", _fmt(gpu.int8_dense_tops, 1)),
        ("intra-node", f"{gpu.interconnect_kind}, {_fmt(gpu.interconnect_gb_s)} GB/s per GPU per direction"),
        ("inter-node", f"{_fmt(gpu.inter_node_gb_s)} GB/s per GPU per direction"),
        ("GPUs per node", str(gpu.gpus_per_node)),
        ("TDP", f"{_fmt(gpu.tdp_w)} W"),
        ("source", gpu.source),
        ("as_of", gpu.as_of.isoformat()),
        ("notes", gpu.notes or "—"),
        ("from", cat.origin(gpu.id)),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if prices:
        _print_prices(_price_rows(cat, gpu.id, None, None), energy=False)
    else:
        console.print("[dim]No GPU-hour prices catalogued for this accelerator.[/dim]")


def _nvfp4_release_text(release: tuple[tuple[str, str], ...]) -> str:
    """What a model's NVFP4 release holds at another dtype than the rule: body matrices kept wider, an LM head
    quantised (``ModelSpec.nvfp4_kept``)."""
    kept = [f"{k} {v}" for k, v in release if k != "lm_head"]
    head = dict(release).get("lm_head")
    parts = ([f"kept wider: {', '.join(kept)}"] if kept else []) + ([f"LM head {head}"] if head else [])
    return f" ({'; '.join(parts)})" if parts else ""


def _show_model(cat: Any, spec: Any, json_out: str | None) -> None:
    api = [p.model_dump(mode="json") for p in cat.api_prices(spec.id)] if cat.find_model(spec.id) else []
    if json_out is not None:
        emit_json(
            {
                "kind": "model",
                **model_record(spec, full=True),
                "api_prices": api,
                "origin": cat.origin(spec.id) if cat.find_model(spec.id) is spec else spec.source,
            },
            json_out,
        )
        return
    from rich.table import Table

    t = Table(
        title=f"{spec.name or spec.id}  [dim]({spec.id})[/dim]", show_header=False, title_justify="left"
    )
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    attn = (
        f"MLA: kv_lora_rank {spec.kv_lora_rank}, rope {spec.qk_rope_head_dim}, q_lora_rank {spec.q_lora_rank}"
        if spec.uses_mla
        else f"GQA {spec.num_attention_heads} heads / {spec.num_kv_heads} KV heads x {spec.head_dim}"
    )
    if spec.kv_shared:
        attn += " (K = V, cached once)"
    if spec.q_lora_rank and not spec.uses_mla:
        attn += f"; q_lora_rank {spec.q_lora_rank}"
    if spec.o_groups:
        attn += f"; output {spec.o_groups} groups x rank {spec.o_lora_rank}"
    if spec.uses_compressed_attention:
        attn += (
            f"; compressed: CSA 1 entry / {spec.csa_compress_ratio} tokens, top-{spec.index_topk} "
            f"(indexer {spec.index_num_heads} x {spec.index_head_dim}), HCA 1 / {spec.hca_compress_ratio}"
        )
    if spec.full_attention_shaped_apart:
        hd_full, kv_full = spec.attention_shape("full_attention")
        attn += f"; full-attention layers {kv_full} KV heads x {hd_full}" + (
            " (K = V projection)" if spec.full_attention_k_eq_v else ""
        )
    kinds = ", ".join(
        f"{spec.num_layers_of(k)} {k}"
        + (" (mamba2)" if k == "linear_attention" and spec.linear_attention_type == "mamba2" else "")
        for k in LAYER_KINDS
        if k != "none" and spec.num_layers_of(k)
    )
    if spec.num_layers_of("none"):  # Nemotron-H: blocks with an MLP or experts only
        kinds += f", {spec.num_layers_of('none')} MLP/MoE only"
    if spec.mlp_free_layers:
        kinds += f", {len(set(spec.mlp_free_layers))} without an MLP"
    rows = [
        ("aliases", ", ".join(spec.aliases) or "—"),
        ("architecture", spec.architecture),
        ("params total / active", f"{_billions(spec.params_total)} / {_billions(spec.params_active)}"),
        (
            "layers",
            f"{spec.num_layers} ({kinds})"
            + (f", window {spec.sliding_window}" if spec.sliding_window else ""),
        ),
        (
            "hidden / intermediate / vocab",
            f"{spec.hidden_size} / {spec.intermediate_size} / {spec.vocab_size}",
        ),
        ("attention", attn),
    ]
    if spec.is_moe:
        rows.append(
            (
                "MoE",
                f"{spec.num_experts} experts, top-{spec.num_experts_per_tok}, width {spec.moe_intermediate_size}, "
                f"{spec.num_shared_experts} shared, {spec.num_moe_layers} MoE layers"
                + (f", latent {spec.moe_latent_size}" if spec.moe_latent_size else "")
                + ("" if spec.mlp_gated else ", non-gated"),
            )
        )
    rows += [
        (
            "KV bytes/token bf16 / fp8",
            f"{spec.kv_bytes_per_token('bf16'):,.0f} / {spec.kv_bytes_per_token('fp8'):,.0f}",
        ),
        ("bounded KV per sequence (bf16)", f"{spec.kv_bytes_fixed_per_sequence('bf16'):,.0f} bytes"),
        (
            "weights bf16 / native",
            f"{spec.weight_bytes('bf16') / 1e9:,.1f} GB / {spec.weight_bytes() / 1e9:,.1f} GB ({spec.native_dtype})",
        ),
        (
            "weights nvfp4",
            f"{spec.weight_bytes('nvfp4') / 1e9:,.1f} GB"
            + _nvfp4_release_text(spec.nvfp4_kept),
        ),
        ("max context", f"{spec.max_position_embeddings:,}"),
        ("source", spec.source),
        ("as_of", spec.as_of.isoformat()),
        ("notes", spec.notes or "—"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if api:
        _print_prices(_price_rows(cat, None, spec.id, None), energy=False)


# ---------------------------------------------------------------------------------------------- wiring
@catalog_app.callback()
def _catalog_group(ctx: typer.Context, catalog: list[str] | None = _CATALOG_OPTION) -> None:
    """Accelerators, model architectures and prices (with source and as_of), built in and overridable."""
    ctx.obj = {"catalog_files": list(catalog or [])}


def _files(ctx: typer.Context, sub: list[str] | None) -> list[str]:
    """``gpuyield catalog --catalog A sub --catalog B``: A then B (both after GPUYIELD_CATALOG)."""
    group = (ctx.obj or {}).get("catalog_files", []) if isinstance(ctx.obj, dict) else []
    return [*group, *(sub or [])]


@catalog_app.command("gpus")
def gpus_cmd(
    ctx: typer.Context,
    catalog: list[str] | None = _CATALOG_OPTION,
    json_out: str | None = _JSON_OPTION,
) -> None:
    """List accelerators: memory, bandwidth, dense TFLOPs per dtype, interconnect, TDP.

    Examples:

      gpuyield catalog gpus

      gpuyield catalog gpus --json gpus.json
    """
    run_command(lambda: _gpus(_files(ctx, catalog), json_out))


@catalog_app.command("models")
def models_cmd(
    ctx: typer.Context,
    catalog: list[str] | None = _CATALOG_OPTION,
    json_out: str | None = _JSON_OPTION,
) -> None:
    """List models with computed parameter counts and KV-cache bytes per token.

    Examples:

      gpuyield catalog models

      gpuyield catalog models --json | jq '.[] | {id, params_total}'
    """
    run_command(lambda: _models(_files(ctx, catalog), json_out))


@catalog_app.command("prices")
def prices_cmd(
    ctx: typer.Context,
    gpu: str | None = typer.Option(
        None, "--gpu", help="Only GPU-hour prices for this accelerator (id or alias)."
    ),
    model: str | None = typer.Option(None, "--model", help="Only hosted-API prices for this model."),
    provider: str | None = typer.Option(None, "--provider", help="Only this provider's prices."),
    catalog: list[str] | None = _CATALOG_OPTION,
    json_out: str | None = _JSON_OPTION,
) -> None:
    """List GPU-hour, hosted-API, electricity, PUE and owned-hardware prices, each with its as_of date.

    Examples:

      gpuyield catalog prices

      gpuyield catalog prices --gpu h100

      gpuyield catalog prices --model llama-3.1-70b --json
    """
    run_command(lambda: _prices(_files(ctx, catalog), gpu, model, provider, json_out))


@catalog_app.command("show")
def show_cmd(
    ctx: typer.Context,
    ident: str = typer.Argument(
        ..., metavar="ID", help="GPU id/alias, model id/alias, config.json path, or provider."
    ),
    catalog: list[str] | None = _CATALOG_OPTION,
    json_out: str | None = _JSON_OPTION,
) -> None:
    """Everything about one GPU, model (or local config.json) or price provider.

    Examples:

      gpuyield catalog show h100_sxm

      gpuyield catalog show "NVIDIA H100 80GB HBM3"

      gpuyield catalog show deepseek-ai/DeepSeek-V3 --json

      gpuyield catalog show ~/models/my-llama/config.json

      gpuyield catalog show lambda
    """
    run_command(lambda: _show(ident, _files(ctx, catalog), json_out))


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")
