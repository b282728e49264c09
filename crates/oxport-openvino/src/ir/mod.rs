//! A small OpenVINO IR v11 writer in two phases: a layer/edge graph builder that does no I/O (small constants keep
//! their bytes, weights are *deferred*: the caller says where their bytes will come from), then [`Graph::write_bin`],
//! which walks the constants in creation order, asks the caller for each deferred one's bytes and streams them into
//! the `.bin`, and a deterministic XML serializer laid out like OpenVINO's own `ov::pass::Serialize`
//! (src/core/src/pass/serialize.cpp: tab indentation, `<data>` then `<rt_info>` then `<input>`/`<output>`,
//! output port ids continue after the input port ids, edges after the layers, model `<rt_info>` last).
//! [`Graph::to_text`] prints the graph without any weight data.

use std::path::Path;

use oxport_io::BlobLayout;

use crate::error::{Error, Result};

mod bin;
#[cfg(test)]
mod tests;
mod text;
mod xml;

pub use bin::ConstSink;

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

/// The `.bin` side: constants are appended in creation order, tightly packed (OpenVINO's serializer writes no
/// padding), and small constants with identical bytes share one offset as OpenVINO's `ConstantWriter` does.
/// Offsets are assigned in that order while [`Graph::write_bin`] streams; oxport-io's writer thread does the
/// `write()` calls in the same order, so the kernel's copy of a finished weight into the page cache overlaps the
/// compression of the next one.
const BIN_LAYOUT: BlobLayout = BlobLayout {
    align_above: None,
    dedup_up_to: Some(DEDUP_MAX_BYTES),
};

/// Constants up to this size are de-duplicated (the shape/index constants); weights are always written.
const DEDUP_MAX_BYTES: usize = 256;
/// Buffers queued for the writer thread beyond the one it is writing (bounds the memory held for writing).
const QUEUED_BUFFERS: usize = 1;

/// The deferred source of a graph whose constants all hold their bytes (the tokenizer graphs): it has no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoDeferred {}

impl std::fmt::Display for NoDeferred {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

/// Where a constant's bytes come from.
#[derive(Clone, Debug)]
enum ConstData<D> {
    /// Held in the graph (shapes, axes, RoPE tables…), already in the IR's element layout.
    Bytes(Vec<u8>),
    /// Produced while the `.bin` is streamed, by the caller of [`Graph::write_bin`].
    Deferred(D),
}

/// One `Const` layer's payload, in creation order (the `.bin` order).
#[derive(Clone, Debug)]
struct Constant<D> {
    layer: usize,
    elem: Elem,
    shape: Vec<usize>,
    data: ConstData<D>,
}

/// A graph under construction: ops, names, shapes and element types, and constants whose bytes are either held
/// or deferred (`D` says where a weight's bytes will come from). No file is touched until
/// [`write_bin`](Self::write_bin).
pub struct Graph<D = NoDeferred> {
    name: String,
    layers: Vec<Layer>,
    edges: Vec<Edge>,
    constants: Vec<Constant<D>>,
    rt_info: Vec<RtInfo>,
}

impl<D> std::fmt::Debug for Graph<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("name", &self.name)
            .field("layers", &self.layers.len())
            .field("constants", &self.constants.len())
            .finish()
    }
}

impl<D> Graph<D> {
    /// An empty graph named `name` (the `<net name>`).
    pub fn new(name: &str) -> Self {
        Graph {
            name: name.into(),
            layers: Vec::new(),
            edges: Vec::new(),
            constants: Vec::new(),
            rt_info: Vec::new(),
        }
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

    /// `Const` holding `bytes`, already in the IR's element layout (4-bit packed low nibble first); they go to
    /// the bin, in creation order, when it is written.
    pub fn constant(
        &mut self,
        name: &str,
        elem: Elem,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<Out> {
        check_constant_size(name, elem, shape, bytes.len())?;
        Ok(self.push_constant(name, elem, shape, ConstData::Bytes(bytes.to_vec())))
    }

    /// `Const` whose bytes `source` names: [`write_bin`](Self::write_bin) asks for them when it reaches this
    /// constant (creation order), and checks that they hold `elem` × `shape`.
    pub fn deferred(&mut self, name: &str, elem: Elem, shape: &[usize], source: D) -> Out {
        self.push_constant(name, elem, shape, ConstData::Deferred(source))
    }

    fn push_constant(
        &mut self,
        name: &str,
        elem: Elem,
        shape: &[usize],
        data: ConstData<D>,
    ) -> Out {
        let layer = Layer {
            name: name.into(),
            kind: "Const",
            version: "opset1",
            // `offset` and `size` follow when the bin is written.
            data: vec![
                ("element_type", elem.name().into()),
                ("shape", static_shape(shape)),
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
        let id = self.push(layer, &[]);
        self.constants.push(Constant {
            layer: id,
            elem,
            shape: shape.to_vec(),
            data,
        });
        Out {
            layer: id,
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

    /// Write the XML to `xml_path`, after [`write_bin`](Self::write_bin) gave every constant its offset.
    pub fn write_xml(&self, xml_path: &Path) -> Result<()> {
        if let Some(c) = self.constants.iter().find(|c| {
            !self.layers[c.layer]
                .data
                .iter()
                .any(|(k, _)| *k == "offset")
        }) {
            return Err(Error::Graph(format!(
                "constant {}: the XML is written before the bin",
                self.layers[c.layer].name
            )));
        }
        let xml = to_xml(&self.name, &self.layers, &self.edges, &self.rt_info);
        std::fs::write(xml_path, xml).map_err(|e| Error::io(xml_path, e))
    }
}

impl Graph<NoDeferred> {
    /// A graph whose constants all hold their bytes: the bin to `bin_path`, then the XML to `xml_path`.
    pub fn write(mut self, bin_path: &Path, xml_path: &Path) -> Result<()> {
        self.write_bin(bin_path, |never, _| match *never {})?;
        self.write_xml(xml_path)
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
