"""Telemetry in: Prometheus text exposition (files, endpoints), Prometheus' HTTP API, DCGM / vLLM / SGLang /
llama.cpp / gpuyield-gateway metric families, joining engines to GPUs, and the ``watch`` scraper."""

from gpuyield.edges.telemetry.assemble import RawSeries, assemble_inputs, group_samples
from gpuyield.edges.telemetry.exposition import ParseStats, SampleBuffer, SeriesKey
from gpuyield.edges.telemetry.mapping import MapFile, PricesFile, load_map_file, load_prices_file
from gpuyield.edges.telemetry.sources import (
    SourceStats,
    fetch_text,
    parse_duration_s,
    query_prometheus,
    read_metrics,
)

__all__ = [
    "MapFile",
    "ParseStats",
    "PricesFile",
    "RawSeries",
    "SampleBuffer",
    "SeriesKey",
    "SourceStats",
    "assemble_inputs",
    "fetch_text",
    "group_samples",
    "load_map_file",
    "load_prices_file",
    "parse_duration_s",
    "query_prometheus",
    "read_metrics",
]
