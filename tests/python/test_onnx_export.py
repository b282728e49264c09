"""`oxport export onnx` end to end: exports load in ONNX Runtime and their logits match an f32 reference.

Run from the repo root with OXPORT_BIN=<path to the oxport binary> and the test venv (onnxruntime 1.32.0).

References:
* fixtures/reference/checkpoints/*: transformers fp32 logits in fixtures/reference/numerics/<model>/.
* fixtures/tiny*: the f32 numpy Phi-3 forward pass below (HF `modeling_phi3.py` semantics, LongRoPE included).

Tolerances per precision (max |logit difference| over every position of the prompt; logits are O(1) here):
* fp32: 1e-4   (builder fp32 export measured 1.4e-6, fixtures/reference/ort/ort_numerics.txt)
* fp16: 2e-2   (fp16 weights and activations; measured ~1e-3)
* int4 block 128: max 0.6, mean 0.1   (builder int4 b128 measured max 0.368, mean 0.064; accuracy_level 4
  also quantizes activations to int8)
* int4 block 32:  max 0.5, mean 0.08
* int4 block 128 for cuda (fp16 activations and scales, run on the CPU EP): as int4
* dml and webgpu (fp16 activations; int4 as cuda, fp16 as fp16), run on the CPU EP
"""

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "fixtures" / "reference"
TOL = {"fp32": (1e-4, 1e-5), "fp16": (2e-2, 3e-3), "int4": (0.6, 0.1), "int4-b32": (0.5, 0.08), "int4-cuda": (0.6, 0.1),
       "int4-dml": (0.6, 0.1), "fp16-dml": (2e-2, 3e-3), "int4-webgpu": (0.6, 0.1), "fp16-webgpu": (2e-2, 3e-3),
       "int4-awq": (0.6, 0.1), "int4-awq-data": (0.6, 0.1)}


def oxport_bin():
    path = os.environ.get("OXPORT_BIN")
    assert path, "set OXPORT_BIN to the oxport binary (cargo build -p oxport-cli)"
    return path


def export(model_dir, out_dir, *flags):
    cmd = [oxport_bin(), "export", "onnx", "--model", str(model_dir), str(out_dir), *flags]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return Path(out_dir)


# ---------------------------------------------------------------- f32 numpy reference (HF Phi-3 semantics)


def load_checkpoint(d):
    d = Path(d)
    tensors = {}
    for f in sorted(d.glob("*.safetensors")):
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        data = raw[8 + n :]
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            a, b = meta["data_offsets"]
            if meta["dtype"] == "BF16":
                arr = (np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            elif meta["dtype"] == "F16":
                arr = np.frombuffer(data[a:b], dtype="<f2").astype(np.float32)
            else:
                arr = np.frombuffer(data[a:b], dtype="<f4")
            tensors[name] = arr.reshape(meta["shape"])
    return json.loads((d / "config.json").read_text()), tensors


def rope_params(cfg):
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    return rs if isinstance(rs, dict) and "short_factor" in rs else None


def reference_logits(model_dir, ids):
    cfg, t = load_checkpoint(model_dir)
    h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    seq = len(ids)
    # Partial rotary (Phi-4-mini): RoPE on the first `rd` dims of each head, the rest passes through
    # (HF modeling_phi3.py `apply_rotary_pos_emb`).
    rd = int(hd * cfg.get("partial_rotary_factor", 1.0))
    inv = 1.0 / (theta ** (np.arange(0, rd, 2, dtype=np.float64) / rd))
    mscale = 1.0
    rs = rope_params(cfg)
    if rs is not None:
        orig, ctx = cfg["original_max_position_embeddings"], cfg["max_position_embeddings"]
        factors = np.array(rs["long_factor"] if seq > orig else rs["short_factor"], dtype=np.float64)
        inv = inv / factors
        mscale = np.sqrt(1 + np.log(ctx / orig) / np.log(orig)) if ctx > orig else 1.0
    freqs = np.outer(np.arange(seq, dtype=np.float64), inv)
    emb = np.concatenate([freqs, freqs], -1)
    cos, sin = np.cos(emb) * mscale, np.sin(emb) * mscale

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rot(x):  # [heads, seq, hd], rotate_half on the first rd dims
        xr, rest = x[..., :rd], x[..., rd:]
        x1, x2 = xr[..., : rd // 2], xr[..., rd // 2 :]
        return np.concatenate([xr * cos + np.concatenate([-x2, x1], -1) * sin, rest], -1)

    x = t["model.embed_tokens.weight"][ids].astype(np.float64)
    mask = np.triu(np.full((seq, seq), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        y = rms(x, t[f"{p}.input_layernorm.weight"])
        qkv = y @ t[f"{p}.self_attn.qkv_proj.weight"].T
        q = qkv[:, : nh * hd].reshape(seq, nh, hd).transpose(1, 0, 2)
        k = qkv[:, nh * hd : (nh + nkv) * hd].reshape(seq, nkv, hd).transpose(1, 0, 2)
        v = qkv[:, (nh + nkv) * hd :].reshape(seq, nkv, hd).transpose(1, 0, 2)
        q, k = rot(q), rot(k)
        k, v = np.repeat(k, nh // nkv, 0), np.repeat(v, nh // nkv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + a.transpose(1, 0, 2).reshape(seq, nh * hd) @ t[f"{p}.self_attn.o_proj.weight"].T
        y = rms(x, t[f"{p}.post_attention_layernorm.weight"])
        gu = y @ t[f"{p}.mlp.gate_up_proj.weight"].T
        inter = gu.shape[-1] // 2
        gate, up = gu[:, :inter], gu[:, inter:]
        x = x + (gate / (1 + np.exp(-gate)) * up) @ t[f"{p}.mlp.down_proj.weight"].T
    x = rms(x, t["model.norm.weight"])
    lm = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return (x @ lm.T).astype(np.float32)[None]


# ---------------------------------------------------------------- ONNX Runtime


def session(export_dir, config=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, value)
    return ort.InferenceSession(str(export_dir / "model.onnx"), so, providers=["CPUExecutionProvider"])


def empty_past(sess, head_size, batch=1):
    feeds = {}
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values"):
            dt = np.float16 if "float16" in i.type else np.float32
            feeds[i.name] = np.zeros((batch, i.shape[1], 0, head_size), dtype=dt)
    return feeds


def head_size(export_dir):
    return json.loads((export_dir / "genai_config.json").read_text())["model"]["decoder"]["head_size"]


def ort_logits(export_dir, ids, config=None):
    sess = session(export_dir, config)
    ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), **empty_past(sess, head_size(export_dir))}
    if any(i.name == "position_ids" for i in sess.get_inputs()):  # dml: RotaryEmbedding outside GQA
        feeds["position_ids"] = np.arange(ids.shape[1], dtype=np.int64).reshape(1, -1)
    return sess.run(["logits"], feeds)[0].astype(np.float32)


def assert_close(got, want, tol, what):
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    max_abs, mean_abs = float(diff.max()), float(diff.mean())
    print(f"{what}: max_abs {max_abs:.3g} mean_abs {mean_abs:.3g}")
    assert max_abs <= tol[0] and mean_abs <= tol[1], f"{what}: max_abs {max_abs} mean_abs {mean_abs} over {tol}"


PRECISIONS = [("fp32", ["-p", "fp32"]), ("fp16", ["-p", "fp16"]), ("int4", ["-p", "int4", "--block-size", "128"]),
              ("int4-b32", ["-p", "int4"]),
              # The cuda graph (fp16 I/O, fp16 scales, accuracy_level omitted) also runs on the CPU EP.
              ("int4-cuda", ["-p", "int4", "-e", "cuda", "--block-size", "128"]),
              # DirectML and WebGPU graphs (fp16 I/O; dml: separate Q/K/V, RotaryEmbedding with position_ids and
              # the concatenated LongRoPE cache) run on the CPU EP: no DirectML or WebGPU device exists here.
              ("int4-dml", ["-p", "int4", "-e", "dml", "--block-size", "128"]),
              ("fp16-dml", ["-p", "fp16", "-e", "dml"]),
              ("int4-webgpu", ["-p", "int4", "-e", "webgpu", "--block-size", "128"]),
              ("fp16-webgpu", ["-p", "fp16", "-e", "webgpu"]),
              # Data-free AWQ folded into up_proj (same graph, rescaled weights).
              ("int4-awq", ["-p", "int4", "--block-size", "128", "--awq"]),
              # Data-aware AWQ (NNCF's search on statistics from oxport's forward pass), folded the same way.
              ("int4-awq-data", ["-p", "int4", "--block-size", "128", "--awq", "--dataset",
                                 str(ROOT / "fixtures/calib_text.txt"), "--num-samples", "8"])]


@pytest.mark.parametrize("model", ["phi3-tiny-random", "phi3-tiny-gqa", "phi3-tiny-k320"])
@pytest.mark.parametrize("label,flags", PRECISIONS)
def test_reference_checkpoint_logits_match_transformers(tmp_path, model, label, flags):
    out = export(REF / "checkpoints" / model, tmp_path / "out", *flags)
    ids = np.load(REF / "numerics" / model / "input_ids.npy")
    want = np.load(REF / "numerics" / model / "logits_fp32.npy")
    got = ort_logits(out, ids)
    assert got.shape == want.shape
    assert_close(got, want, TOL[label], f"{model} {label}")


def test_numpy_reference_matches_transformers():
    """The numpy forward used for fixtures/tiny* reproduces the transformers logits (checks the checker)."""
    ids = np.load(REF / "numerics" / "phi3-tiny-gqa" / "input_ids.npy")[0]
    want = np.load(REF / "numerics" / "phi3-tiny-gqa" / "logits_fp32.npy")
    assert_close(reference_logits(REF / "checkpoints" / "phi3-tiny-gqa", ids), want, (1e-4, 1e-5), "numpy ref")


TINY = sorted(p.name for p in (ROOT / "fixtures").glob("tiny*") if (p / "config.json").exists())


@pytest.mark.parametrize("model", TINY)
@pytest.mark.parametrize("label,flags", PRECISIONS)
def test_tiny_fixture_logits_match_f32_reference(tmp_path, model, label, flags):
    out = export(ROOT / "fixtures" / model, tmp_path / "out", *flags)
    cfg = json.loads((ROOT / "fixtures" / model / "config.json").read_text())
    rng = np.random.default_rng(0)
    lengths = [12]
    if rope_params(cfg) is not None:
        # Both LongRoPE branches of the If node: short factors up to original_max, long factors beyond.
        lengths.append(cfg["original_max_position_embeddings"] + 9)
    for seq in lengths:
        ids = rng.integers(3, cfg["vocab_size"], size=seq)
        assert_close(ort_logits(out, ids), reference_logits(ROOT / "fixtures" / model, ids), TOL[label],
                     f"{model} {label} seq {seq}")


def test_longrope_export_selects_caches_with_one_if(tmp_path):
    out = export(ROOT / "fixtures" / "tiny-longrope", tmp_path / "out", "-p", "fp32")
    m = onnx.load(str(out / "model.onnx"), load_external_data=False)
    ifs = [n for n in m.graph.node if n.op_type == "If"]
    assert [n.name for n in ifs] == ["/model/rope_caches_subgraph/If"]
    assert list(ifs[0].output) == ["cos_cache", "sin_cache"]
    assert "cos_cache" not in {t.name for t in m.graph.initializer}


def test_qdq_export_passes_onnx_checker_and_matches_int4(tmp_path):
    src = REF / "checkpoints" / "phi3-tiny-random"
    qdq = export(src, tmp_path / "qdq", "-p", "int4", "--block-size", "128", "--qdq")
    nbits = export(src, tmp_path / "nbits", "-p", "int4", "--block-size", "128", "--accuracy-level", "0")
    onnx.checker.check_model(str(qdq / "model.onnx"), full_check=True)
    with pytest.raises(onnx.checker.ValidationError, match="SimplifiedLayerNormalization"):
        onnx.checker.check_model(str(nbits / "model.onnx"))
    m = onnx.load(str(qdq / "model.onnx"), load_external_data=False)
    ops = {n.op_type for n in m.graph.node}
    assert "DequantizeLinear" in ops and "MatMulNBits" not in ops and "SimplifiedLayerNormalization" not in ops
    ids = np.load(REF / "numerics" / "phi3-tiny-random" / "input_ids.npy")
    # Same int4 codes and scales: ORT fuses DQ+MatMul back into MatMulNBits (DQMatMulToMatMulNBits) with
    # `session.qdq_matmulnbits_accuracy_level` (default 4); at level 0 on both sides the two exports agree to
    # float rounding (the first norm is decomposed in the Q/DQ form).
    fused = ort_logits(qdq, ids, {"session.qdq_matmulnbits_accuracy_level": "0"})
    assert_close(fused, ort_logits(nbits, ids), (1e-4, 1e-5), "qdq vs MatMulNBits")
    want = np.load(REF / "numerics" / "phi3-tiny-random" / "logits_fp32.npy")
    assert_close(ort_logits(qdq, ids), want, TOL["int4"], "qdq vs transformers")


def test_asym_int8_lm_head_and_ratio_exports_load_and_stay_close(tmp_path):
    src = REF / "checkpoints" / "phi3-tiny-random"
    ids = np.load(REF / "numerics" / "phi3-tiny-random" / "input_ids.npy")
    want = np.load(REF / "numerics" / "phi3-tiny-random" / "logits_fp32.npy")
    for name, flags in [("asym", ["--asym"]), ("int8-lm-head", ["--int8-lm-head"]), ("ratio", ["--ratio", "0.5"])]:
        out = export(src, tmp_path / name, "-p", "int4", "--block-size", "128", *flags)
        assert_close(ort_logits(out, ids), want, TOL["int4"], name)


def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run([oxport_bin(), "export", "onnx", "--model", str(REF / "checkpoints" / "phi3-tiny-random"),
                          str(out), "--dry-run"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "MatMulNBits" in res.stdout
    # The same per-tensor table as the OpenVINO dry run, with NNCF-style bitwidth statistics.
    assert "Statistics of the bitwidth distribution:" in res.stdout
    assert "oxport_manifest.json" in res.stdout
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags", [["--asym"], ["-e", "cuda"]], ids=["asym-uint4", "cuda-fp16"])
def test_qdq_variants_pass_checker_and_stay_close(tmp_path, flags):
    src = REF / "checkpoints" / "phi3-tiny-random"
    out = export(src, tmp_path / "qdq", "-p", "int4", "--block-size", "128", "--qdq", *flags)
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    ids = np.load(REF / "numerics" / "phi3-tiny-random" / "input_ids.npy")
    want = np.load(REF / "numerics" / "phi3-tiny-random" / "logits_fp32.npy")
    assert_close(ort_logits(out, ids), want, TOL["int4"], f"qdq {flags}")


def write_tied_checkpoint(src, dst):
    """phi3-tiny-random without lm_head.weight and with tie_word_embeddings=true."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json":
            (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((src / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (dst / "config.json").write_text(json.dumps(cfg))
    raw = (src / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out_header, chunks, offset = {}, [], 0
    for name, meta in header.items():
        if name in ("__metadata__", "lm_head.weight"):
            continue
        a, b = meta["data_offsets"]
        chunks.append(data[a:b])
        out_header[name] = {**meta, "data_offsets": [offset, offset + (b - a)]}
        offset += b - a
    blob = json.dumps(out_header).encode()
    blob += b" " * (-len(blob) % 8)
    (dst / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


@pytest.mark.parametrize("label,flags", [("fp32", ["-p", "fp32"]), ("int4", ["-p", "int4", "--block-size", "128"])])
def test_tied_embeddings_feed_lm_head(tmp_path, label, flags):
    ckpt = tmp_path / "tied"
    write_tied_checkpoint(REF / "checkpoints" / "phi3-tiny-random", ckpt)
    out = export(ckpt, tmp_path / "out", *flags)
    ids = np.load(REF / "numerics" / "phi3-tiny-random" / "input_ids.npy")[0]
    assert_close(ort_logits(out, ids), reference_logits(ckpt, ids), TOL[label], f"tied {label}")


def test_validate_finds_the_hub_checkpoint_through_the_manifest(tmp_path):
    """An export of a hub id records the id, the commit and the files' digests in oxport_manifest.json, so
    `oxport validate` finds the checkpoint in the Hugging Face cache without --reference, and refuses one whose files
    changed since the export."""
    import hashlib
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in sorted((ROOT / "fixtures" / "tiny").iterdir()):
        if f.name.endswith(".safetensors"):
            # LFS files live in blobs/ named by their sha256, the snapshot links to them (the hub cache layout).
            sha = hashlib.sha256(f.read_bytes()).hexdigest()
            shutil.copy(f, repo / "blobs" / sha)
            (snapshot / f.name).symlink_to(Path("../../blobs") / sha)
        else:
            shutil.copy(f, snapshot / f.name)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "onnx"
    r = subprocess.run([oxport_bin(), "export", "onnx", "--model", "org/tiny", str(out)], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "oxport_manifest.json").read_text())
    assert manifest["format"] == "onnx"
    assert manifest["source"]["model"] == "org/tiny" and manifest["source"]["revision"] == commit
    shards = {f["name"]: f["sha256"] for f in manifest["source"]["files"] if f["name"].endswith(".safetensors")}
    assert shards == {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                      for f in (ROOT / "fixtures" / "tiny").glob("*.safetensors")}
    assert {e["name"] for e in manifest["plan"]["entries"]} >= {"lm_head.weight", "model.embed_tokens.weight"}

    validate = [oxport_bin(), "validate", str(out), "--device", "cpu", "--quiet", "--max-new-tokens", "2"]
    r = subprocess.run(validate, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"reference {snapshot}" in r.stdout, r.stdout

    # A changed checkpoint file is named, and nothing is compared against it.
    cfg = json.loads((snapshot / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-3
    (snapshot / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run(validate, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode != 0 and "config.json differs" in r.stderr and "--reference" in r.stderr, r.stderr

    # Without the manifest the export names no checkpoint folder: --reference is needed.
    (out / "oxport_manifest.json").unlink()
    r = subprocess.run(validate, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode != 0 and "--reference" in r.stderr, r.stderr
