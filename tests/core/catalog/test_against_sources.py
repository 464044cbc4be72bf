"""Cross-check the packaged numbers against the raw sources they were transcribed from.

The sources live next to the checkout (``../shared/data``); the tests skip when it is absent.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from gpuyield.core.catalog import default_catalog

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
HW_CSV = SHARED / "hardware" / "hw_specs.csv"
AIC_SYSTEMS = SHARED / "calibration" / "aiconfigurator"

CSV_IDS = {
    "H100 SXM 80GB": "h100_sxm",
    "H100 PCIe 80GB": "h100_pcie",
    "H200 SXM 141GB": "h200_sxm",
    "A100 SXM 80GB": "a100_sxm",
    "A100 SXM 40GB": "a100_sxm_40gb",
    "A100 PCIe 80GB": "a100_pcie",
    "L40S 48GB": "l40s",
    "L4 24GB": "l4",
    "A10G 24GB (AWS G5)": "a10g",
    "MI300X 192GB": "mi300x",
    "B200 SXM 180GB (DGX B200)": "b200_sxm",
    "Gaudi 3 (HL-325L OAM)": "gaudi3",
    "TPU v5e": "tpu_v5e",
    "B300 SXM (HGX B300)": "b300_sxm",
    "GB200 (NVL72)": "gb200",
    "A30 24GB": "a30",
    "A40 48GB": "a40",
}


def _num(text: str) -> float | None:
    m = re.match(r"\s*([0-9.]+)", text or "")
    return float(m.group(1)) if m else None


@pytest.mark.skipif(not HW_CSV.exists(), reason="shared/data/hardware/hw_specs.csv not present")
def test_every_hw_specs_row_matches():
    cat = default_catalog()
    rows = list(csv.DictReader(HW_CSV.open()))
    assert {r["accelerator"] for r in rows} == set(CSV_IDS)
    for r in rows:
        g = cat.gpu(CSV_IDS[r["accelerator"]])
        assert g.memory_gb == pytest.approx(_num(r["mem_capacity_gb"])), g.id
        assert g.memory_bandwidth_tb_s * 1000 == pytest.approx(_num(r["mem_bandwidth_gb_s"]), rel=0.01), g.id
        for col, value in (("bf16_dense_tflops", g.bf16_dense_tflops), ("fp8_dense_tflops", g.fp8_dense_tflops),
                           ("fp4_dense_tflops", g.fp4_dense_tflops), ("int8_dense_tops", g.int8_dense_tops)):
            want = _num(r[col])
            if want is None:
                assert value is None, (g.id, col)
            else:
                assert value == pytest.approx(want, rel=0.01), (g.id, col)
        tdp = _num(r["tdp_w"])
        assert (g.tdp_w is None) == (tdp is None) and (tdp is None or g.tdp_w == pytest.approx(tdp)), g.id


@pytest.mark.skipif(not AIC_SYSTEMS.exists(), reason="shared/data/calibration/aiconfigurator not present")
@pytest.mark.parametrize(
    "system",
    ["a100_sxm", "a100_pcie", "a30", "b200_sxm", "b300_sxm", "gb200", "gb300", "h100_pcie", "h100_sxm", "h200_sxm",
     "l4", "l40s", "rtx_pro_6000_server", "b60"],
)
def test_aiconfigurator_system_matches(system):
    data = yaml.safe_load((AIC_SYSTEMS / f"{system}.yaml").read_text())
    gpu, node = data["gpu"], data["node"]
    g = default_catalog().gpu(system)
    assert g.id == system  # AIConfigurator system names are our ids
    assert g.memory_bytes == gpu["mem_capacity"]
    assert g.memory_bandwidth_tb_s * 1e12 == pytest.approx(gpu["mem_bw"], rel=1e-3)
    assert g.bf16_dense_tflops * 1e12 == pytest.approx(gpu["bfloat16_tc_flops"], rel=1e-3)
    if "fp4_tc_flops" in gpu:
        assert g.fp4_dense_tflops * 1e12 == pytest.approx(gpu["fp4_tc_flops"], rel=1e-3)
    assert g.tdp_w == gpu["power"]
    assert g.gpus_per_node == node["num_gpus_per_node"]
    assert g.interconnect_gb_s * 1e9 == pytest.approx(node["intra_node_bw"], rel=0.02)
