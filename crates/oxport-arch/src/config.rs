//! `config.json` → [`Phi3Config`], accepting both the 2024 release layout (`rope_theta`, `rope_scaling`,
//! `torch_dtype` at top level) and the newer transformers layout (`rope_parameters`, `dtype`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Upper bound for every size in config.json (2^24: 500x Phi-3-mini's intermediate size); larger values are
/// corrupt, and bounding them keeps products such as `vocab × hidden` inside `usize`.
const MAX_DIM: u64 = 1 << 24;

/// Architectures oxport exports; anything else is refused with this list.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["Phi3ForCausalLM"];

/// LongRoPE ("longrope", or "su" in the 2024 releases) as Phi-3-mini-128k / Phi-3.5-mini use it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `longrope` (the older name `su` is normalised to it).
    pub kind: String,
    pub short_factor: Vec<f64>,
    pub long_factor: Vec<f64>,
    pub short_mscale: Option<f64>,
    pub long_mscale: Option<f64>,
}

/// A Phi-3 model's hyper-parameters, normalised from either config layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phi3Config {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// Equal to `num_attention_heads` unless the model uses grouped-query attention (Phi-3-medium).
    pub num_key_value_heads: usize,
    pub num_hidden_layers: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub original_max_position_embeddings: usize,
    pub sliding_window: Option<usize>,
    /// Fraction of each head's dimensions that are rotated (1.0 for Phi-3; 0.75 for Phi-4-mini).
    pub partial_rotary_factor: f64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// `torch_dtype` (legacy) or `dtype` (new layout), e.g. "bfloat16".
    pub dtype: Option<String>,
    pub hidden_act: String,
}

impl Phi3Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        oxport_hf::regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| oxport_hf::Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parse `text`; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("top level is not a JSON object".into()))?;
        let f = Fields { obj, path };
        let architecture = f.architecture()?;

        let hidden_size = f.usize_field("hidden_size")?;
        let num_attention_heads = f.usize_field("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if hidden_size % num_attention_heads != 0 {
            return Err(bad(format!(
                "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
            )));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        let max_position_embeddings = f.usize_field("max_position_embeddings")?;
        let rope = f.rope(hidden_size / num_attention_heads, max_position_embeddings)?;
        let eos_token_ids = match obj.get("eos_token_id") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|x| x as u32)
                        .ok_or_else(|| bad("`eos_token_id` must hold token ids".into()))
                })
                .collect::<Result<_>>()?,
            Some(_) => vec![f.opt_u32("eos_token_id")?.unwrap_or_default()],
        };
        let partial_rotary_factor = rope.partial_rotary_factor;
        if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
            return Err(bad(format!(
                "`partial_rotary_factor` must be in (0, 1], got {partial_rotary_factor}"
            )));
        }
        check_rotary_dim(hidden_size / num_attention_heads, partial_rotary_factor).map_err(bad)?;
        let rms_norm_eps = f.opt_f64(obj, "rms_norm_eps")?.unwrap_or(1e-5);
        let hidden_act = obj
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu")
            .to_string();
        if hidden_act != "silu" {
            return Err(bad(format!(
                "hidden_act {hidden_act:?} is not supported (Phi-3 uses silu)"
            )));
        }

        Ok(Phi3Config {
            architecture,
            hidden_size,
            intermediate_size: f.usize_field("intermediate_size")?,
            num_attention_heads,
            num_key_value_heads,
            num_hidden_layers: f.usize_field("num_hidden_layers")?,
            vocab_size: f.usize_field("vocab_size")?,
            rms_norm_eps,
            rope_theta: rope.theta,
            rope_scaling: rope.scaling,
            max_position_embeddings,
            original_max_position_embeddings: rope.original_max_position_embeddings,
            sliding_window: f.opt_usize("sliding_window")?,
            partial_rotary_factor,
            tie_word_embeddings: obj
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos_token_id: f.opt_u32("bos_token_id")?,
            eos_token_ids,
            pad_token_id: f.opt_u32("pad_token_id")?,
            dtype: obj
                .get("torch_dtype")
                .or(obj.get("dtype"))
                .and_then(Value::as_str)
                .map(str::to_string),
            hidden_act,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Rotated dimensions per head (`head_dim * partial_rotary_factor`).
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor) as usize
    }

    /// Rows of the fused `qkv_proj`: Q heads, then K heads, then V heads.
    pub fn qkv_rows(&self) -> usize {
        (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim()
    }

    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim()
    }

    /// LongRoPE attention scaling factor for the long (and short) cos/sin caches ([`crate::rope::attention_factor`]).
    pub fn longrope_attention_factor(&self) -> f64 {
        crate::rope::attention_factor(self)
    }
}

/// `config.json`'s top-level object, with typed accessors whose errors name the field and the file.
struct Fields<'a> {
    obj: &'a serde_json::Map<String, Value>,
    path: &'a Path,
}

/// The RoPE part of the config: base, partial rotary, LongRoPE, original context.
struct Rope {
    theta: f64,
    partial_rotary_factor: f64,
    scaling: Option<RopeScaling>,
    original_max_position_embeddings: usize,
}

impl Fields<'_> {
    fn bad(&self, msg: String) -> Error {
        Error::Config {
            path: self.path.to_path_buf(),
            msg,
        }
    }

    /// `architectures[0]`, else the class `model_type` names; refused unless oxport supports it.
    fn architecture(&self) -> Result<String> {
        let (obj, bad) = (self.obj, |m| self.bad(m));
        let architecture = match obj.get("architectures") {
            Some(Value::Array(a)) if !a.is_empty() => a[0]
                .as_str()
                .ok_or_else(|| bad("`architectures` must hold strings".into()))?
                .to_string(),
            _ => match obj.get("model_type").and_then(Value::as_str) {
                Some("phi3") => "Phi3ForCausalLM".to_string(),
                Some(other) => other.to_string(),
                None => {
                    return Err(bad(
                        "neither `architectures` nor `model_type` is present".into()
                    ));
                }
            },
        };
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(Error::UnsupportedArchitecture {
                path: self.path.to_path_buf(),
                arch: architecture,
            });
        }

        Ok(architecture)
    }

    fn usize_field(&self, name: &str) -> Result<usize> {
        match self.obj.get(name) {
            Some(Value::Number(n)) => n
                .as_u64()
                // The bound keeps every derived size (qkv rows, vocab × hidden) far from overflow.
                .filter(|&x| x > 0 && x <= MAX_DIM)
                .map(|x| x as usize)
                .ok_or_else(|| {
                    self.bad(format!(
                        "`{name}` must be a positive integer up to {MAX_DIM}, got {n}"
                    ))
                }),
            Some(other) => {
                Err(self.bad(format!("`{name}` must be a positive integer, got {other}")))
            }
            None => Err(self.bad(format!("missing `{name}`"))),
        }
    }

    fn opt_usize(&self, name: &str) -> Result<Option<usize>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.usize_field(name).map(Some),
        }
    }

    fn opt_f64(&self, o: &serde_json::Map<String, Value>, name: &str) -> Result<Option<f64>> {
        match o.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.bad(format!("`{name}` must be a number, got {other}"))),
        }
    }

    fn opt_u32(&self, name: &str) -> Result<Option<u32>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.bad(format!("`{name}` must be a token id, got {n}"))),
            Some(other) => Err(self.bad(format!("`{name}` must be a token id, got {other}"))),
        }
    }

    /// `rope_theta`, `partial_rotary_factor`, LongRoPE and `original_max_position_embeddings`, from the new
    /// layout's `rope_parameters` or the legacy top-level keys.
    fn rope(&self, head_dim: usize, max_position_embeddings: usize) -> Result<Rope> {
        let (obj, bad) = (self.obj, |m| self.bad(m));
        let opt_f64 = |o, name| self.opt_f64(o, name);
        // New layout: rope_parameters {rope_type, rope_theta, short_factor, ...}; legacy: rope_theta + rope_scaling.
        let rope_params = match obj.get("rope_parameters") {
            Some(Value::Object(o)) => Some(o.clone()),
            None | Some(Value::Null) => None,
            Some(other) => {
                return Err(bad(format!(
                    "`rope_parameters` must be an object, got {other}"
                )));
            }
        };
        let rope_theta = match &rope_params {
            Some(p) => opt_f64(p, "rope_theta")?,
            None => None,
        }
        .or(opt_f64(obj, "rope_theta")?)
        .unwrap_or(10000.0);
        // inv_freq = 1 / rope_theta^(2i/rotary_dim): a base ≤ 0 gives NaN or infinite frequencies, and every exporter
        // would bake them into the cos/sin caches (transformers `_compute_default_rope_parameters`).
        if !(rope_theta > 0.0 && rope_theta.is_finite()) {
            return Err(bad(format!(
                "`rope_theta` must be a positive number, got {rope_theta}"
            )));
        }
        // transformers 5 moves `partial_rotary_factor` into `rope_parameters` (configuration_phi3.py
        // `convert_rope_params_to_dict`); older configs keep it at the top level.
        let partial_rotary_factor = match &rope_params {
            Some(p) => opt_f64(p, "partial_rotary_factor")?,
            None => None,
        }
        .or(opt_f64(obj, "partial_rotary_factor")?)
        .unwrap_or(1.0);
        let scaling_obj = match (&rope_params, obj.get("rope_scaling")) {
            (_, Some(Value::Object(o))) => Some(o.clone()),
            (_, Some(Value::Null)) | (_, None) => rope_params.clone(),
            (_, Some(other)) => {
                return Err(bad(format!(
                    "`rope_scaling` must be an object or null, got {other}"
                )));
            }
        };
        let rope_scaling = match scaling_obj {
            None => None,
            Some(o) => {
                let kind = o
                    .get("rope_type")
                    .or(o.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                match kind {
                    "default" => None,
                    "longrope" | "su" => {
                        let factors = |name: &str| -> Result<Vec<f64>> {
                            let a = o.get(name).and_then(Value::as_array).ok_or_else(|| {
                                bad(format!("rope scaling `{kind}` needs `{name}` as a list"))
                            })?;
                            a.iter()
                                .map(|x| {
                                    x.as_f64()
                                        .ok_or_else(|| bad(format!("`{name}` must hold numbers")))
                                })
                                .collect()
                        };
                        let short_factor = factors("short_factor")?;
                        let long_factor = factors("long_factor")?;
                        let rotary_half = ((head_dim as f64 * partial_rotary_factor) as usize) / 2;
                        for (name, f) in [
                            ("short_factor", &short_factor),
                            ("long_factor", &long_factor),
                        ] {
                            if f.len() != rotary_half {
                                return Err(bad(format!(
                                    "`{name}` has {} entries, expected rotary_dim/2 = {rotary_half}",
                                    f.len()
                                )));
                            }
                        }
                        Some(RopeScaling {
                            kind: "longrope".into(),
                            short_factor,
                            long_factor,
                            short_mscale: opt_f64(&o, "short_mscale")?,
                            long_mscale: opt_f64(&o, "long_mscale")?,
                        })
                    }
                    other => {
                        return Err(bad(format!(
                            "rope scaling type {other:?} is not supported (oxport supports none/default and longrope/su)"
                        )));
                    }
                }
            }
        };
        let original_max_position_embeddings = match &rope_params {
            Some(p) => match p.get("original_max_position_embeddings") {
                Some(Value::Number(n)) => n.as_u64().map(|x| x as usize),
                _ => None,
            },
            None => None,
        }
        .or(self.opt_usize("original_max_position_embeddings")?)
        .unwrap_or(max_position_embeddings);

        Ok(Rope {
            theta: rope_theta,
            partial_rotary_factor,
            scaling: rope_scaling,
            original_max_position_embeddings,
        })
    }
}

/// RoPE rotates dimension pairs (`x[i]`, `x[i + rotary_dim/2]`), so `head_dim * partial_rotary_factor` must be a
/// whole, even number of dimensions: transformers truncates it with `int(...)`
/// (`huggingface/transformers:src/transformers/modeling_rope_utils.py`), which silently drops a fraction, and an
/// odd count leaves one dimension that no exporter rotates the way the model was trained.
fn check_rotary_dim(
    head_dim: usize,
    partial_rotary_factor: f64,
) -> std::result::Result<(), String> {
    let exact = head_dim as f64 * partial_rotary_factor;
    let rotary_dim = exact as usize;
    // A product such as 80 * 0.1 = 8.000000000000002 is whole; 64 * 0.3 = 19.2 is not.
    if exact - rotary_dim as f64 > 1e-9 {
        return Err(format!(
            "`partial_rotary_factor` {partial_rotary_factor} × head_dim {head_dim} (hidden_size / \
             num_attention_heads) = {exact} rotary dimensions is not a whole number"
        ));
    }
    if rotary_dim < 2 || !rotary_dim.is_multiple_of(2) {
        return Err(format!(
            "`partial_rotary_factor` {partial_rotary_factor} × head_dim {head_dim} (hidden_size / \
             num_attention_heads) = {rotary_dim} rotary dimensions; RoPE needs an even number of at least 2"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Phi3Config> {
        Phi3Config::from_json_str(s, Path::new("config.json"))
    }

    const LEGACY: &str = r#"{"architectures":["Phi3ForCausalLM"],"hidden_size":256,"intermediate_size":512,
        "num_attention_heads":4,"num_hidden_layers":2,"num_key_value_heads":2,"vocab_size":8192,"rms_norm_eps":1e-5,
        "rope_theta":10000.0,"rope_scaling":null,"max_position_embeddings":4096,"original_max_position_embeddings":4096,
        "sliding_window":2047,"tie_word_embeddings":false,"bos_token_id":1,"eos_token_id":8187,"pad_token_id":8187,
        "torch_dtype":"bfloat16"}"#;

    #[test]
    fn legacy_layout() {
        let c = parse(LEGACY).unwrap();
        assert_eq!(
            (c.head_dim(), c.num_key_value_heads, c.qkv_rows()),
            (64, 2, 512)
        );
        assert_eq!(c.eos_token_ids, vec![8187]);
        assert_eq!(c.sliding_window, Some(2047));
        assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
        assert!(c.rope_scaling.is_none());
    }

    #[test]
    fn new_layout_with_longrope() {
        let s = r#"{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":1,"vocab_size":100,"max_position_embeddings":256,
            "rope_parameters":{"rope_type":"longrope","rope_theta":500.0,"original_max_position_embeddings":64,
            "short_factor":[1,1,1,1,1,1,1,1],"long_factor":[2,2,2,2,2,2,2,2]},"dtype":"bfloat16","eos_token_id":[2,3]}"#;
        let c = parse(s).unwrap();
        assert_eq!(c.rope_theta, 500.0);
        assert_eq!(c.original_max_position_embeddings, 64);
        let r = c.rope_scaling.as_ref().unwrap();
        assert_eq!(r.long_factor, vec![2.0; 8]);
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert!(
            (c.longrope_attention_factor() - (1.0 + 4f64.ln() / 64f64.ln()).sqrt()).abs() < 1e-12
        );
    }

    #[test]
    fn partial_rotary_factor_inside_rope_parameters_is_read() {
        // transformers 5 writes Phi-4-mini's factor inside rope_parameters: head_dim 16 × 0.5 = 8, 4 factors each.
        let s = r#"{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":1,"vocab_size":100,"max_position_embeddings":256,
            "rope_parameters":{"rope_type":"longrope","rope_theta":500.0,"original_max_position_embeddings":64,
            "partial_rotary_factor":0.5,"short_factor":[1,1,1,1],"long_factor":[2,2,2,2]}}"#;
        let c = parse(s).unwrap();
        assert_eq!(c.partial_rotary_factor, 0.5);
        assert_eq!(c.rotary_dim(), 8);
        assert_eq!(c.rope_scaling.as_ref().unwrap().short_factor.len(), 4);
    }

    #[test]
    fn other_architectures_are_refused_with_the_supported_list() {
        let e = parse(&LEGACY.replace("Phi3ForCausalLM", "Phi3SmallForCausalLM"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Phi3SmallForCausalLM") && e.contains("Phi3ForCausalLM"),
            "{e}"
        );
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let e = parse(&LEGACY.replace(
            "\"hidden_size\":256",
            "\"hidden_size\":18446744073709551615",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("hidden_size") && e.contains("up to"), "{e}");
    }

    #[test]
    fn rope_theta_must_be_positive() {
        for theta in ["0.0", "-10000.0"] {
            let e = parse(
                &LEGACY.replace("\"rope_theta\":10000.0", &format!("\"rope_theta\":{theta}")),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("config.json") && e.contains("`rope_theta`") && e.contains("positive"),
                "{e}"
            );
        }
        // The new layout's rope_parameters.rope_theta is checked the same way.
        let s = LEGACY.replace(
            "\"rope_theta\":10000.0,",
            "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":0},",
        );
        let e = parse(&s).unwrap_err().to_string();
        assert!(e.contains("`rope_theta`"), "{e}");
    }

    #[test]
    fn rotary_dim_must_be_a_whole_even_number() {
        // head_dim 64: 0.3 → 19.2 (not whole), 0.015625 → 1 (odd), 0.078125 → 5 (odd).
        for (factor, what) in [
            ("0.3", "not a whole number"),
            ("0.015625", "even number"),
            ("0.078125", "even number"),
        ] {
            let e = parse(&LEGACY.replace(
                "\"rope_theta\"",
                &format!("\"partial_rotary_factor\":{factor},\"rope_theta\""),
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("config.json")
                    && e.contains("`partial_rotary_factor`")
                    && e.contains("head_dim 64")
                    && e.contains(what),
                "{factor}: {e}"
            );
        }
        // Phi-4-mini (head_dim 128 × 0.75 = 96) and half of 64 are fine.
        for factor in ["0.75", "0.5", "1.0"] {
            parse(&LEGACY.replace(
                "\"rope_theta\"",
                &format!("\"partial_rotary_factor\":{factor},\"rope_theta\""),
            ))
            .unwrap();
        }
    }

    #[test]
    fn malformed_configs_name_the_field() {
        let e = parse(&LEGACY.replace("\"hidden_size\":256", "\"hidden_size\":\"x\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hidden_size") && e.contains("config.json"),
            "{e}"
        );
        let e = parse("{not json").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse(&LEGACY.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3"))
            .unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");
    }
}
