"""`oxport export onnx` output runs in onnxruntime-genai (og.Model, og.Tokenizer, og.Generator) and greedy
generation there equals a plain onnxruntime greedy loop over the same model (prefill, then one token at a
time with the KV cache), token for token.

Run from the repo root with OXPORT_BIN=<oxport binary> and the test venv (onnxruntime-genai 0.18.0).
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import onnxruntime_genai as og
import pytest

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "fixtures" / "reference"
MAX_LENGTH = 48


def export(model_dir, out_dir, *flags):
    binary = os.environ.get("OXPORT_BIN")
    assert binary, "set OXPORT_BIN to the oxport binary (cargo build -p oxport-cli)"
    cmd = [binary, "export", "onnx", "--model", str(model_dir), str(out_dir), *flags]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return Path(out_dir)


def genai_greedy(export_dir, prompt_ids, cpu_only=False):
    if cpu_only:
        # The export's provider_options name an EP that does not exist here (dml, webgpu): run it on the CPU.
        config = og.Config(str(export_dir))
        config.clear_providers()
        model = og.Model(config)
    else:
        model = og.Model(str(export_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=MAX_LENGTH, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt_ids)
    while not gen.is_done():
        gen.generate_next_token()
    return [int(t) for t in gen.get_sequence(0)]


def ort_greedy(export_dir, prompt_ids):
    cfg = json.loads((export_dir / "genai_config.json").read_text())
    decoder = cfg["model"]["decoder"]
    eos = cfg["model"]["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else [eos])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(export_dir / "model.onnx"), so, providers=["CPUExecutionProvider"])
    past = {
        i.name: np.zeros((1, decoder["num_key_value_heads"], 0, decoder["head_size"]),
                         np.float16 if "float16" in i.type else np.float32)
        for i in sess.get_inputs()
        if i.name.startswith("past_key_values")
    }
    with_positions = any(i.name == "position_ids" for i in sess.get_inputs())
    out_names = [o.name for o in sess.get_outputs()]
    seq = list(prompt_ids)
    step = np.array([seq], dtype=np.int64)
    while len(seq) < MAX_LENGTH:
        feeds = {"input_ids": step, "attention_mask": np.ones((1, len(seq)), np.int64), **past}
        if with_positions:
            feeds["position_ids"] = np.arange(len(seq) - step.shape[1], len(seq), dtype=np.int64).reshape(1, -1)
        outs = dict(zip(out_names, sess.run(out_names, feeds)))
        token = int(outs["logits"][0, -1].argmax())
        seq.append(token)
        if token in eos:
            break
        past = {name.replace("present", "past_key_values"): v for name, v in outs.items() if name.startswith("present")}
        step = np.array([[token]], dtype=np.int64)
    return seq


@pytest.mark.parametrize("model", ["phi3-tiny-random", "phi3-tiny-gqa"])
def test_genai_greedy_equals_plain_onnxruntime(tmp_path, model):
    out = export(REF / "checkpoints" / model, tmp_path / "out", "-p", "int4", "--block-size", "128")
    prompt = json.loads((REF / "numerics" / model / "prompt.json").read_text())
    ids = prompt["input_ids"]
    # The copied tokenizer files give og.Tokenizer the ids transformers produced for the prompt. onnxruntime-
    # extensions does not apply tokenizer.json's TemplateProcessing post-processor, so BOS (id 1) is not added
    # by og (checked with every tokenizer_class); transformers adds it.
    tokenizer = og.Tokenizer(og.Model(str(out)))
    assert [1] + [int(t) for t in tokenizer.encode(prompt["text"])] == ids
    got = genai_greedy(out, ids)
    want = ort_greedy(out, ids)
    print(model, got[len(ids):])
    assert len(got) > len(ids) + 8, "generation stopped almost at once; the comparison would be vacuous"
    assert got == want


@pytest.mark.parametrize("ep", ["dml", "webgpu"])
@pytest.mark.parametrize("precision", ["int4", "fp16"])
@pytest.mark.parametrize("model", ["phi3-tiny-random", "tiny-phi4"])
def test_dml_and_webgpu_exports_generate_in_genai_on_the_cpu(tmp_path, model, precision, ep):
    """No DirectML or WebGPU device exists here: onnxruntime-genai runs these graphs with the provider list cleared
    (CPU), and greedy generation equals the plain onnxruntime loop (which feeds position_ids for dml)."""
    src = REF / "checkpoints" / model if model.startswith("phi3-") else ROOT / "fixtures" / model
    out = export(src, tmp_path / "out", "-p", precision, "-e", ep)
    if model.startswith("phi3-"):
        ids = json.loads((REF / "numerics" / model / "prompt.json").read_text())["input_ids"]
    else:
        ids = [1, 17, 300, 42, 999, 5, 77, 123]
    got = genai_greedy(out, ids, cpu_only=True)
    want = ort_greedy(out, ids)
    print(model, precision, ep, got[len(ids):])
    assert len(got) > len(ids) + 8, "generation stopped almost at once; the comparison would be vacuous"
    assert got == want
