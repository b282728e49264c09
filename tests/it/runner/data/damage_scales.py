"""Damage an export's quantization scales in place, for the validation tests.

usage: damage_scales.py EXPORT_DIR

Every byte of every weight-scale tensor is XOR-ed with 0x5A: MatMulNBits `*_scales` initializers in the external data
of an ONNX export, `*/scale` Const layers in an OpenVINO IR's `.bin`. Prints how many bytes were changed.
"""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def flip(path: Path, spans) -> int:
    data = bytearray(path.read_bytes())
    n = 0
    for offset, length in spans:
        for i in range(offset, offset + length):
            data[i] ^= 0x5A
        n += length
    path.write_bytes(bytes(data))
    return n


def onnx_spans(out: Path):
    import onnx

    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    spans = {}
    for init in model.graph.initializer:
        if not init.name.endswith("_scales"):
            continue
        ext = {e.key: e.value for e in init.external_data}
        spans.setdefault(ext["location"], []).append((int(ext["offset"]), int(ext["length"])))
    return spans


def openvino_spans(out: Path):
    root = ET.parse(out / "openvino_model.xml").getroot()
    spans = []
    for layer in root.iter("layer"):
        if layer.get("type") == "Const" and layer.get("name", "").endswith("/scale"):
            data = layer.find("data")
            spans.append((int(data.get("offset")), int(data.get("size"))))
    return {"openvino_model.bin": spans}


def main() -> None:
    out = Path(sys.argv[1])
    spans = onnx_spans(out) if (out / "model.onnx").exists() else openvino_spans(out)
    total = sum(flip(out / name, s) for name, s in spans.items())
    if total == 0:
        sys.exit(f"{out}: no scale tensors found")
    print(total)


if __name__ == "__main__":
    main()
