//! A text form of the graph without weight data: one line per layer in creation order (id, type, version, name,
//! inputs as `layer.port`, attributes, rt_info marks, output element types and shapes with tensor names); small
//! constants show their value (or, past 16 elements, their size and an FNV-1a digest), deferred ones their source.
//! It is what the graph builder produces before any weight is read, for snapshots and debugging.

use std::fmt::Write as _;

use super::{ConstData, Elem, Graph, RtInfo, xml::partial_shape};

/// Values printed in full up to this many elements.
const MAX_VALUES: usize = 16;

impl<D: std::fmt::Display> Graph<D> {
    /// The graph as text (see the module doc); the same for the same ops and sources, whatever the weights hold.
    pub fn to_text(&self) -> String {
        let mut inputs: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); self.layers.len()];
        for e in &self.edges {
            inputs[e.to_layer].push((e.to_port, e.from_layer, e.from_port));
        }
        let mut constants = vec![None; self.layers.len()];
        for c in &self.constants {
            constants[c.layer] = Some(c);
        }
        let mut x = String::new();
        let _ = writeln!(x, "net {}", self.name);
        for (id, l) in self.layers.iter().enumerate() {
            let _ = write!(x, "{id} {}:{} {:?}", l.kind, l.version, l.name);
            let mut ins = inputs[id].clone();
            ins.sort_unstable();
            if !ins.is_empty() {
                let list: Vec<String> = ins.iter().map(|(_, l, p)| format!("{l}.{p}")).collect();
                let _ = write!(x, " ({})", list.join(", "));
            }
            let data: Vec<String> = l
                .data
                .iter()
                .filter(|(k, _)| !matches!(*k, "offset" | "size"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !data.is_empty() {
                let _ = write!(x, " {{{}}}", data.join(", "));
            }
            for (attr, value) in &l.rt_info {
                match value {
                    Some(v) => {
                        let _ = write!(x, " @{attr}={v:?}");
                    }
                    None => {
                        let _ = write!(x, " @{attr}");
                    }
                }
            }
            if let Some(n) = &l.output_names_attr {
                let _ = write!(x, " output_names={n:?}");
            }
            for p in &l.outputs {
                let _ = write!(x, " -> {}[{}]", p.elem.name(), partial_shape(&p.dims));
                if !p.names.is_empty() {
                    let _ = write!(x, " {:?}", p.names.join(","));
                }
            }
            if let Some(c) = constants[id] {
                match &c.data {
                    ConstData::Bytes(bytes) => {
                        let _ = write!(x, " = {}", value_text(c.elem, bytes));
                    }
                    ConstData::Deferred(source) => {
                        let _ = write!(x, " <- {source}");
                    }
                }
            }
            x.push('\n');
        }
        for node in &self.rt_info {
            rt_text(&mut x, node, 0);
        }
        x
    }
}

fn rt_text(x: &mut String, node: &RtInfo, depth: usize) {
    let indent = "  ".repeat(depth);
    match node {
        RtInfo::Value { tag, value } => {
            let _ = writeln!(x, "rt {indent}{tag} = {value:?}");
        }
        RtInfo::Empty { tag } => {
            let _ = writeln!(x, "rt {indent}{tag}");
        }
        RtInfo::Group { tag, children } => {
            let _ = writeln!(x, "rt {indent}{tag}:");
            for c in children {
                rt_text(x, c, depth + 1);
            }
        }
    }
}

/// `[v, …]` for a few values of a numeric type; otherwise the size and an FNV-1a 64 digest of the bytes.
fn value_text(elem: Elem, bytes: &[u8]) -> String {
    let width = match elem {
        Elem::F32 | Elem::I32 => 4,
        Elem::F16 | Elem::Bf16 => 2,
        Elem::I64 => 8,
        Elem::I8 | Elem::U8 | Elem::Boolean => 1,
        Elem::I4 | Elem::U4 | Elem::String => 0,
    };
    if width == 0 || bytes.len() / width > MAX_VALUES || !bytes.len().is_multiple_of(width) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        return format!("<{} bytes fnv1a {h:016x}>", bytes.len());
    }
    let values: Vec<String> = bytes
        .chunks_exact(width)
        .map(|c| match elem {
            Elem::F32 => format!("{:?}", f32::from_le_bytes(c.try_into().unwrap())),
            Elem::F16 => format!("{:?}", half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            Elem::Bf16 => format!("{:?}", half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            Elem::I32 => i32::from_le_bytes(c.try_into().unwrap()).to_string(),
            Elem::I64 => i64::from_le_bytes(c.try_into().unwrap()).to_string(),
            Elem::I8 => (c[0] as i8).to_string(),
            _ => c[0].to_string(),
        })
        .collect();
    format!("[{}]", values.join(", "))
}
