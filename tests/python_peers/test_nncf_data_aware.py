"""oxport's data-aware AWQ against NNCF's own, on the real SmolLM2-135M in Phi-3 layout (`cargo xtask smol`).

Calibrated on one text (`fixtures/calib_text.txt`, the Apache 2.0 license), evaluated on another
(`fixtures/eval_text.txt`, the GPL), on an f32 copy of the checkpoint (see `f32_copy`). oxport builds the calibration windows (`--dataset fixtures/calib_text.txt`,
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
# NNCF's data-aware criteria besides the default max_activation_variance (`nncf.SensitivityMetric` values).
OTHER_METRICS = ["hessian_input_activation", "mean_activation_variance", "mean_activation_magnitude"]
INT4 = ["--weight-format", "int4", "--group-size", "64", "--ratio", "1.0"]
MODEL = SMOL


def f32_copy(src, dst):
    """The checkpoint with every tensor in f32. The comparison gives oxport and NNCF the same f32 weights: NNCF's
    mixed-precision score adds the weight dtype's machine epsilon (`1 / (error + eps)`), and AWQ casts the rescaled
    weight back to that dtype, so on the bf16 checkpoint oxport follows optimum-cli (bf16 in the IR) while NNCF run
    on an fp32 IR would not."""
    import shutil

    from safetensors.numpy import load_file, save_file

    dst.mkdir()
    for f in src.iterdir():
        if f.suffix == ".safetensors":
            import torch
            from safetensors.torch import load_file as load_torch

            save_file({k: v.to(torch.float32).numpy() for k, v in load_torch(str(f)).items()}, str(dst / f.name),
                      metadata={"format": "pt"})
        else:
            shutil.copy(f, dst / f.name)
    return dst


def oxport(out, flags):
    cmd = [BIN, "export", "openvino", "--model", str(MODEL), "--disable-convert-tokenizer", *flags, str(out)]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, f"{cmd}:\n{res.stderr[-3000:]}"
    return time.perf_counter() - start


def eval_windows():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(MODEL))
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


def nncf_compress(fp32_xml, samples, out_dir, **kwargs):
    import nncf

    model = ov.Core().read_model(str(fp32_xml))
    if samples is not None:
        kwargs.update(dataset=nncf.Dataset([inputs(s) for s in samples]), subset_size=len(samples))
    start = time.perf_counter()
    compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=64, **kwargs)
    seconds = time.perf_counter() - start
    out_dir.mkdir()
    ov.save_model(compressed, str(out_dir / "openvino_model.xml"), compress_to_fp16=False)
    return seconds


def four_bit_weights(model_xml):
    """Names of the weight constants stored as u4/i4."""
    model = ov.Core().read_model(str(model_xml))
    return sorted(op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Constant"
                  and op.get_element_type().get_type_name() in ("u4", "i4"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    assert (SMOL / "config.json").is_file(), f"{SMOL}: run `cargo xtask smol` (cargo xtask test does)"
    tmp = tmp_path_factory.mktemp("awq")
    global MODEL
    MODEL = f32_copy(SMOL, tmp / "smol-f32")
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
    data = ["--dataset", str(CALIB), "--num-samples", "128"]
    times["mixed_r0.8"] = oxport(tmp / "mixed_r0.8", ["--weight-format", "int4", "--group-size", "64", "--ratio",
                                                      "0.8", *data])
    for metric in OTHER_METRICS:
        times[f"mixed_r0.8_{metric}"] = oxport(tmp / f"mixed_r0.8_{metric}", [
            "--weight-format", "int4", "--group-size", "64", "--ratio", "0.8", "--sensitivity-metric", metric, *data])
    times["se"] = oxport(tmp / "se", [*INT4, "--scale-estimation", *data])
    times["awq_se"] = oxport(tmp / "awq_se", [*INT4, "--awq", "--scale-estimation", *data])
    fp32 = tmp / "fp32/openvino_model.xml"
    import nncf

    times["nncf_int4"] = nncf_compress(fp32, None, tmp / "nncf_int4", ratio=1.0)
    times["nncf_awq_data_free"] = nncf_compress(fp32, None, tmp / "nncf_awq_data_free", ratio=1.0, awq=True)
    times["nncf_awq_data_aware"] = nncf_compress(fp32, samples, tmp / "nncf_awq_data_aware", ratio=1.0, awq=True)
    # NNCF's default criterion with a dataset: max_activation_variance.
    times["nncf_mixed_r0.8"] = nncf_compress(fp32, samples, tmp / "nncf_mixed_r0.8", ratio=0.8)
    for metric in OTHER_METRICS:
        times[f"nncf_mixed_r0.8_{metric}"] = nncf_compress(
            fp32, samples, tmp / f"nncf_mixed_r0.8_{metric}", ratio=0.8,
            sensitivity_metric=nncf.SensitivityMetric(metric))
    times["nncf_se"] = nncf_compress(fp32, samples, tmp / "nncf_se", ratio=1.0, scale_estimation=True)
    times["nncf_awq_se"] = nncf_compress(fp32, samples, tmp / "nncf_awq_se", ratio=1.0, awq=True,
                                         scale_estimation=True)
    windows = eval_windows()
    ppl = {name: perplexity(tmp / name / "openvino_model.xml", windows) for name in times}
    mixed = ["mixed_r0.8", *(f"mixed_r0.8_{m}" for m in OTHER_METRICS)]
    int4 = {name: four_bit_weights(tmp / name / "openvino_model.xml") for m in mixed for name in (m, f"nncf_{m}")}
    report = {"perplexity": ppl, "seconds": times, "eval_tokens": WINDOW * WINDOWS, "calibration_windows": 128,
              "int4_weights": int4}
    (ROOT / "target").mkdir(exist_ok=True)
    (ROOT / "target/awq-ppl.json").write_text(json.dumps(report, indent=2))
    return report


@pytest.mark.parametrize("case", ["int4", "awq_data_free"])
def test_data_free_perplexity_equals_nncfs(results, case):
    """Data-free int4 and data-free AWQ are NNCF's bytes, so the perplexities are the same number."""
    ppl = results["perplexity"]
    assert ppl[case] == ppl[f"nncf_{case}"], ppl


def test_data_aware_awq_perplexity_is_within_half_a_percent_of_nncf(results):
    ppl = results["perplexity"]
    ours, theirs = ppl["awq_data_aware"], ppl["nncf_awq_data_aware"]
    assert abs(ours - theirs) / theirs < 0.005, ppl


def test_data_aware_mixed_precision_picks_nncfs_layers_and_perplexity(results):
    """max_activation_variance at ratio 0.8: the same weights in 4 bits as NNCF, perplexity within 0.5%."""
    int4 = results["int4_weights"]
    assert int4["mixed_r0.8"] == int4["nncf_mixed_r0.8"]
    ppl = results["perplexity"]
    assert abs(ppl["mixed_r0.8"] - ppl["nncf_mixed_r0.8"]) / ppl["nncf_mixed_r0.8"] < 0.005, ppl


@pytest.mark.parametrize("metric", OTHER_METRICS)
def test_other_data_aware_metrics_pick_nncfs_layers_and_perplexity(results, metric):
    """Each other data-aware --sensitivity-metric at ratio 0.8: NNCF's 4-bit weights, perplexity within 0.5%."""
    case = f"mixed_r0.8_{metric}"
    int4 = results["int4_weights"]
    assert int4[case] == int4[f"nncf_{case}"], sorted(set(int4[case]) ^ set(int4[f"nncf_{case}"]))
    ppl = results["perplexity"]
    assert abs(ppl[case] - ppl[f"nncf_{case}"]) / ppl[f"nncf_{case}"] < 0.005, ppl


@pytest.mark.parametrize("case", ["se", "awq_se"])
def test_scale_estimation_perplexity_is_within_half_a_percent_of_nncf(results, case):
    ppl = results["perplexity"]
    assert abs(ppl[case] - ppl[f"nncf_{case}"]) / ppl[f"nncf_{case}"] < 0.005, ppl


def test_int4_perplexities_are_sane(results):
    ppl = results["perplexity"]
    # A broken quantizer or a wrong scale placement shows as a perplexity far from fp32's.
    for name in results["perplexity"]:
        if name == "fp32":
            continue
        assert ppl["fp32"] < ppl[name] < 1.5 * ppl["fp32"], ppl
