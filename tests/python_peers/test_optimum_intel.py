"""optimum-intel loads oxport's OpenVINO exports as they are (no re-export) and generates like OpenVINO itself.

Runs in the peers' venv (`.venv-peers`: optimum-intel, transformers, torch, openvino from PyPI), which
`cargo xtask test` creates once. For each tiny fixture and weight format, `OVModelForCausalLM.from_pretrained(OUT)`
must load our folder and its greedy `generate()` must produce exactly the tokens of a plain stateful OpenVINO greedy
loop over the same IR (one infer request, position_ids continuing, beam_idx = [0]); for the fp32 export those tokens
must also be those of a full recomputation without the KV cache, which ties them to the model's definition.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ["OXPORT_BIN"]
NEW_TOKENS = 8
F32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
FORMATS = {
    "int4": ["--weight-format", "int4", "--group-size", "128", "--ratio", "0.6", "--sym"],
    "int8": ["--weight-format", "int8"],
    "fp32": ["--weight-format", "fp32"],
}
CASES = [(m, f) for m in ["tiny", "tiny-gqa", "tiny-longrope"] for f in FORMATS]


def export(tmp_path, model, fmt):
    out = tmp_path / f"{model}-{fmt}"
    cmd = [BIN, "export", "openvino", "--model", str(ROOT / "fixtures" / model), "--task",
           "text-generation-with-past", *FORMATS[fmt], "--trust-remote-code", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def prompt_ids(out):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    return tok(text, return_tensors="np")["input_ids"].astype(np.int64)


def ov_greedy(out, ids, steps):
    core = ov.Core()
    compiled = core.compile_model(str(out / "openvino_model.xml"), "CPU", F32)
    req = compiled.create_infer_request()
    tokens, past = ids[0].tolist(), 0
    feed = ids
    for _ in range(steps):
        n = feed.shape[1]
        res = req.infer({
            "input_ids": feed,
            "attention_mask": np.ones((1, past + n), np.int64),
            "position_ids": np.arange(past, past + n, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, np.int32),
        })
        nxt = int(np.argmax(res["logits"][0, -1]))
        tokens.append(nxt)
        past += n
        feed = np.array([[nxt]], np.int64)
    return tokens[ids.shape[1]:]


def ov_recompute_greedy(out, ids, steps):
    compiled = ov.Core().compile_model(str(out / "openvino_model.xml"), "CPU", F32)
    seq = ids[0].tolist()
    for _ in range(steps):
        req = compiled.create_infer_request()  # fresh state: the whole sequence every step
        x = np.array([seq], np.int64)
        res = req.infer({"input_ids": x, "attention_mask": np.ones_like(x),
                         "position_ids": np.arange(x.shape[1], dtype=np.int64)[None],
                         "beam_idx": np.zeros(1, np.int32)})
        seq.append(int(np.argmax(res["logits"][0, -1])))
    return seq[ids.shape[1]:]


@pytest.mark.parametrize("model,fmt", CASES)
def test_optimum_intel_loads_and_generates_like_openvino(tmp_path, model, fmt):
    import torch
    from optimum.intel import OVModelForCausalLM

    out = export(tmp_path, model, fmt)
    ids = prompt_ids(out)
    m = OVModelForCausalLM.from_pretrained(out, ov_config=F32, compile=True)
    assert m.stateful, "optimum-intel must see the KV cache as state"
    gen = m.generate(torch.from_numpy(ids), attention_mask=torch.ones_like(torch.from_numpy(ids)),
                     max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1)
    got = gen[0, ids.shape[1]:].tolist()
    assert got, "optimum-intel generated nothing"
    # generate() stops early at an end-of-sequence token; the plain loop does not.
    want = ov_greedy(out, ids, NEW_TOKENS)[: len(got)]
    assert got == want, f"optimum-intel {got} vs OpenVINO loop {want}"
    if fmt == "fp32":
        assert want == ov_recompute_greedy(out, ids, len(want))
