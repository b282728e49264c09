"""Golden bytes for oxport-quant, produced by the reference implementations themselves.

* ONNX Runtime's own MatMulNBits quantizer (`onnxruntime.quantization.matmul_nbits_quantizer`,
  `DefaultWeightOnlyQuantizer.qbits_block_quant` -> MlasQuantizeBlockwise), 4/8 bit, sym/asym, block 16..256,
  f32 and f16 scales (f16 scales = f16 weight, as in the builder's cuda path).
* NNCF 3.4 `nncf.compress_weights` on a one-MatMul OpenVINO model (what optimum-cli runs), int4/int8 sym/asym,
  group-wise and per-channel; the stored constants (weight, f16 scale, zero point) are read back from the model.
  Matrices under 10000 elements go through NNCF's numpy reference path, larger ones through its OpenVINO
  "optimized functions" path, so both are pinned.

Matrices cover ties at .5, all-zero blocks, +-0, subnormals, values beyond the f16 range, K not divisible by the
block, and random data.

Run on demand (not in CI), from the repo root:

    python3 -m venv target/venv-golden
    target/venv-golden/bin/pip install onnxruntime==1.32.0 nncf==3.4.0 openvino==2026.4.1 numpy onnx onnx_ir
    target/venv-golden/bin/python tests/golden/make_golden.py

It rewrites tests/golden/ort_nbits.json.gz and tests/golden/nncf.json.gz (deterministic: gzip mtime 0).
"""

import gzip
import json
import os
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent


def hexs(a: np.ndarray) -> str:
    return np.ascontiguousarray(a).tobytes().hex()


def matrices() -> dict[str, np.ndarray]:
    """name -> float32 [N, K]."""
    m = {}
    # Ties: a block whose extreme is -8 (or 8) gets scale +-1 (int4 sym) so v*r + 8 lands on .5 exactly.
    ties = np.array([[-8.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 6.5, -6.5, 7.0, 4.5, -4.5, 5.5, -5.5, 0.0] * 2,
                     [8.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 6.5, -6.5, -7.0, 4.5, -4.5, 5.5, -5.5, 0.0] * 2,
                     [-128.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 6.5, -6.5, 7.0, 4.5, -4.5, 5.5, -5.5, 127.5] * 2,
                     [15.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5, 12.5, 13.5, 14.5] * 2,
                     [-15.0, 0.0, -0.5, -1.5, -2.5, -3.5, -4.5, -5.5, -6.5, -7.5, -8.5, -9.5, -10.5, -11.5, -12.5, -14.5] * 2,
                     [255.0, 0.5, 1.5, 2.5, 127.5, 128.5, 254.5, 100.5, 7.5, 8.5, 9.5, 10.5, 11.5, 12.5, 13.5, -0.5] * 2],
                    dtype=np.float32)
    m["ties"] = ties
    zeros = np.zeros((4, 64), np.float32)
    zeros[1, :] = -0.0
    zeros[2, ::2] = -0.0
    zeros[3, 1::2] = -0.0
    zeros[3, 32:] = np.linspace(-1, 1, 32, dtype=np.float32)  # one zero block, one normal block
    m["zeros"] = zeros
    sub = np.array([[1e-40, -1e-40, 1e-45, -3e-39, 0.0, 2e-38, -1e-41, 5e-39] * 4,
                    [1e-40, -2e-40, 0.0, -0.0, 1e-45, 1e-45, -1e-45, 7e-39] * 4,
                    [1e-7, -1e-7, 3e-8, -6e-8, 1e-10, 1e-9, 0.0, 1.19e-7] * 4],
                    dtype=np.float32)
    m["subnormal"] = sub
    big = np.array([[1e5, -7e4, 65504.0, -65520.0, 3.0, -2.0, 0.5, 1e-3] * 4,
                    [3e7, -2e7, 1e6, 65519.0, -1.0, 0.0, 1.0, 2.0] * 4,
                    [-1e6, 5e5, 1.0, -1.0, 0.25, 0.0, -0.0, 7e5] * 4],
                   dtype=np.float32)
    m["beyond_f16"] = big
    rng = np.random.default_rng(20261125)
    m["random_k40"] = (rng.standard_normal((5, 40)) * 0.05).astype(np.float32)
    m["random_k100"] = (rng.standard_normal((3, 100)) * 0.02).astype(np.float32)
    m["random_k45"] = (rng.standard_normal((3, 45)) * 0.05).astype(np.float32)  # odd K
    m["random_k320"] = (rng.standard_normal((6, 320)) * 0.02).astype(np.float32)
    # bf16-representable, like checkpoint weights; > 10000 elements (NNCF optimized path).
    w = (rng.standard_normal((48, 256)) * 0.02).astype(np.float32)
    m["random_bf16_48x256"] = (w.view(np.uint32) & 0xFFFF0000).view(np.float32)
    return m


# ------------------------------------------------------------------------------------------------ ORT


def ort_case(w: np.ndarray, bits: int, block: int, sym: bool, f16: bool) -> dict:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=sym, bits=bits)
    q = DefaultWeightOnlyQuantizer(cfg)
    kn = np.ascontiguousarray(w.T)  # ONNX MatMul B is [K, N]; the PyTorch weight is [N, K]
    if f16:
        kn = kn.astype(np.float16)
    packed, scales, zp = q.qbits_block_quant(kn)
    return {
        "packed": hexs(packed),
        "scales": hexs(scales),
        "zero_points": None if sym else hexs(zp),
    }


def make_ort(ms: dict[str, np.ndarray]) -> list[dict]:
    cases = []
    for name, w in ms.items():
        blocks = [16, 32, 64, 128, 256] if name.startswith("random") else [16, 32]
        for bits in (4, 8):
            for sym in (True, False):
                for block in blocks:
                    for f16 in (False, True):
                        if f16 and name == "beyond_f16":
                            continue  # an f16 weight would already be inf; oxport refuses it
                        c = ort_case(w, bits, block, sym, f16)
                        c.update(matrix=name, bits=bits, block_size=block, symmetric=sym,
                                 scale_dtype="f16" if f16 else "f32")
                        cases.append(c)
    return cases


# ----------------------------------------------------------------------------------------------- NNCF


def nncf_case(w: np.ndarray, mode: str, group: int | None) -> dict:
    import nncf
    import openvino as ov
    from openvino import opset13 as ops

    n, k = w.shape
    x = ops.parameter([1, k], ov.Type.f32, name="x")
    const = ops.constant(w, ov.Type.f32, name="weight")
    mm = ops.matmul(x, const, transpose_a=False, transpose_b=True, name="mm")
    model = ov.Model([mm], [x], "golden")
    modes = {
        "int4_sym": nncf.CompressWeightsMode.INT4_SYM,
        "int4_asym": nncf.CompressWeightsMode.INT4_ASYM,
        "int8_sym": nncf.CompressWeightsMode.INT8_SYM,
        "int8_asym": nncf.CompressWeightsMode.INT8_ASYM,
    }
    kwargs = dict(mode=modes[mode])
    if mode.startswith("int4"):
        kwargs.update(ratio=1.0, group_size=group if group else -1, all_layers=True)
    out = nncf.compress_weights(model, **kwargs)
    consts = {op.get_friendly_name(): op for op in out.get_ops() if op.get_type_name() == "Constant"}
    wname = next(nm for nm in consts if nm.endswith("weight") or nm == "weight")
    wc = consts[wname]
    sc = consts[wname + "/scale"]
    zp = consts.get(wname + "/zero_point")
    return {
        "weight_element": wc.get_element_type().to_string(),
        "weight_shape": list(wc.get_shape()),
        "weight": hexs(wc.get_data()),
        "scale_element": sc.get_element_type().to_string(),
        "scale_shape": list(sc.get_shape()),
        "scale": hexs(sc.get_data()),
        "zero_point_element": zp.get_element_type().to_string() if zp is not None else None,
        "zero_point_shape": list(zp.get_shape()) if zp is not None else None,
        "zero_point": hexs(zp.get_data()) if zp is not None else None,
    }


def make_nncf(ms: dict[str, np.ndarray]) -> list[dict]:
    cases = []
    for name, w in ms.items():
        k = w.shape[1]
        for mode in ("int4_sym", "int4_asym", "int8_sym", "int8_asym"):
            groups = [None] if mode.startswith("int8") else [None] + [g for g in (16, 32, 64, 128) if k % g == 0]
            for g in groups:
                c = nncf_case(w, mode, g)
                c.update(matrix=name, mode=mode, group_size=g)
                cases.append(c)
    return cases


def write(path: Path, obj) -> None:
    data = json.dumps(obj, indent=0, sort_keys=True).encode()
    with open(path, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
            gz.write(data)


def main() -> None:
    import nncf
    import onnxruntime

    ms = matrices()
    inputs = {name: {"n": w.shape[0], "k": w.shape[1], "f32_le": hexs(w)} for name, w in ms.items()}
    write(OUT / "ort_nbits.json.gz", {"generator": f"onnxruntime {onnxruntime.__version__}", "matrices": inputs,
                                       "cases": make_ort(ms)})
    write(OUT / "nncf.json.gz", {"generator": f"nncf {nncf.__version__}", "matrices": inputs,
                                 "cases": make_nncf(ms)})
    print("wrote", OUT / "ort_nbits.json.gz", OUT / "nncf.json.gz")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
