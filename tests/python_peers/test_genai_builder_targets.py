"""`oxport export onnx -e dml|webgpu` (and tied embeddings on every EP) against what the installed onnxruntime-genai
builder writes for the same checkpoint, node by node.

Runs in the peers' venv (`.venv-peers`: onnxruntime-genai 0.18.0 with torch and transformers), which
`cargo xtask test` creates once. For each case the builder (`python -m onnxruntime_genai.models.builder`) and oxport
export the same checkpoint; then:

* every node is equal: order, op, domain, name, inputs, outputs and attributes (Constant tensors by value, the If
  branches' constants by shape and type);
* the graph inputs and outputs are equal (names, element types, dims);
* the initializers are equal by name, dims and type, and by value: the quantized weights and scales byte for byte,
  float weights exactly, the cos/sin caches within 1 ulp of fp16 (2e-3 absolute on values in [-1.2, 1.2]);
* `genai_config.json` is equal.

The one deliberate difference is the default-domain opset: the builder writes 22, oxport 21 (every op used has the
same definition in both; `crates/oxport-onnx/src/export.rs` `OPSET`).

Checkpoints: the reference checkpoints, and `fixtures/tiny-phi4` (Phi-4-mini layout: LongRoPE, partial rotary 0.75,
GQA, tied embeddings). The other tiny fixtures are not usable here: their `gate_up_proj` has `vocab_size` rows, and the
builder takes every Linear with `out_features == vocab_size` for the LM head (`builders/base.py::has_lm_head`), so its
graph for them wires lm_head to layer 0.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ["OXPORT_BIN"]
REF = ROOT / "fixtures" / "reference" / "checkpoints"
MODELS = {
    "phi3-tiny-random": REF / "phi3-tiny-random",
    "phi3-tiny-gqa": REF / "phi3-tiny-gqa",
    "phi3-tiny-k320": REF / "phi3-tiny-k320",
    "tiny-phi4": ROOT / "fixtures" / "tiny-phi4",
}
CASES = [(m, ep, p) for m in MODELS for ep in ["dml", "webgpu"] for p in ["int4", "fp16"]]
# Tied embeddings on the EPs with fused rotary: GatherBlockQuantized (int4) or Transpose + Gather (fp16).
# (cpu fp16 is left out: the builder writes no GroupQueryAttention for cpu+fp16, oxport does.)
CASES += [("tiny-phi4", "cpu", "int4"), ("tiny-phi4", "cuda", "int4"), ("tiny-phi4", "cuda", "fp16"),
          ("phi3-tiny-random", "cuda", "int4")]


def builder(model, ep, precision, out, cache):
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(MODELS[model]), "-o", str(out),
           "-c", str(cache), "-p", precision, "-e", ep]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, f"{cmd}:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return out


def oxport(model, ep, precision, out):
    cmd = [BIN, "export", "onnx", "--model", str(MODELS[model]), "-p", precision, "-e", ep, str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd}:\n{res.stdout}\n{res.stderr}"
    return out


def attr_value(a):
    v = helper.get_attribute_value(a)
    if isinstance(v, onnx.TensorProto):
        arr = numpy_helper.to_array(v)
        return ("tensor", tuple(v.dims), v.data_type, arr.tolist() if arr.dtype.kind in "iub" else None)
    if isinstance(v, onnx.GraphProto):
        return ("graph", v.name, [node_signature(n) for n in v.node],
                [(o.name, o.type.tensor_type.elem_type) for o in v.output])
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list):
        return [round(x, 6) if isinstance(x, float) else x for x in v]
    return v


def node_signature(n):
    return (n.op_type, n.domain, n.name, list(n.input), list(n.output),
            sorted((a.name, attr_value(a)) for a in n.attribute))


def value_infos(values):
    return [(v.name, v.type.tensor_type.elem_type, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
            for v in values]


def initializers(model_dir):
    m = onnx.load(str(model_dir / "model.onnx"), load_external_data=True)
    return m, {t.name: (tuple(t.dims), t.data_type, numpy_helper.to_array(t)) for t in m.graph.initializer}


@pytest.mark.parametrize("model,ep,precision", CASES)
def test_graph_and_genai_config_equal_the_installed_builder(tmp_path, model, ep, precision):
    theirs_dir = builder(model, ep, precision, tmp_path / "builder", tmp_path / "cache")
    ours_dir = oxport(model, ep, precision, tmp_path / "oxport")
    theirs, their_inits = initializers(theirs_dir)
    ours, our_inits = initializers(ours_dir)

    a, b = [node_signature(n) for n in ours.graph.node], [node_signature(n) for n in theirs.graph.node]
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"node {i}:\n ours   {x}\n theirs {y}"
    assert len(a) == len(b), f"{len(a)} nodes, the builder has {len(b)}"
    assert value_infos(ours.graph.input) == value_infos(theirs.graph.input)
    assert value_infos(ours.graph.output) == value_infos(theirs.graph.output)
    assert ours.ir_version == theirs.ir_version == 10
    assert {o.domain: o.version for o in ours.opset_import} == {"": 21, "com.microsoft": 1}

    assert sorted(our_inits) == sorted(their_inits), "initializer names"
    for name, (dims, dtype, values) in their_inits.items():
        o_dims, o_dtype, o_values = our_inits[name]
        assert (o_dims, o_dtype) == (dims, dtype), f"{name}: dims/type"
        if name in ("cos_cache", "sin_cache"):
            np.testing.assert_allclose(o_values.astype(np.float32), values.astype(np.float32), atol=2e-3,
                                       err_msg=name)
        else:
            assert np.array_equal(o_values, values), f"{name}: values differ from the builder's"

    ours_cfg = json.loads((ours_dir / "genai_config.json").read_text())
    theirs_cfg = json.loads((theirs_dir / "genai_config.json").read_text())
    assert ours_cfg == theirs_cfg


def test_dml_int4_graph_shape_is_the_directml_one(tmp_path):
    """What makes the dml graph the DirectML one, spelled out (the parity test above checks the rest)."""
    out = oxport("tiny-phi4", "dml", "int4", tmp_path / "out")
    m = onnx.load(str(out / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in m.graph.node]
    assert "If" not in ops and ops.count("RotaryEmbedding") == 2 * 2
    assert [i.name for i in m.graph.input][:3] == ["input_ids", "attention_mask", "position_ids"]
    gqa = next(n for n in m.graph.node if n.op_type == "GroupQueryAttention")
    assert {a.name: a.i for a in gqa.attribute if a.type == onnx.AttributeProto.INT}["do_rotary"] == 0
    nbits = [n for n in m.graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all("accuracy_level" not in {a.name for a in n.attribute} for n in nbits)
    assert any(n.name.endswith("attn/q_proj/MatMul_Q4") for n in nbits)
    cos = next(t for t in m.graph.initializer if t.name == "cos_cache")
    cfg = json.loads((MODELS["tiny-phi4"] / "config.json").read_text())
    assert list(cos.dims) == [cfg["original_max_position_embeddings"] + cfg["max_position_embeddings"], 24]
    genai = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
    assert genai["session_options"]["provider_options"] == [{"dml": {"enable_graph_capture": "1"}}]
    assert "sliding_window" not in genai
