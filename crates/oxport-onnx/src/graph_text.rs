//! A text dump of an ONNX model's graph without its data: opsets, inputs and outputs with their types and shapes,
//! initializers by name, type and shape, and the nodes in order (op type and domain, name, inputs, outputs,
//! attributes). Used by the snapshot tests below and for debugging an export.

use std::fmt::Write as _;

use crate::proto::{
    AttributeProto, GraphProto, ModelProto, TensorProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    type_proto,
};

/// Values of a float/int list attribute printed in full up to this many.
const MAX_VALUES: usize = 16;

/// `model` as text (see the module doc); no tensor data is printed.
pub fn graph_text(model: &ModelProto) -> String {
    let mut x = String::new();
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}:{}",
                o.domain.as_deref().unwrap_or(""),
                o.version.unwrap_or(0)
            )
        })
        .collect();
    let _ = writeln!(
        x,
        "model ir_version={} producer={:?} {:?} opsets=[{}]",
        model.ir_version.unwrap_or(0),
        model.producer_name.as_deref().unwrap_or(""),
        model.producer_version.as_deref().unwrap_or(""),
        opsets.join(", ")
    );
    if let Some(g) = &model.graph {
        graph(&mut x, g, "");
    }
    x
}

fn graph(x: &mut String, g: &GraphProto, indent: &str) {
    let _ = writeln!(x, "{indent}graph {:?}", g.name.as_deref().unwrap_or(""));
    for v in &g.input {
        let _ = writeln!(x, "{indent}input {}", value_info(v));
    }
    for v in &g.output {
        let _ = writeln!(x, "{indent}output {}", value_info(v));
    }
    for t in &g.initializer {
        let _ = writeln!(x, "{indent}initializer {}", tensor(t));
    }
    for n in &g.node {
        let domain = n.domain.as_deref().unwrap_or("");
        let op = n.op_type.as_deref().unwrap_or("");
        let op = if domain.is_empty() {
            op.to_string()
        } else {
            format!("{domain}.{op}")
        };
        let _ = write!(
            x,
            "{indent}node {op} {:?} ({}) -> ({})",
            n.name.as_deref().unwrap_or(""),
            n.input.join(", "),
            n.output.join(", ")
        );
        let mut subgraphs = Vec::new();
        for a in &n.attribute {
            let _ = write!(x, " {}={}", a.name.as_deref().unwrap_or(""), attribute(a));
            subgraphs.extend(a.g.iter());
        }
        x.push('\n');
        for sub in subgraphs {
            graph(x, sub, &format!("{indent}  "));
        }
    }
}

fn elem_name(data_type: Option<i32>) -> &'static str {
    data_type
        .and_then(|t| DataType::try_from(t).ok())
        .map_or("?", |t| t.as_str_name())
}

fn value_info(v: &ValueInfoProto) -> String {
    format!(
        "{} {}",
        v.name.as_deref().unwrap_or(""),
        v.r#type.as_ref().map_or("?".into(), type_text)
    )
}

fn type_text(t: &TypeProto) -> String {
    match &t.value {
        Some(type_proto::Value::TensorType(tt)) => {
            let dims: Vec<String> = tt
                .shape
                .iter()
                .flat_map(|s| s.dim.iter())
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(v)) => v.to_string(),
                    Some(dimension::Value::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect();
            format!("{}[{}]", elem_name(tt.elem_type), dims.join(","))
        }
        other => format!("{other:?}"),
    }
}

/// Name, element type and shape; where the data lives (`external` or inline), never the data.
fn tensor(t: &TensorProto) -> String {
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let place = if t.external_data.is_empty() {
        "inline"
    } else {
        "external"
    };
    format!(
        "{} {}[{}] {place}",
        t.name.as_deref().unwrap_or(""),
        elem_name(t.data_type),
        dims.join(",")
    )
}

fn list<T: std::fmt::Debug>(v: &[T]) -> String {
    if v.len() > MAX_VALUES {
        return format!("<{} values>", v.len());
    }
    let items: Vec<String> = v.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn attribute(a: &AttributeProto) -> String {
    let kind = a
        .r#type
        .and_then(|t| AttributeType::try_from(t).ok())
        .unwrap_or(AttributeType::Undefined);
    match kind {
        AttributeType::Float => format!("{:?}", a.f.unwrap_or(0.0)),
        AttributeType::Int => a.i.unwrap_or(0).to_string(),
        AttributeType::String => format!(
            "{:?}",
            String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[]))
        ),
        AttributeType::Tensor => {
            a.t.as_ref()
                .map_or("tensor ?".into(), |t| format!("tensor {}", tensor(t)))
        }
        AttributeType::Graph => "graph (below)".into(),
        AttributeType::Floats => list(&a.floats),
        AttributeType::Ints => list(&a.ints),
        AttributeType::Strings => {
            let s: Vec<String> = a
                .strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            list(&s)
        }
        other => other.as_str_name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! insta snapshots of the ONNX graph ([`graph_text`] of the `model.onnx` an int4 export with default options
    //! writes) for every tiny Phi-3 checkpoint in `fixtures/` (the ones `cargo xtask digests` exports), in
    //! `src/snapshots/`. To accept an intended change (`cargo insta` is not needed):
    //! `INSTA_UPDATE=always cargo test -p oxport-onnx graph_text`, then review `git diff src/snapshots/`. With
    //! `CI=true` and no `INSTA_UPDATE`, a mismatch fails instead of writing `.snap.new` files.

    use std::path::{Path, PathBuf};

    use prost::Message;

    use super::*;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The tiny checkpoints: `fixtures/*/` and `fixtures/reference/checkpoints/*/` holding a checkpoint.
    fn fixtures() -> Vec<PathBuf> {
        let root = repo_root().join("fixtures");
        let mut out = Vec::new();
        for dir in [root.clone(), root.join("reference/checkpoints")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.join("config.json").is_file() {
                    out.push(path);
                }
            }
        }
        out.sort();
        assert!(out.len() >= 8, "fixtures: {out:?}");
        out
    }

    fn regex_escape(s: &str) -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect()
    }

    #[test]
    fn int4_default_graph_of_every_fixture() {
        let root = repo_root().canonicalize().unwrap();
        let mut settings = insta::Settings::clone_current();
        settings.set_prepend_module_to_snapshot(false);
        settings.add_filter(&regex_escape(&root.to_string_lossy()), "[ROOT]");
        settings.add_filter(
            r#"producer="oxport" "[^"]*""#,
            r#"producer="oxport" "[VERSION]""#,
        );
        for fixture in fixtures() {
            let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
            let ckpt = oxport_arch::Model::open(&fixture).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out");
            let opts = crate::ExportOptions::default();
            let text = match crate::export(
                &ckpt,
                &opts,
                &out,
                &oxport_io::Silent,
                &oxport_io::CancelToken::new(),
            ) {
                Ok(_) => {
                    let bytes = std::fs::read(out.join(crate::MODEL_FILE)).unwrap();
                    graph_text(&ModelProto::decode(bytes.as_slice()).unwrap())
                }
                Err(e) => format!("refused: {e}"),
            };
            settings.bind(|| insta::assert_snapshot!(format!("onnx_int4_{name}"), text));
        }
    }
}
