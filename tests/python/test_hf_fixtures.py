"""The committed tiny fixtures (`cargo xtask fixtures`) load in the Hugging Face `tokenizers` package, and their
shards are well-formed safetensors that agree with the index and config (read with numpy, no torch)."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ["tiny", "tiny-gqa", "tiny-longrope", "tiny-odd", "tiny-phi4"]
SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


@pytest.mark.parametrize("name", FIXTURES)
def test_tokenizer_loads_and_round_trips(name):
    d = ROOT / "fixtures" / name
    config = json.loads((d / "config.json").read_text())
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    vocab = config["vocab_size"]
    assert tok.get_vocab_size() == vocab
    assert [tok.token_to_id(s) for s in SPECIALS] == list(range(vocab - 5, vocab))
    assert config["eos_token_id"] == vocab - 5
    text = "<|system|>\nBe brief.<|end|>\n<|user|>\nHello world, the quick brown fox — 42 ünïcode!<|end|>\n<|assistant|>\n"
    enc = tok.encode(text)
    assert enc.ids[0] == 1  # <s>
    assert max(enc.ids) < vocab
    assert tok.decode(enc.ids, skip_special_tokens=False) == "<s>" + text
    # Byte-level BPE: merges survived the cut, so common words are single tokens, not bytes.
    assert len(tok.encode(" the").ids) == 2


@pytest.mark.parametrize("name", FIXTURES)
def test_shards_agree_with_index_and_config(name):
    d = ROOT / "fixtures" / name
    config = json.loads((d / "config.json").read_text())
    index = json.loads((d / "model.safetensors.index.json").read_text())
    seen = {}
    shapes = {}
    total = 0
    for shard in sorted(set(index["weight_map"].values())):
        raw = (d / shard).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        header.pop("__metadata__")
        for tname, info in header.items():
            assert info["dtype"] == "BF16"
            start, end = info["data_offsets"]
            assert end - start == 2 * int(np.prod(info["shape"]))
            bits = np.frombuffer(raw[8 + n + start : 8 + n + end], dtype="<u2").astype(np.uint32) << 16
            values = bits.view(np.float32)
            assert np.isfinite(values).all()
            if tname.endswith("norm.weight"):
                assert abs(values.mean() - 1.0) < 0.05 and 0.05 < values.std() < 0.15
            else:
                assert abs(values.mean()) < 0.002 and 0.015 < values.std() < 0.025
            seen[tname] = shard
            shapes[tname] = info["shape"]
            total += end - start
    assert seen == index["weight_map"]
    assert total == index["metadata"]["total_size"]
    h = config["hidden_size"]
    kv = config["num_key_value_heads"] * (h // config["num_attention_heads"])
    assert shapes["model.layers.0.self_attn.qkv_proj.weight"] == [h + 2 * kv, h]
    if config["tie_word_embeddings"]:
        assert "lm_head.weight" not in shapes  # Phi-4-mini layout: lm_head is the embedding
    else:
        assert shapes["lm_head.weight"] == [config["vocab_size"], h]
