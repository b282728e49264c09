"""Write two tiny decoders with the LLM interfaces oxport-runner speaks, for the backend tests.

usage: make_toy.py OUT_DIR

* OUT_DIR/toy_genai.onnx: onnxruntime-genai decoder layout (input_ids, attention_mask, past_key_values.{i}.key/value
  -> logits, present.{i}.key/value), 2 layers, 1 KV head, head size 2, vocab 16.
* OUT_DIR/toy_stateful.xml/.bin: the same plus position_ids and beam_idx, made stateful the way optimum-intel does
  (past_key_values.* -> present.* become ReadValue/Assign state).

The logits are closed-form so the Rust tests can check every number:
  logits[t, v] = id_t * v + sum(all ids in the cache, past and new) + 100 * len(attention_mask) (+ 10000 * position_t)
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, LAYERS = 16, 2


def build(stateful_inputs: bool) -> onnx.ModelProto:
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"]),
    ]
    if stateful_inputs:
        inputs.append(helper.make_tensor_value_info("position_ids", i64, ["batch", "seq"]))
        inputs.append(helper.make_tensor_value_info("beam_idx", TensorProto.INT32, ["batch"]))
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "seq", VOCAB])]
    emb = np.stack([np.arange(VOCAB, dtype=np.float32), np.ones(VOCAB, np.float32)], axis=1)
    w = np.stack([np.arange(VOCAB, dtype=np.float32), np.zeros(VOCAB, np.float32)], axis=0)
    inits = [
        numpy_helper.from_array(emb, "emb"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([100.0], np.float32), "hundred"),
        numpy_helper.from_array(np.array([10000.0], np.float32), "tenk"),
        numpy_helper.from_array(np.array([2.0], np.float32), "two"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["x"], axis=0),
        helper.make_node("Unsqueeze", ["x", "axis1"], ["k_new"]),
        helper.make_node("Mul", ["k_new", "two"], ["v_new"]),
    ]
    for i in range(LAYERS):
        for kind, new in (("key", "k_new"), ("value", "v_new")):
            past = f"past_key_values.{i}.{kind}"
            inputs.append(helper.make_tensor_value_info(past, f32, ["batch", 1, "past", 2]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", f32, ["batch", 1, "total", 2]))
            src = past
            if stateful_inputs:
                nodes.append(helper.make_node("Gather", [past, "beam_idx"], [past + ".beam"], axis=0))
                src = past + ".beam"
            nodes.append(helper.make_node("Concat", [src, new], [f"present.{i}.{kind}"], axis=2))
    nodes += [
        helper.make_node("MatMul", ["x", "w"], ["base"]),
        # sum of the cached ids: present.0.key[..., 0] summed over positions -> [batch, 1, 1]
        helper.make_node("Slice", ["present.0.key", "zero", "one", "axis3"], ["k0"]),
        helper.make_node("ReduceSum", ["k0", "axes23"], ["ksum"], keepdims=0),
        helper.make_node("Unsqueeze", ["ksum", "axis1"], ["ksum3"]),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"], start=1),
        helper.make_node("Cast", ["mask_shape"], ["mask_len"], to=f32),
        helper.make_node("Mul", ["mask_len", "hundred"], ["mask_term"]),
        helper.make_node("Add", ["base", "ksum3"], ["with_cache"]),
        helper.make_node("Add", ["with_cache", "mask_term"], ["logits" if not stateful_inputs else "pre_pos"]),
    ]
    inits.append(numpy_helper.from_array(np.array([3], np.int64), "axis3"))
    if stateful_inputs:
        nodes += [
            helper.make_node("Cast", ["position_ids"], ["pos_f"], to=f32),
            helper.make_node("Unsqueeze", ["pos_f", "axes_last"], ["pos3"]),
            helper.make_node("Mul", ["pos3", "tenk"], ["pos_term"]),
            helper.make_node("Add", ["pre_pos", "pos_term"], ["logits"]),
        ]
        inits.append(numpy_helper.from_array(np.array([2], np.int64), "axes_last"))
    graph = helper.make_graph(nodes, "toy", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(build(False), str(out / "toy_genai.onnx"))
    stateful_src = out / "toy_stateful_src.onnx"
    onnx.save(build(True), str(stateful_src))

    import openvino as ov
    from openvino._offline_transformations import apply_make_stateful_transformation

    model = ov.convert_model(str(stateful_src))
    pairs = {}
    for i in range(LAYERS):
        for kind in ("key", "value"):
            pairs[f"past_key_values.{i}.{kind}"] = f"present.{i}.{kind}"
    apply_make_stateful_transformation(model, pairs)
    ov.save_model(model, str(out / "toy_stateful.xml"), compress_to_fp16=False)


if __name__ == "__main__":
    main()
