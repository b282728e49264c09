"""One-off: the MatMulNBits initializers ONNX Runtime's own quantizer writes for a checkpoint, as sha256.

The builder's reference graphs in fixtures/reference/ort/ carry no external data, so the weight bytes are
re-derived here with the exact call the builder makes: onnxruntime.quantization.matmul_nbits_quantizer
`DefaultWeightOnlyQuantizer.qbits_block_quant` -> pybind `quantize_matmul_{4,8}bits` on the fp32 `[K, N]`
(= HF weight rows transposed, builders/base.py `make_matmul_float`) weight.

Run from the repo root with the test venv (onnxruntime 1.32.0):
    .venv/bin/python tests/golden/make_ort_nbits_phi3.py \
        fixtures/reference/checkpoints/phi3-tiny-random > tests/golden/ort_nbits_phi3-tiny-random.json
"""

import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits


def load_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        buf = data[a:b]
        if meta["dtype"] == "BF16":
            u16 = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        elif meta["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype="<f4")
        elif meta["dtype"] == "F16":
            arr = np.frombuffer(buf, dtype="<f2").astype(np.float32)
        else:
            raise ValueError(meta["dtype"])
        out[name] = arr.reshape(meta["shape"])
    return out


def nbits(weight_kn, bits, block_size, symmetric):
    rows, cols = weight_kn.shape  # K, N
    kpack = 8 // bits
    k_blocks = (rows + block_size - 1) // block_size
    blob = (block_size + kpack - 1) // kpack
    pad = k_blocks * block_size - rows
    if pad:
        weight_kn = np.pad(weight_kn, ((0, pad), (0, 0)), "constant")
    weight_kn = np.ascontiguousarray(weight_kn, dtype=np.float32)
    packed = np.zeros((cols, k_blocks, blob), dtype="uint8")
    zp = np.zeros((cols, (k_blocks + kpack - 1) // kpack), dtype="uint8")
    scales = np.zeros((cols, k_blocks), dtype=np.float32)
    fn = quantize_matmul_8bits if bits == 8 else quantize_matmul_4bits
    fn(packed, weight_kn, scales, zp, block_size, cols, rows, symmetric)
    return packed, scales, zp


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main(ckpt_dir):
    cfg = json.loads((Path(ckpt_dir) / "config.json").read_text())
    tensors = {}
    for f in sorted(Path(ckpt_dir).glob("*.safetensors")):
        tensors.update(load_safetensors(f))
    inter = cfg["intermediate_size"]
    linears = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        gu = tensors[f"{p}.mlp.gate_up_proj.weight"]
        linears += [
            (f"{p}.attn.qkv_proj.MatMul.weight", tensors[f"{p}.self_attn.qkv_proj.weight"]),
            (f"{p}.attn.o_proj.MatMul.weight", tensors[f"{p}.self_attn.o_proj.weight"]),
            (f"{p}.mlp.gate_proj.MatMul.weight", gu[:inter]),
            (f"{p}.mlp.up_proj.MatMul.weight", gu[inter:]),
            (f"{p}.mlp.down_proj.MatMul.weight", tensors[f"{p}.mlp.down_proj.weight"]),
        ]
    lm = tensors.get("lm_head.weight", tensors["model.embed_tokens.weight"])
    linears.append(("lm_head.MatMul.weight", lm))

    variants = {}
    for label, bits, block, sym in [
        ("int4_b128_sym", 4, 128, True),
        ("int4_b32_sym", 4, 32, True),
        ("int4_b128_asym", 4, 128, False),
        ("int8_b128_sym", 8, 128, True),
    ]:
        entries = {}
        for name, w in linears:
            packed, scales, zp = nbits(np.ascontiguousarray(w.T), bits, block, sym)
            entries[f"{name}_Q{bits}"] = {"dims": list(packed.shape), "sha256": sha(packed)}
            entries[f"{name}_scales"] = {"dims": list(scales.shape), "sha256": sha(scales)}
            if not sym:
                entries[f"{name}_zero_points"] = {"dims": list(zp.shape), "sha256": sha(zp)}
        variants[label] = entries
    # Float [K, N] weights of the fp32 graph (the builder's `matmul.weight.T`).
    variants["fp32"] = {
        name: {"dims": list(w.T.shape), "sha256": sha(np.ascontiguousarray(w.T, dtype=np.float32))}
        for name, w in linears
    }
    json.dump({"onnxruntime": onnxruntime.__version__, "checkpoint": Path(ckpt_dir).name, "variants": variants},
              sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
