"""Goldens for NNCF 3.4's Scale Estimation and GPTQ as pure per-layer functions (oxport-quant `scale_estimation.rs`,
`gptq.rs`).

Calls NNCF's own routines on small random float32 inputs, no model and no graph:
- `activation_stats.process_stats` + `ScaleEstimation.calculate_quantization_params` (what `ScaleEstimation.apply`
  runs per weight) for int4 asym/sym, group 32 and 64, W 16x128, 12 samples of 3..20 tokens;
- `GPTQ._calculate_hessian` + `GPTQ._quantize_weights` (what `GPTQ.apply` runs per MatMul), with and without scale
  estimation, blocks of 128 (one block) and 32 (errors fed across blocks), followed by `do_integer_quantization` with the returned scales and zero points (what
  `transform_model` does to the GPTQ-updated f32 weight), for the same modes and groups.

Inputs are rounded to float16-representable values so the fixture can store them as f16 bytes; the math is float32.
Weights are 16x128 (< 10000 elements), so NNCF takes its numpy reference path, not the OpenVINO-accelerated one
(both compute the same float32 quantize/dequantize).

Run from the repository root with the peers' Python (nncf 3.4, numpy 2.x):

    .venv-peers/bin/python tests/golden/make_se_gptq_golden.py

It rewrites tests/golden/se_gptq.json.gz (gzip mtime 0, sorted keys: deterministic).
"""

import gzip
import json
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np

from nncf.common.tensor_statistics.statistics import WCTensorStatistic
from nncf.parameters import CompressWeightsMode
from nncf.quantization.algorithms.weight_compression.activation_stats import process_stats
from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
from nncf.quantization.algorithms.weight_compression.gptq import GPTQ
from nncf.quantization.algorithms.weight_compression.scale_estimation import ScaleEstimation
from nncf.quantization.algorithms.weight_compression.weight_lowering import do_integer_quantization
from nncf.tensor import Tensor

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "oxport-quant" / "tests" / "data" / "se_gptq.json.gz"
MODES = {"int4_asym": CompressWeightsMode.INT4_ASYM, "int4_sym": CompressWeightsMode.INT4_SYM}
N_OUT, K = 16, 128


def hexs(a: np.ndarray) -> str:
    return np.ascontiguousarray(a).tobytes().hex()


def f16ish(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float32)


def inputs(seed: int):
    rng = np.random.default_rng(seed)
    w = f16ish(rng.standard_normal((N_OUT, K)) * 0.05)
    w[3, 40:48] = 0.0  # a zero run: zero codes (importance 0) in one group
    scales = f16ish(np.exp(rng.standard_normal(K) * 0.7))  # channels of different magnitude, as in LLMs
    tokens = [int(t) for t in rng.integers(3, 21, size=12)]
    acts = [f16ish(rng.standard_normal((1, t, K)) * scales + 0.1) for t in tokens]
    acts[0][..., 7] = 0.0  # a dead input channel: GPTQ's Hessian diagonal 0 -> 1, weight column zeroed
    return w, acts


def se_case(w, acts, mode, group, subset, scale_steps):
    means = [Tensor(a.mean(axis=(0, 1))) for a in acts]
    stats = WCTensorStatistic(mean_values=means, shape_values=[a.shape for a in acts])
    s, x = process_stats(stats, subset)
    cfg = WeightCompressionConfig(mode=MODES[mode], group_size=group)
    scale, zp = ScaleEstimation.calculate_quantization_params(
        stats, Tensor(w.copy()), (1,), cfg, -1, subset, 5, scale_steps, -1.0
    )
    return {
        "kind": "se", "mode": mode, "group": group, "subset": subset, "initial_steps": 5,
        "scale_steps": scale_steps, "weight_penalty": -1.0,
        "s": hexs(s.data), "x_cols": int(x.shape[-1]),
        # X itself only where process_stats subsamples (elsewhere it is the stacked means, transposed)
        "x": hexs(x.data) if x.shape[-1] < len(acts) else None,
        "scale": hexs(scale.data.astype(np.float32)),
        "zero_point": None if zp is None else hexs(zp.data.astype(np.uint8)),
    }


def gptq_case(w, acts, mode, group, se, block=128):
    gptq = GPTQ(damp_percent=0.1, block_size=block, subset_size=128, scale_estimation=se)
    matmul = object()
    gptq._backend_entity = NS(convolution_metatypes=[], matmul_metatypes=[matmul])
    node = NS(metatype=matmul, layer_attributes=NS(input_attributes={"transpose": False},
                                                    constant_attributes={1: {"transpose": True}}))
    ins = [Tensor(a) for a in acts]
    hessian = gptq._calculate_hessian(node, ins)[0]
    cfg = WeightCompressionConfig(mode=MODES[mode], group_size=group)
    wc = NS(node_with_weight=node, weight_port_id=1, compression_config=cfg, reduction_axes=(1,))
    dq, scale, zp = gptq._quantize_weights(wc, hessian, Tensor(w.copy()), ins)
    cw = do_integer_quantization(dq, cfg, (1,), scale, zp)
    return {
        "kind": "gptq", "mode": mode, "group": group, "scale_estimation": se, "block": block,
        "codes": hexs(cw.tensor.data),
        "scale": hexs(scale.data.astype(np.float32)),
        "zero_point": None if zp is None else hexs(zp.data.astype(np.uint8)),
    }


def main():
    from importlib.metadata import version

    w, acts = inputs(20260501)
    cases = []
    for mode in MODES:
        for group in (32, 64):
            cases.append(se_case(w, acts, mode, group, 64, 5))
        cases.append(se_case(w, acts, mode, 32, 5, 10))  # process_stats subsampling: 12 samples, step 2
        for group in (32, 64):
            for se in (False, True):
                cases.append(gptq_case(w, acts, mode, group, se))
        # Blocks of 32: errors reach later blocks, whose group parameters then see the updated weights
        # (and with group 64 a group spans two blocks).
        cases.append(gptq_case(w, acts, mode, 32, False, block=32))
        cases.append(gptq_case(w, acts, mode, 64, True, block=32))
    doc = {
        "generator": f"nncf {version('nncf')}, numpy {np.__version__}",
        "n": N_OUT, "k": K, "weight_f16": hexs(w.astype(np.float16)),
        "inputs_f16": [hexs(a[0].astype(np.float16)) for a in acts], "tokens": [a.shape[1] for a in acts],
        # NNCF's statistic: the per-sample mean over batch and tokens (float32 numpy, tokens added in order)
        "means": hexs(np.stack([a.mean(axis=(0, 1)) for a in acts])),
        "cases": cases,
    }
    text = json.dumps(doc, indent=0, sort_keys=True) + "\n"
    with open(OUT, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.encode())
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
