"""Golden constants for data-free AWQ: what optimum-cli 2.2 + NNCF 3.4 write for
`optimum-cli export openvino --weight-format int4 --group-size 64 --ratio 1.0 --awq` (no dataset: NNCF's data-free
AWQ; asymmetric group 64 ratio 1.0 is optimum-intel's default for Phi-3.5-mini and Phi-4-mini).

For every reference checkpoint and tiny fixture, optimum-cli exports it, and every named Constant of the result is
recorded as element type, shape and sha256 of its bytes, with the names of the inserted `awq_mul` Multiply nodes.
`tests/it/openvino/openvino_awq.rs` checks oxport's own `--awq` export against this file (CI, no Python);
`tests/python_peers/test_nncf_awq.py` runs optimum-cli live for more modes.

optimum hands NNCF the weights in the checkpoint's precision (bf16 constants here), not the fp32 IR: NNCF writes the
rescaled weight back into a bf16 constant (OpenVINO's rounding) before compressing it, so NNCF run on an fp32 IR
gives other down_proj bytes.

Run from the repository root, in the peers' venv (`cargo xtask test` creates `.venv-peers`):

    .venv-peers/bin/python tests/golden/make_awq_golden.py

It rewrites tests/golden/optimum_awq.json (sorted keys: regenerating with the same versions changes nothing).
"""

import hashlib
import json
import os
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


FLAGS = ["--weight-format", "int4", "--group-size", "64", "--ratio", "1.0", "--awq"]


def optimum_cli(model_dir, out, flags):
    """optimum-cli from the venv this runs in, offline, on a local checkpoint."""
    cli = Path(sys.executable).parent / "optimum-cli"
    cmd = [str(cli), "export", "openvino", "--model", str(model_dir), "--task", "text-generation-with-past",
           "--disable-convert-tokenizer", *flags, str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, f"{cmd}:\n{res.stderr[-3000:]}"
    return out


def named_constants(model_dir):
    """name -> (element type as the IR writes it, shape, sha256) for every weight constant (`self.…`: weights, their
    scales and zero points) and every `…/awq_mul/scale`."""
    import openvino as ov

    m = ov.Core().read_model(str(model_dir / "openvino_model.xml"))
    out = {}
    for op in m.get_ops():
        name = op.get_friendly_name()
        if op.get_type_name() != "Constant" or not (name.startswith("self.") or "/awq_mul/" in name):
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
    from importlib.metadata import version

    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            dst = optimum_cli(ROOT / MODELS[model], Path(tmp) / model, FLAGS)
            cases[model] = {"flags": " ".join(FLAGS),
                            "constants": named_constants(dst), "awq_mul": awq_ops(dst)}
            print(model, len(cases[model]["constants"]), "constants", file=sys.stderr)
    out = ROOT / "tests" / "golden" / "optimum_awq.json"
    out.write_text(json.dumps({"generator": f"optimum-intel {version('optimum-intel')}, nncf {version('nncf')}", "cases": cases}, indent=1, sort_keys=True) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
