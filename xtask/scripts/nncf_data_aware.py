"""The peer of oxport's data-aware cases in `cargo xtask bench`: what `optimum-cli export openvino --weight-format int4
--awq --dataset …` does, run offline on a local calibration text (optimum-cli only takes hub datasets).

1. optimum-cli exports the fp32 IR (`--weight-format fp32`);
2. the calibration windows are built as optimum-intel builds them for wikitext2
   (`optimum/intel/openvino/quantization.py`: tokenize the text once, `random.seed(0)`, `nsamples` windows of
   `seq_len` tokens at `random.randint(0, len - seq_len - 1)`), which is also what oxport does with the same file;
3. `nncf.compress_weights(..., awq=True, scale_estimation=…, dataset=…)` compresses it, as optimum-intel calls it.

usage: nncf_data_aware.py MODEL OUT --text FILE [--num-samples 128] [--seq-len 32] [--group-size 64] [--sym]
       [--no-awq] [--scale-estimation]
"""

import argparse
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--text", required=True)
    p.add_argument("--num-samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--sym", action="store_true")
    p.add_argument("--no-awq", action="store_true")
    p.add_argument("--scale-estimation", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    fp32 = out.with_name(out.name + "-fp32")
    cli = Path(sys.executable).parent / "optimum-cli"
    subprocess.run([str(cli), "export", "openvino", "--model", a.model, "--task", "text-generation-with-past",
                    "--weight-format", "fp32", str(fp32)], check=True)

    import nncf
    import openvino as ov
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(a.model)(Path(a.text).read_text())["input_ids"]
    random.seed(0)
    samples = []
    for _ in range(a.num_samples):
        i = random.randint(0, len(ids) - a.seq_len - 1)
        w = ids[i:i + a.seq_len]
        samples.append({
            "input_ids": np.array([w], dtype=np.int64),
            "attention_mask": np.ones((1, a.seq_len), dtype=np.int64),
            "position_ids": np.arange(a.seq_len, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        })
    model = ov.Core().read_model(str(fp32 / "openvino_model.xml"))
    mode = nncf.CompressWeightsMode.INT4_SYM if a.sym else nncf.CompressWeightsMode.INT4_ASYM
    compressed = nncf.compress_weights(model, mode=mode, group_size=a.group_size, ratio=1.0, awq=not a.no_awq,
                                       scale_estimation=a.scale_estimation, dataset=nncf.Dataset(samples),
                                       subset_size=a.num_samples)
    ov.save_model(compressed, str(out / "openvino_model.xml"))
    for f in fp32.iterdir():
        if not f.name.startswith("openvino_model"):
            shutil.copy(f, out / f.name)
    shutil.rmtree(fp32)


if __name__ == "__main__":
    main()
