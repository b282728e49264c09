//! Prompts as the model sees them: the chat template (`chat_template.jinja` or `tokenizer_config.json`'s
//! `chat_template`, rendered with minijinja like transformers' `apply_chat_template`) and the `tokenizers` crate.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Tokenizer and chat template of one model folder.
pub struct Chat {
    tokenizer: Tokenizer,
    tokenizer_path: PathBuf,
    template: Option<(PathBuf, String)>,
    bos: String,
    eos: String,
}

fn token_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

impl Chat {
    /// Load from the first folder of `dirs` that has a `tokenizer.json` (the export, then the checkpoint).
    pub fn load(dirs: &[&Path]) -> Result<Self> {
        let dir = dirs
            .iter()
            .find(|d| d.join("tokenizer.json").is_file())
            .ok_or_else(|| Error::Tokenizer {
                path: dirs.first().map(|d| d.to_path_buf()).unwrap_or_default(),
                msg: "no tokenizer.json in the export or the reference checkpoint".into(),
            })?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::Tokenizer {
            path: tokenizer_path.clone(),
            msg: e.to_string(),
        })?;
        let config: Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let jinja = dir.join("chat_template.jinja");
        let template = if jinja.is_file() {
            Some((
                jinja.clone(),
                std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?,
            ))
        } else {
            config["chat_template"]
                .as_str()
                .map(|t| (dir.join("tokenizer_config.json"), t.to_string()))
        };
        Ok(Chat {
            tokenizer,
            tokenizer_path,
            template,
            bos: token_text(&config["bos_token"]),
            eos: token_text(&config["eos_token"]),
        })
    }

    /// The single-turn user prompt rendered with the chat template (`add_generation_prompt=true`); the raw text
    /// when the model has no template.
    pub fn render(&self, user: &str) -> Result<String> {
        let Some((path, source)) = &self.template else {
            return Ok(user.to_string());
        };
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let ctx = minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => user }],
            add_generation_prompt => true,
            bos_token => &self.bos,
            eos_token => &self.eos,
        };
        env.render_str(source, ctx).map_err(|e| Error::Template {
            path: path.clone(),
            msg: e.to_string(),
        })
    }

    /// Token ids of `text`, with the tokenizer's own special tokens (BOS) unless the text already starts with BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let add_special = self.bos.is_empty() || !text.starts_with(&self.bos);
        self.encode_with(text, add_special)
    }

    /// Token ids of plain text (perplexity), without special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| Error::Tokenizer {
                path: self.tokenizer_path.clone(),
                msg: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }
}
