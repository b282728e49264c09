//! The deterministic XML serializer, laid out like OpenVINO's own `ov::pass::Serialize`
//! (src/core/src/pass/serialize.cpp): tab indentation, `<data>` then `<rt_info>` then `<input>`/`<output>`,
//! output port ids continue after the input port ids, edges after the layers, model `<rt_info>` last.

use std::fmt::Write as _;

use super::{Edge, Layer, PortSpec, RtInfo};

/// `?,4,?,64` (Parameter and ReadValue spelling).
pub fn partial_shape(dims: &[i64]) -> String {
    dims.iter()
        .map(|&d| {
            if d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `768, 2, 128` (Const spelling; scalars are empty).
pub(super) fn static_shape(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Attribute escaping as OpenVINO's serializer (pugixml) writes it: `&`, `<`, `"` and control characters
/// (`&#10;`); `>` and `'` stay as they are (see the chat_template rt_info of the reference openvino_tokenizer.xml).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "&#{};", c as u32);
            }
            _ => out.push(c),
        }
    }
    out
}

fn write_port(x: &mut String, id: usize, p: &PortSpec) {
    let names = if p.names.is_empty() {
        String::new()
    } else {
        format!(" names=\"{}\"", escape(&p.names.join(",")))
    };
    if p.dims.is_empty() {
        let _ = writeln!(
            x,
            "\t\t\t\t<port id=\"{id}\" precision=\"{}\"{names} />",
            p.elem.precision()
        );
        return;
    }
    let _ = writeln!(
        x,
        "\t\t\t\t<port id=\"{id}\" precision=\"{}\"{names}>",
        p.elem.precision()
    );
    for d in &p.dims {
        let _ = writeln!(x, "\t\t\t\t\t<dim>{d}</dim>");
    }
    x.push_str("\t\t\t\t</port>\n");
}

fn write_rt(x: &mut String, node: &RtInfo, depth: usize) {
    let tabs = "\t".repeat(depth);
    match node {
        RtInfo::Value { tag, value } => {
            let _ = writeln!(x, "{tabs}<{tag} value=\"{}\" />", escape(value));
        }
        RtInfo::Empty { tag } => {
            let _ = writeln!(x, "{tabs}<{tag} />");
        }
        RtInfo::Group { tag, children } => {
            let _ = writeln!(x, "{tabs}<{tag}>");
            for c in children {
                write_rt(x, c, depth + 1);
            }
            let _ = writeln!(x, "{tabs}</{tag}>");
        }
    }
}

pub(super) fn to_xml(name: &str, layers: &[Layer], edges: &[Edge], rt_info: &[RtInfo]) -> String {
    let mut x = String::with_capacity(layers.len() * 600);
    x.push_str("<?xml version=\"1.0\"?>\n");
    let _ = writeln!(x, "<net name=\"{}\" version=\"11\">", escape(name));
    x.push_str("\t<layers>\n");
    for (id, l) in layers.iter().enumerate() {
        let extra = match &l.output_names_attr {
            Some(n) => format!(" output_names=\"{}\"", escape(n)),
            None => String::new(),
        };
        let _ = writeln!(
            x,
            "\t\t<layer id=\"{id}\" name=\"{}\" type=\"{}\" version=\"{}\"{extra}>",
            escape(&l.name),
            l.kind,
            l.version
        );
        if !l.data.is_empty() {
            x.push_str("\t\t\t<data");
            for (k, v) in &l.data {
                let _ = write!(x, " {k}=\"{}\"", escape(v));
            }
            x.push_str(" />\n");
        }
        if !l.rt_info.is_empty() {
            x.push_str("\t\t\t<rt_info>\n");
            for (attr, value) in &l.rt_info {
                match value {
                    Some(v) => {
                        let _ = writeln!(
                            x,
                            "\t\t\t\t<attribute name=\"{attr}\" version=\"0\" value=\"{}\" />",
                            escape(v)
                        );
                    }
                    None => {
                        let _ = writeln!(x, "\t\t\t\t<attribute name=\"{attr}\" version=\"0\" />");
                    }
                }
            }
            x.push_str("\t\t\t</rt_info>\n");
        }
        if !l.inputs.is_empty() {
            x.push_str("\t\t\t<input>\n");
            for (i, p) in l.inputs.iter().enumerate() {
                write_port(&mut x, i, p);
            }
            x.push_str("\t\t\t</input>\n");
        }
        if !l.outputs.is_empty() {
            x.push_str("\t\t\t<output>\n");
            for (i, p) in l.outputs.iter().enumerate() {
                write_port(&mut x, l.inputs.len() + i, p);
            }
            x.push_str("\t\t\t</output>\n");
        }
        x.push_str("\t\t</layer>\n");
    }
    x.push_str("\t</layers>\n\t<edges>\n");
    // OpenVINO writes edges grouped by producer; any order is read back, this one is stable.
    let mut sorted: Vec<&Edge> = edges.iter().collect();
    sorted.sort_by_key(|e| (e.from_layer, e.from_port, e.to_layer, e.to_port));
    for e in sorted {
        let from_port = layers[e.from_layer].inputs.len() + e.from_port;
        let _ = writeln!(
            x,
            "\t\t<edge from-layer=\"{}\" from-port=\"{from_port}\" to-layer=\"{}\" to-port=\"{}\" />",
            e.from_layer, e.to_layer, e.to_port
        );
    }
    x.push_str("\t</edges>\n");
    if !rt_info.is_empty() {
        x.push_str("\t<rt_info>\n");
        for node in rt_info {
            write_rt(&mut x, node, 2);
        }
        x.push_str("\t</rt_info>\n");
    }
    x.push_str("</net>\n");
    x
}
