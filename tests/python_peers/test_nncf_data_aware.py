"""oxport's data-aware AWQ against NNCF's own, on the real SmolLM2-135M in Phi-3 layout (`cargo xtask smol`).

Calibrated on one text (`fixtures/calib_text.txt`, the Apache 2.0 license), evaluated on another
(`fixtures/eval_text.txt`, the GPL). oxport builds the calibration windows (`--dataset fixtures/calib_text.txt`,
optimum-intel's windowing) and writes them with `--calibration-samples-out`; NNCF 3.4 (`nncf.compress_weights`,
int4_asym, group 64, ratio 1.0, awq=True, the same windows as `nncf.Dataset`) compresses oxport's fp32 IR, which is
optimum's. Both int4 models are then scored by OpenVINO on the same evaluation windows (f32 inference), and
oxport's perplexity must be within 0.5% of NNCF's. Data-free AWQ is byte-identical to NNCF (the goldens and
`test_optimum_awq.py` check that); its perplexity is reported beside the others.

The figures go to `target/awq-ppl.json` (the README's table is copied from there).
"""

import json
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ["OXPORT_BIN"]
SMOL = Path(os.environ.get("OXPORT_SMOL", ROOT / ".cache/smol-phi3"))
CALIB = ROOT / "fixtures/calib_text.txt"
EVAL = ROOT / "fixtures/eval_text.txt"
WINDOW, WINDOWS = 512, 4
INT4 = ["--weight-format", "int4", "--group-size", "64", "--ratio", "1.0"]


def oxport(out, flags):
    cmd = [BIN, "export", "openvino", "--model", str(SMOL), "--disable-convert-tokenizer", *flags, str(out)]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, f"{cmd}:\n{res.stderr[-3000:]}"
    return time.perf_counter() - start


def eval_windows():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(SMOL))
    ids = tok(EVAL.read_text())["input_ids"]
    assert len(ids) >= WINDOW * WINDOWS
    return [ids[i * WINDOW:(i + 1) * WINDOW] for i in range(WINDOWS)]


def inputs(ids):
    n = len(ids)
    return {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, n), dtype=np.int64),
        "position_ids": np.arange(n, dtype=np.int64)[None],
        "beam_idx": np.zeros(1, dtype=np.int32),
    }


def perplexity(model_xml, windows):
    compiled = ov.Core().compile_model(str(model_xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    nll, count = 0.0, 0
    for ids in windows:
        request.reset_state()
        logits = request.infer(inputs(ids))["logits"][0].astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        nll -= sum(logp[t, ids[t + 1]] for t in range(len(ids) - 1))
        count += len(ids) - 1
    return math.exp(nll / count)


def nncf_awq(fp32_xml, samples, out_dir):
    import nncf

    model = ov.Core().read_model(str(fp32_xml))
    dataset = nncf.Dataset([inputs(s) for s in samples])
    start = time.perf_counter()
    compressed = nncf.compress_weights(
        model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=64, ratio=1.0, awq=True,
        dataset=dataset, subset_size=len(samples),
    )
    seconds = time.perf_counter() - start
    out_dir.mkdir()
    ov.save_model(compressed, str(out_dir / "openvino_model.xml"), compress_to_fp16=False)
    return seconds


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    assert (SMOL / "config.json").is_file(), f"{SMOL}: run `cargo xtask smol` (cargo xtask test does)"
    tmp = tmp_path_factory.mktemp("awq")
    times = {}
    times["fp32"] = oxport(tmp / "fp32", ["--weight-format", "fp32"])
    times["int4"] = oxport(tmp / "int4", INT4)
    times["awq_data_free"] = oxport(tmp / "awq_data_free", [*INT4, "--awq"])
    samples_file = tmp / "samples.json"
    times["awq_data_aware"] = oxport(tmp / "awq_data_aware", [
        *INT4, "--awq", "--dataset", str(CALIB), "--num-samples", "128",
        "--calibration-samples-out", str(samples_file),
    ])
    samples = json.loads(samples_file.read_text())["samples"]
    assert len(samples) == 128 and all(len(s) == 32 for s in samples)
    times["nncf_awq_data_aware"] = nncf_awq(tmp / "fp32/openvino_model.xml", samples, tmp / "nncf_awq_data_aware")
    windows = eval_windows()
    ppl = {name: perplexity(tmp / name / "openvino_model.xml", windows) for name in times}
    report = {"perplexity": ppl, "seconds": times, "eval_tokens": WINDOW * WINDOWS, "calibration_windows": 128}
    (ROOT / "target").mkdir(exist_ok=True)
    (ROOT / "target/awq-ppl.json").write_text(json.dumps(report, indent=2))
    return report


def test_data_aware_awq_perplexity_is_within_half_a_percent_of_nncf(results):
    ppl = results["perplexity"]
    ours, theirs = ppl["awq_data_aware"], ppl["nncf_awq_data_aware"]
    assert abs(ours - theirs) / theirs < 0.005, ppl


def test_int4_perplexities_are_sane(results):
    ppl = results["perplexity"]
    # A broken quantizer or a wrong scale placement shows as a perplexity far from fp32's.
    for name in ["int4", "awq_data_free", "awq_data_aware", "nncf_awq_data_aware"]:
        assert ppl["fp32"] < ppl[name] < 1.5 * ppl["fp32"], ppl
