//! A small OpenVINO IR v11 writer: a layer/edge graph builder whose constants stream into the `.bin` as they
//! are created, and a deterministic XML serializer laid out like OpenVINO's own `ov::pass::Serialize`
//! (src/core/src/pass/serialize.cpp: tab indentation, `<data>` then `<rt_info>` then `<input>`/`<output>`,
//! output port ids continue after the input port ids, edges after the layers, model `<rt_info>` last).

use std::path::Path;

use oxport_io::{BlobLayout, BlobWriter};

use crate::error::{Error, Result};

#[cfg(test)]
mod tests;
mod xml;

pub use xml::partial_shape;
use xml::{static_shape, to_xml};

/// A dynamic dimension (`?` in shapes, `-1` in `<dim>`).
pub const DYN: i64 = -1;

/// OpenVINO element types used by the Phi-3 graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    F32,
    F16,
    Bf16,
    I64,
    I32,
    I8,
    U8,
    I4,
    U4,
    Boolean,
    /// OpenVINO's `string` type (Parameters/ports only: constants never hold it here).
    String,
}

impl Elem {
    /// The `element_type` / `destination_type` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
            Elem::Bf16 => "bf16",
            Elem::I64 => "i64",
            Elem::I32 => "i32",
            Elem::I8 => "i8",
            Elem::U8 => "u8",
            Elem::I4 => "i4",
            Elem::U4 => "u4",
            Elem::Boolean => "boolean",
            Elem::String => "string",
        }
    }

    /// The port `precision` spelling.
    pub fn precision(self) -> &'static str {
        match self {
            Elem::F32 => "FP32",
            Elem::F16 => "FP16",
            Elem::Bf16 => "BF16",
            Elem::I64 => "I64",
            Elem::I32 => "I32",
            Elem::I8 => "I8",
            Elem::U8 => "U8",
            Elem::I4 => "I4",
            Elem::U4 => "U4",
            Elem::Boolean => "BOOL",
            Elem::String => "STRING",
        }
    }

    /// Bytes for `numel` elements (4-bit types pack two per byte, rounded up).
    pub fn bytes_for(self, numel: usize) -> usize {
        match self {
            Elem::F32 | Elem::I32 => 4 * numel,
            Elem::F16 | Elem::Bf16 => 2 * numel,
            Elem::I64 => 8 * numel,
            Elem::I8 | Elem::U8 | Elem::Boolean => numel,
            Elem::I4 | Elem::U4 => numel.div_ceil(2),
            Elem::String => 0,
        }
    }
}

/// One output of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Out {
    pub layer: usize,
    pub index: usize,
}

#[derive(Clone, Debug)]
struct PortSpec {
    elem: Elem,
    dims: Vec<i64>,
    names: Vec<String>,
}

#[derive(Clone, Debug)]
struct Layer {
    name: String,
    kind: &'static str,
    version: &'static str,
    data: Vec<(&'static str, String)>,
    rt_info: Vec<(&'static str, Option<String>)>,
    inputs: Vec<PortSpec>,
    outputs: Vec<PortSpec>,
    output_names_attr: Option<String>,
}

#[derive(Clone, Copy, Debug)]
struct Edge {
    from_layer: usize,
    from_port: usize,
    to_layer: usize,
    to_port: usize,
}

/// Model-level `<rt_info>` entries, written in insertion order.
#[derive(Clone, Debug, PartialEq)]
pub enum RtInfo {
    /// `<tag value="…" />`.
    Value { tag: String, value: String },
    /// `<tag> children </tag>`.
    Group { tag: String, children: Vec<RtInfo> },
    /// `<tag />`: an entry whose value is Python's `None` (openvino-tokenizers writes these).
    Empty { tag: String },
}

impl RtInfo {
    pub fn value(tag: &str, value: impl Into<String>) -> Self {
        RtInfo::Value {
            tag: tag.into(),
            value: value.into(),
        }
    }
    pub fn group(tag: &str, children: Vec<RtInfo>) -> Self {
        RtInfo::Group {
            tag: tag.into(),
            children,
        }
    }
}

/// The `.bin` side: constants are appended as they are created, tightly packed (OpenVINO's serializer writes no
/// padding), and small constants with identical bytes share one offset as OpenVINO's `ConstantWriter` does.
/// Offsets are assigned in call order; oxport-io's writer thread does the `write()` calls in that same order, so
/// the kernel's copy of a finished weight into the page cache overlaps the compression of the next one.
const BIN_LAYOUT: BlobLayout = BlobLayout {
    align_above: None,
    dedup_up_to: Some(DEDUP_MAX_BYTES),
};

/// Constants up to this size are de-duplicated (the shape/index constants); weights are always written.
const DEDUP_MAX_BYTES: usize = 256;
/// Buffers queued for the writer thread beyond the one it is writing (bounds the memory held for writing).
const QUEUED_BUFFERS: usize = 1;

/// A graph under construction whose weights are already on disk.
pub struct Graph {
    name: String,
    layers: Vec<Layer>,
    edges: Vec<Edge>,
    bin: BlobWriter,
    rt_info: Vec<RtInfo>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("layers", &self.layers.len())
            .field("bin", &self.bin.path())
            .finish()
    }
}

impl Graph {
    /// Start a graph whose constants go to `bin_path` (created, truncated).
    pub fn create(name: &str, bin_path: &Path) -> Result<Self> {
        Ok(Graph {
            name: name.into(),
            layers: Vec::new(),
            edges: Vec::new(),
            bin: BlobWriter::create(bin_path, "oxport-ir-bin", QUEUED_BUFFERS, BIN_LAYOUT)?,
            rt_info: Vec::new(),
        })
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    pub fn elem(&self, o: Out) -> Elem {
        self.layers[o.layer].outputs[o.index].elem
    }

    pub fn dims(&self, o: Out) -> &[i64] {
        &self.layers[o.layer].outputs[o.index].dims
    }

    fn push(&mut self, mut layer: Layer, inputs: &[Out]) -> usize {
        let id = self.layers.len();
        if layer.name.is_empty() {
            layer.name = format!("{}_{id}", layer.kind);
        }
        for (to_port, src) in inputs.iter().enumerate() {
            layer.inputs.push(PortSpec {
                elem: self.elem(*src),
                dims: self.dims(*src).to_vec(),
                names: vec![],
            });
            self.edges.push(Edge {
                from_layer: src.layer,
                from_port: src.index,
                to_layer: id,
                to_port,
            });
        }
        self.layers.push(layer);
        id
    }

    /// `Parameter` (opset1) named `name`, whose tensor name is also `name`.
    pub fn parameter(&mut self, name: &str, elem: Elem, dims: &[i64]) -> Out {
        let layer = Layer {
            name: name.into(),
            kind: "Parameter",
            version: "opset1",
            data: vec![
                ("shape", partial_shape(dims)),
                ("element_type", elem.name().into()),
            ],
            rt_info: vec![],
            inputs: vec![],
            outputs: vec![PortSpec {
                elem,
                dims: dims.to_vec(),
                names: vec![name.into()],
            }],
            output_names_attr: None,
        };
        Out {
            layer: self.push(layer, &[]),
            index: 0,
        }
    }

    /// `Const` with `bytes` already in the IR's element layout (4-bit packed low nibble first), appended to the bin now.
    pub fn constant(
        &mut self,
        name: &str,
        elem: Elem,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<Out> {
        check_constant_size(name, elem, shape, bytes.len())?;
        // ov::pass::Serialize stores an empty constant as one zero byte (size 1), e.g. the empty replacement of
        // openvino-tokenizers' Strip decoder.
        let stored: &[u8] = if bytes.is_empty() { &[0] } else { bytes };
        let offset = self.bin.append(stored)?;
        Ok(self.push_constant(name, elem, shape, offset, stored.len()))
    }

    /// [`constant`](Self::constant) of an owned weight buffer, handed to the writer thread without a copy (and not
    /// de-duplicated; only small constants are). Fill one from [`buffer`](Self::buffer) to reuse written memory.
    pub fn constant_owned(
        &mut self,
        name: &str,
        elem: Elem,
        shape: &[usize],
        bytes: Vec<u8>,
    ) -> Result<Out> {
        check_constant_size(name, elem, shape, bytes.len())?;
        if bytes.len() <= DEDUP_MAX_BYTES {
            return self.constant(name, elem, shape, &bytes);
        }
        let size = bytes.len();
        let offset = self.bin.append_owned(bytes)?;
        Ok(self.push_constant(name, elem, shape, offset, size))
    }

    /// A buffer to fill for [`constant_owned`](Self::constant_owned) or [`constant_piece`](Self::constant_piece):
    /// a written one when available (its length and contents are stale: resize and overwrite it), else a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.bin.buffer()
    }

    /// Start a large constant written as consecutive owned pieces ([`constant_piece`](Self::constant_piece)) and
    /// closed with [`end_constant`](Self::end_constant), so a weight is converted and written chunk by chunk.
    /// Returns its offset.
    pub fn begin_constant(&mut self) -> Result<u64> {
        Ok(self.bin.offset())
    }

    /// The next bytes of the constant begun with [`begin_constant`](Self::begin_constant), without a copy.
    pub fn constant_piece(&mut self, bytes: Vec<u8>) -> Result<()> {
        Ok(self.bin.write_owned(bytes)?)
    }

    /// The `Const` whose bytes were written since `start` (from [`begin_constant`](Self::begin_constant)).
    pub fn end_constant(
        &mut self,
        name: &str,
        elem: Elem,
        shape: &[usize],
        start: u64,
    ) -> Result<Out> {
        let size = (self.bin.offset() - start) as usize;
        check_constant_size(name, elem, shape, size)?;
        Ok(self.push_constant(name, elem, shape, start, size))
    }

    fn push_constant(
        &mut self,
        name: &str,
        elem: Elem,
        shape: &[usize],
        offset: u64,
        size: usize,
    ) -> Out {
        let layer = Layer {
            name: name.into(),
            kind: "Const",
            version: "opset1",
            data: vec![
                ("element_type", elem.name().into()),
                ("shape", static_shape(shape)),
                ("offset", offset.to_string()),
                ("size", size.to_string()),
            ],
            rt_info: vec![],
            inputs: vec![],
            outputs: vec![PortSpec {
                elem,
                dims: shape.iter().map(|&d| d as i64).collect(),
                names: vec![],
            }],
            output_names_attr: None,
        };
        Out {
            layer: self.push(layer, &[]),
            index: 0,
        }
    }

    /// Any operation: `kind`/`version` as OpenVINO names them, `name` (empty: `<kind>_<id>`), attributes in the order
    /// OpenVINO's visitor writes them, and the output element types and shapes.
    pub fn op(
        &mut self,
        kind: &'static str,
        version: &'static str,
        name: &str,
        inputs: &[Out],
        data: &[(&'static str, &str)],
        outputs: &[(Elem, &[i64])],
    ) -> Vec<Out> {
        let layer = Layer {
            name: name.into(),
            kind,
            version,
            data: data.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            rt_info: vec![],
            inputs: vec![],
            outputs: outputs
                .iter()
                .map(|(elem, dims)| PortSpec {
                    elem: *elem,
                    dims: dims.to_vec(),
                    names: vec![],
                })
                .collect(),
            output_names_attr: None,
        };
        let id = self.push(layer, inputs);
        (0..outputs.len())
            .map(|index| Out { layer: id, index })
            .collect()
    }

    /// [`Graph::op`] with exactly one output.
    pub fn op1(
        &mut self,
        kind: &'static str,
        version: &'static str,
        name: &str,
        inputs: &[Out],
        data: &[(&'static str, &str)],
        output: (Elem, &[i64]),
    ) -> Out {
        self.op(kind, version, name, inputs, data, &[output])[0]
    }

    /// An op with no outputs (`Assign`).
    pub fn sink(
        &mut self,
        kind: &'static str,
        version: &'static str,
        name: &str,
        inputs: &[Out],
        data: &[(&'static str, &str)],
    ) {
        self.op(kind, version, name, inputs, data, &[]);
    }

    /// `Result` (opset1) carrying `output_names` like OpenVINO 2026 writes it.
    pub fn result(&mut self, name: &str, input: Out, tensor_name: &str) {
        let layer = Layer {
            name: name.into(),
            kind: "Result",
            version: "opset1",
            data: vec![],
            rt_info: vec![],
            inputs: vec![],
            outputs: vec![],
            output_names_attr: Some(tensor_name.into()),
        };
        self.push(layer, &[input]);
    }

    /// Add a tensor name to an output port.
    pub fn name_tensor(&mut self, o: Out, name: &str) {
        self.layers[o.layer].outputs[o.index]
            .names
            .push(name.into());
    }

    /// Per-node rt_info attribute (`<attribute name=… version="0" [value=…] />`), e.g. `decompression`.
    pub fn mark(&mut self, o: Out, attribute: &'static str, value: Option<&str>) {
        self.layers[o.layer]
            .rt_info
            .push((attribute, value.map(str::to_string)));
    }

    pub fn set_rt_info(&mut self, rt_info: Vec<RtInfo>) {
        self.rt_info = rt_info;
    }

    /// Flush the bin and write the XML to `xml_path`.
    pub fn finish(self, xml_path: &Path) -> Result<()> {
        self.bin.finish()?;
        let xml = to_xml(&self.name, &self.layers, &self.edges, &self.rt_info);
        std::fs::write(xml_path, xml).map_err(|e| Error::io(xml_path, e))
    }
}

/// A constant's bytes must hold exactly `elem` × `shape`.
fn check_constant_size(name: &str, elem: Elem, shape: &[usize], len: usize) -> Result<()> {
    let numel: usize = shape.iter().product();
    if elem.bytes_for(numel) != len {
        return Err(Error::Graph(format!(
            "constant {name}: {len} bytes do not hold {} [{}]",
            elem.name(),
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}
