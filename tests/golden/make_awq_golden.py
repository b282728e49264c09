"""Golden constants for data-free AWQ: what NNCF 3.4 writes for `compress_weights(awq=True)` without a dataset.

For every reference checkpoint and tiny fixture: oxport exports the fp32 IR (the graph optimum-cli traces, which
optimum then hands to NNCF), NNCF 3.4 compresses it with data-free AWQ (int4 asymmetric, group 64, ratio 1.0: the
optimum-intel default for Phi-3.5-mini and Phi-4-mini), and every named Constant of the result is recorded as element
type, shape and sha256 of its bytes, with the names of the inserted `awq_mul` Multiply nodes. `tests/tests/openvino_awq.rs`
checks oxport's own `--awq` export against this file (CI, no Python); `tests/python_peers/test_nncf_awq.py` runs NNCF
live for more modes.

Run from the repository root, in the peers' venv (`cargo xtask test` creates `.venv-peers`), with the oxport binary:

    OXPORT_BIN=target/release/oxport .venv-peers/bin/python tests/golden/make_awq_golden.py

It rewrites tests/golden/nncf_awq.json (sorted keys: regenerating with the same versions changes nothing).
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "phi3-tiny-random": "fixtures/reference/checkpoints/phi3-tiny-random",
    "phi3-tiny-gqa": "fixtures/reference/checkpoints/phi3-tiny-gqa",
    "phi3-tiny-k320": "fixtures/reference/checkpoints/phi3-tiny-k320",
    "tiny": "fixtures/tiny",
    "tiny-gqa": "fixtures/tiny-gqa",
    "tiny-longrope": "fixtures/tiny-longrope",
    "tiny-odd": "fixtures/tiny-odd",
    "tiny-phi4": "fixtures/tiny-phi4",
}
AUTO_NAME = re.compile(r"Const(ant)?_\d+")


def fp32_ir(model, out):
    cmd = [os.environ["OXPORT_BIN"], "export", "openvino", "--model", str(ROOT / MODELS[model]),
           "--weight-format", "fp32", "--no-tokenizer", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def nncf_awq(src, dst, mode="int4_asym", group_size=64, ratio=1.0):
    import nncf
    import openvino as ov

    m = ov.Core().read_model(str(src / "openvino_model.xml"))
    mode = {"int4_asym": nncf.CompressWeightsMode.INT4_ASYM, "int4_sym": nncf.CompressWeightsMode.INT4_SYM}[mode]
    cm = nncf.compress_weights(m, mode=mode, group_size=group_size, ratio=ratio, awq=True)
    dst.mkdir(parents=True, exist_ok=True)
    ov.save_model(cm, str(dst / "openvino_model.xml"), compress_to_fp16=False)
    return dst


def named_constants(model_dir):
    """name -> (element type as the IR writes it, shape, sha256) for every Constant not auto-named."""
    import openvino as ov

    m = ov.Core().read_model(str(model_dir / "openvino_model.xml"))
    out = {}
    for op in m.get_ops():
        name = op.get_friendly_name()
        if op.get_type_name() != "Constant" or AUTO_NAME.fullmatch(name):
            continue
        data = op.get_data()
        out[name] = {"type": op.get_element_type().get_type_name(), "shape": list(op.get_shape()),
                     "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    return out


def awq_ops(model_dir):
    import openvino as ov

    m = ov.Core().read_model(str(model_dir / "openvino_model.xml"))
    return [op.get_friendly_name() for op in m.get_ordered_ops() if op.get_friendly_name().endswith("/awq_mul")]


def main():
    import nncf

    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            src = fp32_ir(model, Path(tmp) / model / "fp32")
            dst = nncf_awq(src, Path(tmp) / model / "nncf")
            cases[model] = {"flags": "--weight-format int4 --group-size 64 --ratio 1.0 --awq",
                            "constants": named_constants(dst), "awq_mul": awq_ops(dst)}
            print(model, len(cases[model]["constants"]), "constants", file=sys.stderr)
    out = ROOT / "tests" / "golden" / "nncf_awq.json"
    out.write_text(json.dumps({"generator": f"nncf {nncf.__version__}", "cases": cases}, indent=1, sort_keys=True) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
