"""`oxport export openvino --awq` (no dataset) and optimum-cli's default int4 recipes against optimum-cli itself.

Runs in the peers' venv (`.venv-peers`: optimum-intel 2.2, nncf 3.4), which `cargo xtask test` creates once. optimum-cli
and oxport get the same command line; every weight constant of optimum-cli's model (weights, scales, zero points,
the `…/awq_mul/scale` constants) must be in oxport's with the same element type, shape and bytes, the other op types must
come in the same order, and the `awq_mul` Multiply nodes must be the same. The committed goldens
(`tests/golden/optimum_awq.json`, checked without Python by `tests/it/openvino/openvino_awq.rs`) cover asymmetric group 64 on
every checkpoint; this test adds the symmetric, per-channel (NPU) and mixed-precision modes, and the per-model
defaults of `--weight-format int4` given alone.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import openvino as ov
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ["OXPORT_BIN"]
MODELS = {
    "phi3-tiny-random": ROOT / "fixtures/reference/checkpoints/phi3-tiny-random",
    "tiny-phi4": ROOT / "fixtures/tiny-phi4",
}
MODES = {
    "sym-g128": ["--sym", "--group-size", "128", "--ratio", "1.0"],
    "sym-channel": ["--sym", "--group-size", "-1", "--ratio", "1.0"],
    "asym-g64-r0.8": ["--group-size", "64", "--ratio", "0.8"],
}


def run(tool, model_dir, out, flags):
    head = [BIN] if tool == "oxport" else [str(Path(sys.executable).parent / "optimum-cli")]
    cmd = [*head, "export", "openvino", "--model", str(model_dir), "--task", "text-generation-with-past",
           "--disable-convert-tokenizer", *flags, str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, f"{cmd}:\n{res.stderr[-3000:]}"
    return res.stderr


def assert_same_weights(ours_dir, theirs_dir):
    core = ov.Core()
    ours = core.read_model(str(ours_dir / "openvino_model.xml"))
    theirs = core.read_model(str(theirs_dir / "openvino_model.xml"))

    def weights(m):
        return {op.get_friendly_name(): op for op in m.get_ops() if op.get_type_name() == "Constant"
                and (op.get_friendly_name().startswith("self.") or "/awq_mul/" in op.get_friendly_name())}

    a, b = weights(ours), weights(theirs)
    assert sorted(a) == sorted(b)
    for name, c in b.items():
        o = a[name]
        assert (o.get_element_type(), list(o.get_shape())) == (c.get_element_type(), list(c.get_shape())), name
        assert o.get_data().tobytes() == c.get_data().tobytes(), f"{name}: bytes differ from optimum-cli's"
    # Constants aside (optimum shares a few small ones oxport writes twice), the ops come in the same order. Not
    # for LongRoPE checkpoints: the installed optimum-cli traces 4 more ops in the LongRoPE scaling than oxport's
    # graph (which follows the committed reference exports); the weights are the same either way.
    types = lambda m: [op.get_type_name() for op in m.get_ordered_ops() if op.get_type_name() != "Constant"]
    config = json.loads((theirs_dir / "config.json").read_text())
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if not rope.get("long_factor"):
        assert types(ours) == types(theirs)
    awq = lambda m: [op.get_friendly_name() for op in m.get_ordered_ops() if op.get_friendly_name().endswith("/awq_mul")]
    assert awq(ours) == awq(theirs)
    return awq(ours)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", MODELS)
def test_awq_modes_equal_optimum_cli(tmp_path, model, mode):
    flags = ["--weight-format", "int4", "--awq", *MODES[mode]]
    run("optimum-cli", MODELS[model], tmp_path / "optimum", flags)
    run("oxport", MODELS[model], tmp_path / "oxport", flags)
    assert assert_same_weights(tmp_path / "oxport", tmp_path / "optimum"), "no awq_mul node"


def test_int4_alone_on_a_folder_named_phi_3_5_mini_applies_optimums_default(tmp_path):
    """`--weight-format int4` and nothing else on a folder named like Phi-3.5-mini-instruct: optimum-cli applies its
    per-model default (data-free AWQ, asym, group 64, ratio 1.0); oxport, given the same command line, writes the
    same weights and says which default it applied."""
    model = tmp_path / "Phi-3.5-mini-instruct"
    shutil.copytree(ROOT / "fixtures" / "tiny", model)
    run("optimum-cli", model, tmp_path / "optimum", ["--weight-format", "int4"])
    note = run("oxport", model, tmp_path / "oxport", ["--weight-format", "int4"])
    assert "microsoft/Phi-3.5-mini-instruct" in note and "data-free AWQ" in note, note
    assert len(assert_same_weights(tmp_path / "oxport", tmp_path / "optimum")) == 2


def test_int4_alone_matched_by_name_or_path_and_the_generic_default(tmp_path):
    """`_name_or_path` in config.json selects Phi-4-mini's default; a folder no entry matches gets the generic one
    (asym, group 128, ratio 1.0, no AWQ). Both equal optimum-cli's output."""
    named = tmp_path / "some-checkpoint"
    shutil.copytree(ROOT / "fixtures" / "tiny-phi4", named)
    config = json.loads((named / "config.json").read_text())
    config["_name_or_path"] = "microsoft/Phi-4-mini-instruct"
    (named / "config.json").write_text(json.dumps(config))
    generic = tmp_path / "other-checkpoint"
    shutil.copytree(ROOT / "fixtures" / "tiny-gqa", generic)
    for src, awq_nodes in [(named, 2), (generic, 0)]:
        run("optimum-cli", src, tmp_path / f"{src.name}-optimum", ["--weight-format", "int4"])
        run("oxport", src, tmp_path / f"{src.name}-oxport", ["--weight-format", "int4"])
        got = assert_same_weights(tmp_path / f"{src.name}-oxport", tmp_path / f"{src.name}-optimum")
        assert len(got) == awq_nodes
