//! The tokenizer files and chat template an export copies from the checkpoint, checked before anything is written:
//! a runtime that loads the export (onnxruntime-genai, OpenVINO GenAI, transformers) would otherwise fail on them
//! only when the model is used.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result, io};

/// Check `dir`'s `tokenizer.json` (when present), `tokenizer_config.json` (when present) and chat templates
/// ([`check_tokenizer_json`], [`check_chat_templates`]).
pub fn check_side_files(dir: &Path) -> Result<()> {
    check_tokenizer_json(dir)?;
    check_chat_templates(dir)
}

/// `tokenizer.json` must load as a Hugging Face `tokenizers` tokenizer (what transformers' fast tokenizers and the
/// runners read); a missing one is not an error here.
pub fn check_tokenizer_json(dir: &Path) -> Result<()> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let bad = |msg: String| Error::Tokenizer {
        path: path.clone(),
        msg,
    };
    serde_json::from_str::<Value>(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    text.parse::<tokenizers::Tokenizer>()
        .map_err(|e| bad(format!("not a tokenizers tokenizer: {e}")))?;
    Ok(())
}

/// Every chat template the exporters copy or embed — `chat_template.jinja` and `tokenizer_config.json`'s
/// `chat_template` (a string, or transformers' list of `{name, template}`) — must parse as Jinja. A
/// `tokenizer_config.json` that is not JSON is refused too, since its template cannot be read.
pub fn check_chat_templates(dir: &Path) -> Result<()> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let text = std::fs::read_to_string(&jinja).map_err(io(&jinja))?;
        parse_template(&text).map_err(|msg| Error::ChatTemplate {
            path: jinja.clone(),
            field: None,
            msg,
        })?;
    }
    let config = dir.join("tokenizer_config.json");
    if !config.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&config).map_err(io(&config))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
        path: config.clone(),
        msg: format!("not valid JSON: {e}"),
    })?;
    let templates: Vec<(String, &str)> = match v.get("chat_template") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(t)) => vec![("chat_template".into(), t)],
        // transformers' named templates: [{"name": "default", "template": "..."}, ...]
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, t)| match t.get("template").and_then(Value::as_str) {
                Some(s) => Ok((format!("chat_template[{i}].template"), s)),
                None => Err(Error::ChatTemplate {
                    path: config.clone(),
                    field: Some(format!("chat_template[{i}]")),
                    msg: "expected an object with a `template` string".into(),
                }),
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(Error::ChatTemplate {
                path: config.clone(),
                field: Some("chat_template".into()),
                msg: "expected a string or a list of {name, template}".into(),
            });
        }
    };
    for (field, t) in templates {
        parse_template(t).map_err(|msg| Error::ChatTemplate {
            path: config.clone(),
            field: Some(field),
            msg,
        })?;
    }
    Ok(())
}

/// Compile `source` with minijinja (the engine `oxport validate` renders templates with). transformers' own
/// `{% generation %}` / `{% endgeneration %}` block (its jinja2 `AssistantTracker` extension,
/// `huggingface/transformers:src/transformers/utils/chat_template_utils.py`) is not Jinja and is removed first.
fn parse_template(source: &str) -> std::result::Result<(), String> {
    let source = strip_generation_tags(source);
    let env = minijinja::Environment::new();
    env.template_from_str(&source).map(|_| ()).map_err(|e| {
        let mut msg = format!("not a valid Jinja template: {e}");
        if let Some(line) = e.line() {
            msg.push_str(&format!(" (line {line})"));
        }
        msg
    })
}

/// `source` without `{% generation %}` and `{% endgeneration %}` tags (any `-` whitespace control and spacing).
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else {
            break;
        };
        let tag = &rest[start + 2..start + len];
        let name = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..start]);
        if name != "generation" && name != "endgeneration" {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_are_not_jinja_but_are_accepted() {
        let t = "{% for m in messages %}{%- generation -%}{{ m.content }}{% endgeneration %}{% endfor %}";
        assert_eq!(
            strip_generation_tags(t),
            "{% for m in messages %}{{ m.content }}{% endfor %}"
        );
        parse_template(t).unwrap();
        let e = parse_template("{% for m in messages %}{{ m.content }}").unwrap_err();
        assert!(e.contains("not a valid Jinja template"), "{e}");
    }
}
