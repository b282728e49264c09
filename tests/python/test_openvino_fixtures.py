"""`oxport export openvino` on the tiny fixtures (fixtures/tiny*: MHA, GQA, LongRoPE, K=320) at every weight
format, against an independent numpy f32 forward pass of HF Phi-3 written here; plus the CLI's refusals and
--dry-run. Run with OXPORT_BIN and OXPORT_PYTHON set (cargo xtask test does both).
"""

import json
import struct
import subprocess
import os
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
REF = FIX / "reference"
TINY = sorted(p.name for p in FIX.glob("tiny*") if (p / "config.json").exists())
F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
FORMATS = {
    "fp32": ["--weight-format", "fp32"],
    "fp16": ["--weight-format", "fp16"],
    "int8": ["--weight-format", "int8"],
    "int8_sym": ["--weight-format", "int8", "--sym"],
    "int4": ["--weight-format", "int4", "--group-size", "128", "--ratio", "0.6", "--sym", "--group-size-fallback", "adjust"],
    "int4_asym": ["--weight-format", "int4", "--group-size", "64", "--group-size-fallback", "adjust"],
    "int4_channel": ["--weight-format", "int4", "--group-size", "-1", "--sym", "--ratio", "0.8"],
}
# max |Δ| of the logits against the numpy f32 forward. fp32 is exact up to accumulation order; fp16 adds the
# bf16→f16 rounding (exact for these weights); int8/int4 add their compression error (random weights, |logits| ≲ 2).
TOL = {"fp32": 1e-4, "fp16": 1e-3, "int8": 0.06, "int8_sym": 0.06, "int4": 0.4, "int4_asym": 0.4, "int4_channel": 0.6}


def oxport(*args, env=None):
    exe = os.environ.get("OXPORT_BIN")
    assert exe, "OXPORT_BIN must name the built oxport binary"
    return subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


# ---- independent numpy reference (transformers Phi3ForCausalLM, eager attention, f32) ----

def read_safetensors(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        buf = raw[8 + n + a:8 + n + b]
        if t["dtype"] == "BF16":
            arr = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif t["dtype"] == "F16":
            arr = np.frombuffer(buf, np.float16).astype(np.float32)
        else:
            arr = np.frombuffer(buf, np.float32)
        out[name] = arr.reshape(t["shape"])
    return out


def load_weights(d):
    files = sorted(d.glob("*.safetensors"))
    w = {}
    for f in files:
        w.update(read_safetensors(f))
    return w


def inv_freq_for(cfg, seq_len):
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    rot = int(hd * cfg.get("partial_rotary_factor", 1.0))
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (np.arange(0, rot, 2, dtype=np.float32) / rot))
    scaling = cfg.get("rope_scaling")
    attn = 1.0
    if scaling and scaling.get("type", scaling.get("rope_type")) in ("longrope", "su"):
        orig = cfg["original_max_position_embeddings"]
        factors = scaling["long_factor"] if seq_len > orig else scaling["short_factor"]
        inv = 1.0 / (np.array(factors, np.float32) * (base ** (np.arange(0, rot, 2, dtype=np.float32) / rot)))
        scale = cfg["max_position_embeddings"] / orig
        attn = 1.0 if scale <= 1.0 else float(np.sqrt(1 + np.log(scale) / np.log(orig)))
    return inv.astype(np.float32), attn, rot


def numpy_logits(model_dir, ids, positions):
    cfg = json.loads((model_dir / "config.json").read_text())
    w = load_weights(model_dir)
    h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", nh)
    hd = h // nh
    eps = cfg.get("rms_norm_eps", 1e-5)
    inv, attn_factor, rot = inv_freq_for(cfg, int(positions.max()) + 1)
    freqs = positions[:, None].astype(np.float32) * inv[None]
    emb = np.concatenate([freqs, freqs], -1)
    cos, sin = np.cos(emb) * attn_factor, np.sin(emb) * attn_factor

    def rms(x, g):
        return g * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))

    def rope(x):  # [heads, T, hd]
        r, p = x[..., :rot], x[..., rot:]
        half = rot // 2
        rotated = np.concatenate([-r[..., half:], r[..., :half]], -1)
        return np.concatenate([r * cos + rotated * sin, p], -1)

    x = w["model.embed_tokens.weight"][ids]
    t = len(ids)
    causal = np.tril(np.ones((t, t), bool))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        xn = rms(x, w[p + "input_layernorm.weight"])
        qkv = xn @ w[p + "self_attn.qkv_proj.weight"].T
        q = qkv[:, :nh * hd].reshape(t, nh, hd).transpose(1, 0, 2)
        k = qkv[:, nh * hd:(nh + kv) * hd].reshape(t, kv, hd).transpose(1, 0, 2)
        v = qkv[:, (nh + kv) * hd:].reshape(t, kv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, nh // kv, 0), np.repeat(v, nh // kv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.where(causal, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + a.transpose(1, 0, 2).reshape(t, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        xn = rms(x, w[p + "post_attention_layernorm.weight"])
        gu = xn @ w[p + "mlp.gate_up_proj.weight"].T
        inter = gu.shape[-1] // 2
        gate, up = gu[:, :inter], gu[:, inter:]
        x = x + (up * (gate / (1 + np.exp(-gate)))) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def test_numpy_reference_matches_transformers():
    """The reference itself: it reproduces transformers' fp32 logits for the reference checkpoints."""
    for model in ["phi3-tiny-random", "phi3-tiny-gqa", "phi3-tiny-k320"]:
        ids = np.load(REF / "numerics" / model / "input_ids.npy")[0]
        got = numpy_logits(REF / "checkpoints" / model, ids, np.arange(len(ids)))
        want = np.load(REF / "numerics" / model / "logits_fp32.npy")[0]
        assert np.abs(got - want).max() < 1e-4, model


# ---- exports of the tiny fixtures ----

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(model, fmt):
        if (model, fmt) not in cache:
            out = tmp_path_factory.mktemp(f"{model}-{fmt}") / "ov"
            r = oxport("export", "openvino", "--model", str(FIX / model), *FORMATS[fmt], str(out))
            assert r.returncode == 0, r.stderr
            core = ov.Core()
            cache[(model, fmt)] = core.compile_model(core.read_model(out / "openvino_model.xml"), "CPU", F32_CONFIG)
        return cache[(model, fmt)]

    return get


def run(request, ids, positions, past=0):
    request.infer({
        "input_ids": ids[None].astype(np.int64),
        "attention_mask": np.ones((1, past + len(ids)), np.int64),
        "position_ids": positions[None].astype(np.int64),
        "beam_idx": np.array([0], np.int32),
    })
    return request.get_tensor("logits").data[0].copy()


def prompt(model):
    vocab = json.loads((FIX / model / "config.json").read_text())["vocab_size"]
    return np.random.default_rng(7).integers(3, vocab - 8, 12)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("model", TINY)
def test_tiny_fixture_logits_match_numpy_reference(exported, model, fmt):
    compiled = exported(model, fmt)
    ids = prompt(model)
    offsets = [0]
    cfg = json.loads((FIX / model / "config.json").read_text())
    if cfg.get("rope_scaling"):
        # Past original_max_position_embeddings LongRoPE switches to the long factors.
        offsets.append(cfg["original_max_position_embeddings"] + 10)
    for start in offsets:
        positions = np.arange(start, start + len(ids))
        request = compiled.create_infer_request()
        request.reset_state()
        got = run(request, ids, positions)
        want = numpy_logits(FIX / model, ids, positions)
        err = np.abs(got - want).max()
        assert err <= TOL[fmt], f"{model} {fmt} positions from {start}: max |Δ| {err}"


@pytest.mark.parametrize("fmt", ["fp32", "int4"])
@pytest.mark.parametrize("model", TINY)
def test_tiny_fixture_stateful_greedy_matches_full_recomputation(exported, model, fmt):
    compiled = exported(model, fmt)
    ids = prompt(model)
    request = compiled.create_infer_request()
    request.reset_state()
    logits = run(request, ids, np.arange(len(ids)))
    seq = list(ids)
    for _ in range(5):
        nxt = int(logits[-1].argmax())
        full_req = compiled.create_infer_request()
        full = run(full_req, np.array(seq), np.arange(len(seq)))
        assert int(full[-1].argmax()) == nxt
        seq.append(nxt)
        logits = run(request, np.array([nxt]), np.array([len(seq) - 1]), past=len(seq) - 1)


def test_longrope_graph_selects_factors_at_runtime(tmp_path):
    out = tmp_path / "ov"
    assert oxport("export", "openvino", "--model", str(FIX / "tiny-longrope"), "--weight-format", "fp16", str(out)).returncode == 0
    model = ov.Core().read_model(out / "openvino_model.xml")
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert "ReduceMax" in types and types.count("Select") == 2  # factor switch + mask


# ---- CLI ----

@pytest.mark.parametrize("flag", [["--gptq"], ["--lora-correction"], ["--quant-mode", "int8"], ["--disable-stateful"]])
def test_unimplemented_optimum_flags_fail_naming_the_flag(tmp_path, flag):
    out = tmp_path / "ov"
    r = oxport("export", "openvino", "--model", str(FIX / "tiny"), "--weight-format", "int4", *flag, str(out))
    assert r.returncode != 0
    assert flag[0] in r.stderr and "not implement" in r.stderr, r.stderr
    assert not out.exists()


CALIB = ROOT / "fixtures" / "calib_text.txt"


@pytest.mark.parametrize("flags,says", [
    (["--weight-format", "int8", "--dataset", str(CALIB)], "data-aware compression is int4"),
    (["--weight-format", "int4", "--awq", "--num-samples", "4"], "--num-samples needs --dataset"),
    (["--weight-format", "int4", "--awq", "--dataset", "c4"], "c4"),
    (["--weight-format", "int4", "--scale-estimation"], "--scale-estimation needs calibration data"),
    (["--weight-format", "int4", "--ratio", "0.8", "--sensitivity-metric", "hessian_input_activation"],
     "needs calibration data"),
    (["--weight-format", "int4", "--ratio", "0.8", "--sensitivity-metric", "max_variance"], "expected one of"),
])
def test_data_aware_flags_oxport_cannot_honour_are_refused_before_writing(tmp_path, flags, says):
    out = tmp_path / "ov"
    r = oxport("export", "openvino", "--model", str(FIX / "tiny"), *flags, str(out))
    assert r.returncode != 0 and says in r.stderr, r.stderr
    assert not out.exists()


def test_data_aware_awq_is_deterministic_and_rescales_only_down_proj(tmp_path):
    """--awq --dataset: the same bytes on 1 and 2 threads; only down_proj and the awq_mul scales differ from plain
    int4."""
    flags = ["--weight-format", "int4", "--group-size", "64", "--ratio", "1.0", "--disable-convert-tokenizer"]
    data = ["--awq", "--dataset", str(CALIB), "--num-samples", "16"]
    for name, extra, threads in [("a", data, "2"), ("b", data, "1"), ("plain", [], "2")]:
        r = oxport("export", "openvino", "--model", str(FIX / "tiny-phi4"), *flags, *extra, str(tmp_path / name),
                   env={"RAYON_NUM_THREADS": threads})
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "a/openvino_model.bin").read_bytes() == (tmp_path / "b/openvino_model.bin").read_bytes()
    core = ov.Core()
    consts = lambda d: {op.get_friendly_name(): op.get_data().copy() for op in
                        core.read_model(str(d / "openvino_model.xml")).get_ops() if op.get_type_name() == "Constant"}
    a, plain = consts(tmp_path / "a"), consts(tmp_path / "plain")
    scales = {k: v for k, v in a.items() if k.endswith("/awq_mul/scale")}
    assert len(scales) == 2 and all(v.shape == (1, 1, 384) for v in scales.values())
    # NNCF rescales only the groups of the 0.2% most active channels: int(384 * 0.002) = 0 → 1 channel, 1 group.
    for v in scales.values():
        changed = np.nonzero(v.ravel() != 1.0)[0]
        assert 0 < len(changed) <= 64 and len(set(changed // 64)) == 1
    weights = [k for k in plain if k.startswith("self.")]
    assert weights and all(k in a for k in weights)
    differ = sorted(k for k in weights if a[k].tobytes() != plain[k].tobytes())
    assert differ and all(".mlp.down_proj." in k for k in differ), differ
    rt = json.loads((tmp_path / "a/openvino_config.json").read_text())["quantization_config"]
    assert rt["dataset"] == str(CALIB) and rt["num_samples"] == 16


def test_unknown_weight_format_and_task_are_refused(tmp_path):
    r = oxport("export", "openvino", "--model", str(FIX / "tiny"), "--weight-format", "nf4", str(tmp_path / "a"))
    assert r.returncode != 0 and "nf4" in r.stderr
    r = oxport("export", "openvino", "--model", str(FIX / "tiny"), "--task", "text-generation", str(tmp_path / "b"))
    assert r.returncode != 0 and "text-generation-with-past" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "ov"
    r = oxport("export", "openvino", "--model", str(REF / "checkpoints" / "phi3-tiny-random"), "--task",
               "text-generation-with-past", "--weight-format", "int4", "--group-size", "128", "--ratio", "0.6", "--sym",
               "--trust-remote-code", "--dry-run", str(out))
    assert r.returncode == 0, r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    lines = {l.split()[0]: l for l in r.stdout.splitlines() if l.strip()}
    # NNCF's choice for this checkpoint (docs/openvino-ir.md §6): L0.qkv, L1.qkv, L0.down at int4.
    layer = "model.layers.{}.{}.weight".format
    for name in [layer(0, "self_attn.qkv_proj"), layer(1, "self_attn.qkv_proj"), layer(0, "mlp.down_proj")]:
        assert "int4_sym, group size 128" in lines[name], r.stdout
    for name in ["model.embed_tokens.weight", "lm_head.weight", layer(0, "self_attn.o_proj"),
                 layer(0, "mlp.gate_up_proj"), layer(1, "mlp.down_proj")]:
        assert "int8_asym, per-channel" in lines[name], r.stdout
    # The same table as the ONNX export's dry run, with NNCF's bitwidth statistics (3 of 8 ratio-defining layers
    # in int4).
    assert "Statistics of the bitwidth distribution:" in r.stdout
    assert "40% (3 / 8)" in lines["int4_sym,"], r.stdout


def test_output_bytes_do_not_depend_on_thread_count(tmp_path):
    outs = []
    for threads in ["1", "2"]:
        out = tmp_path / f"t{threads}"
        exe = os.environ["OXPORT_BIN"]
        r = subprocess.run([exe, "export", "openvino", "--model", str(FIX / "tiny-gqa"), *FORMATS["int4"], str(out)],
                           capture_output=True, text=True, env={**os.environ, "RAYON_NUM_THREADS": threads})
        assert r.returncode == 0, r.stderr
        outs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outs[0] == outs[1]


def write_variant(src, dst, drop=(), **config):
    """A copy of checkpoint `src` as one model.safetensors without the tensors in `drop`, with `config` overrides."""
    dst.mkdir()
    tensors = {}
    for f in sorted(src.glob("*.safetensors")):
        raw = f.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        for name, t in json.loads(raw[8:8 + n]).items():
            if name != "__metadata__" and name not in drop:
                a, b = t["data_offsets"]
                tensors[name] = (t["dtype"], t["shape"], raw[8 + n + a:8 + n + b])
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    (dst / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config)
    (dst / "config.json").write_text(json.dumps(cfg))
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        (dst / name).write_bytes((src / name).read_bytes())


@pytest.mark.parametrize("fmt", ["fp32", "int8", "int4"])
def test_tied_embeddings_and_partial_rotary(tmp_path, fmt):
    """Phi-4-mini-style variants: lm_head tied to the embedding, RoPE on half of each head (partial_rotary_factor)."""
    model = tmp_path / "variant"
    write_variant(FIX / "tiny-gqa", model, drop={"lm_head.weight"}, tie_word_embeddings=True, partial_rotary_factor=0.5)
    out = tmp_path / "ov"
    r = oxport("export", "openvino", "--model", str(model), *FORMATS[fmt], str(out))
    assert r.returncode == 0, r.stderr
    core = ov.Core()
    compiled = core.compile_model(core.read_model(out / "openvino_model.xml"), "CPU", F32_CONFIG)
    ids = prompt("tiny-gqa")
    request = compiled.create_infer_request()
    request.reset_state()
    got = run(request, ids, np.arange(len(ids)))
    want = numpy_logits(model, ids, np.arange(len(ids)))
    err = np.abs(got - want).max()
    assert err <= TOL[fmt], f"{fmt}: max |Δ| {err}"
    # The tied weight is stored once.
    xml = (out / "openvino_model.xml").read_text()
    assert xml.count("self.model.embed_tokens._openvino_orig_weight\"") == 1 and "lm_head._openvino" not in xml


def test_batch_padding_and_beam_reorder(exported):
    """Batch of two: left padding is masked out, and beam_idx reorders the KV cache rows before the next step."""
    compiled = exported("tiny-gqa", "fp32")
    a, b = prompt("tiny-gqa")[:8], prompt("tiny-gqa")[4:12][::-1].copy()

    def single(ids, extra=None):
        r = compiled.create_infer_request()
        r.reset_state()
        out = run(r, ids, np.arange(len(ids)))
        if extra is not None:
            out = run(r, np.array([extra]), np.array([len(ids)]), past=len(ids))
        return out[-1]

    # Left padding: row 0 is `a[3:]` behind 3 pad tokens.
    r = compiled.create_infer_request()
    r.reset_state()
    ids = np.stack([np.concatenate([[0, 0, 0], a[3:]]), b]).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    pos = np.stack([np.concatenate([[1, 1, 1], np.arange(5)]), np.arange(8)]).astype(np.int64)
    r.infer({"input_ids": ids, "attention_mask": mask, "position_ids": pos, "beam_idx": np.array([0, 1], np.int32)})
    logits = r.get_tensor("logits").data
    assert np.abs(logits[0, -1] - single(a[3:])).max() < 1e-4
    assert np.abs(logits[1, -1] - single(b)).max() < 1e-4

    # Beam reorder: after a batched prefill of [a, b], beam_idx [1, 0] swaps the caches.
    r = compiled.create_infer_request()
    r.reset_state()
    r.infer({"input_ids": np.stack([a, b]).astype(np.int64), "attention_mask": np.ones((2, 8), np.int64),
             "position_ids": np.stack([np.arange(8)] * 2), "beam_idx": np.array([0, 1], np.int32)})
    t0, t1 = 5, 9
    r.infer({"input_ids": np.array([[t0], [t1]], np.int64), "attention_mask": np.ones((2, 9), np.int64),
             "position_ids": np.array([[8], [8]], np.int64), "beam_idx": np.array([1, 0], np.int32)})
    logits = r.get_tensor("logits").data
    assert np.abs(logits[0, -1] - single(b, t0)).max() < 1e-4
    assert np.abs(logits[1, -1] - single(a, t1)).max() < 1e-4


def test_phi3_mini_4k_default_is_scale_estimation_on_wikitext2_from_the_hub(tmp_path):
    """`--weight-format int4` alone on a folder named Phi-3-mini-4k-instruct is optimum-cli's default for it: int4_asym
    group 64, ratio 1.0, scale estimation calibrated on wikitext2 — fetched from the hub's dataset repository (a
    loopback server answering as the hub does), cached, and reused offline."""
    import hashlib
    import http.server
    import shutil
    import threading

    parquet = (FIX / "calibration" / "wikitext-rows.parquet").read_bytes()
    sha = hashlib.sha256(parquet).hexdigest()
    want = "/datasets/Salesforce/wikitext/resolve/main/wikitext-2-raw-v1/train-00000-of-00001.parquet"
    seen = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            if self.path != want:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
            self.send_header("X-Linked-Etag", sha)
            self.send_header("Content-Length", str(len(parquet)))
            self.end_headers()
            self.wfile.write(parquet)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model = tmp_path / "Phi-3-mini-4k-instruct"
    shutil.copytree(FIX / "tiny-phi4", model)
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path / "hf")}
    try:
        r = oxport("export", "openvino", "--model", str(model), "--weight-format", "int4",
                   "--disable-convert-tokenizer", str(tmp_path / "ov"), env=env)
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    assert "Phi-3-mini-4k-instruct" in r.stderr and "scale estimation" in r.stderr and "wikitext2" in r.stderr
    assert seen == [want]
    xml = (tmp_path / "ov" / "openvino_model.xml").read_text()
    for key, value in [("scale_estimation", "True"), ("group_size", "64"), ("mode", "int4_asym"),
                       ("sensitivity_metric", "max_activation_variance")]:
        assert f'<{key} value="{value}"' in xml, key
    cfg = json.loads((tmp_path / "ov" / "openvino_config.json").read_text())["quantization_config"]
    assert cfg["dataset"] == "wikitext2" and cfg["num_samples"] == 128
    # Offline, from the cache: the same bytes.
    r = oxport("export", "openvino", "--model", str(model), "--weight-format", "int4",
               "--disable-convert-tokenizer", str(tmp_path / "ov2"), env={**env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ov2/openvino_model.bin").read_bytes() == (tmp_path / "ov/openvino_model.bin").read_bytes()


def test_scale_estimation_and_data_aware_ratio_are_deterministic_across_thread_counts(tmp_path):
    """--scale-estimation (with AWQ) and data-aware mixed precision: the same bytes on 1 and 2 threads; scale
    estimation changes the 4-bit scales but not which weights are 4-bit."""
    base = ["--weight-format", "int4", "--group-size", "64", "--disable-convert-tokenizer", "--dataset", str(CALIB),
            "--num-samples", "16"]
    runs = {"se": ["--ratio", "1.0", "--awq", "--scale-estimation"], "mixed": ["--ratio", "0.7"]}
    for name, extra in runs.items():
        for threads in ["1", "2"]:
            out = tmp_path / f"{name}-{threads}"
            r = oxport("export", "openvino", "--model", str(FIX / "tiny-phi4"), *base, *extra, str(out),
                       env={"RAYON_NUM_THREADS": threads})
            assert r.returncode == 0, r.stderr
        assert (tmp_path / f"{name}-1/openvino_model.bin").read_bytes() == \
            (tmp_path / f"{name}-2/openvino_model.bin").read_bytes(), name
    r = oxport("export", "openvino", "--model", str(FIX / "tiny-phi4"), *base, "--ratio", "1.0", "--awq",
               str(tmp_path / "awq"))
    assert r.returncode == 0, r.stderr
    core = ov.Core()
    consts = lambda d: {op.get_friendly_name(): op.get_data().copy() for op in
                        core.read_model(str(d / "openvino_model.xml")).get_ops() if op.get_type_name() == "Constant"
                        and op.get_friendly_name().startswith("self.")}
    se, awq = consts(tmp_path / "se-1"), consts(tmp_path / "awq")
    assert sorted(se) == sorted(awq)
    scales = [k for k in se if k.endswith("/scale") and "layers." in k]
    assert scales and any(se[k].tobytes() != awq[k].tobytes() for k in scales)
