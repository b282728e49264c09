//! optimum-cli's default 4-bit recipes for the Phi family: what `--weight-format int4` with none of the compression
//! flags means for a given model (`huggingface/optimum-intel:optimum/intel/openvino/configuration.py`:
//! `_DEFAULT_4BIT_WQ_CONFIGS`, `_DEFAULT_4BIT_WQ_CONFIG`, `get_default_quantization_config`,
//! `_get_model_id_candidates`; applied by `optimum/commands/export/openvino.py` only when
//! `no_compression_parameter_provided`).

use std::path::Path;

/// What optimum-cli's table gives a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recipe {
    /// A data-free recipe oxport applies: int4 asymmetric unless `sym`, `group_size`, `ratio`, data-free AWQ.
    DataFree {
        sym: bool,
        group_size: i64,
        ratio: f64,
        awq: bool,
    },
    /// A data-aware recipe: int4 asymmetric unless `sym`, calibrated on `dataset` (optimum's default 128 samples).
    DataAware {
        sym: bool,
        group_size: i64,
        ratio: f64,
        awq: bool,
        scale_estimation: bool,
        dataset: &'static str,
    },
}

/// The Phi-family entries of `_DEFAULT_4BIT_WQ_CONFIGS` (optimum-intel 2.2). Phi-4-multimodal's entry is for its
/// multimodal pipeline and is left out.
pub const PHI_DEFAULTS: &[(&str, Recipe)] = &[
    (
        "microsoft/Phi-3-mini-4k-instruct",
        Recipe::DataAware {
            sym: false,
            group_size: 64,
            ratio: 1.0,
            awq: false,
            scale_estimation: true,
            dataset: "wikitext2",
        },
    ),
    (
        "microsoft/Phi-3.5-mini-instruct",
        Recipe::DataFree {
            sym: false,
            group_size: 64,
            ratio: 1.0,
            awq: true,
        },
    ),
    (
        "microsoft/Phi-4-mini-instruct",
        Recipe::DataFree {
            sym: false,
            group_size: 64,
            ratio: 1.0,
            awq: true,
        },
    ),
    (
        "microsoft/Phi-4-reasoning",
        Recipe::DataFree {
            sym: false,
            group_size: 64,
            ratio: 1.0,
            awq: false,
        },
    ),
    (
        "microsoft/phi-2",
        Recipe::DataAware {
            sym: false,
            group_size: 64,
            ratio: 1.0,
            awq: true,
            scale_estimation: true,
            dataset: "wikitext2",
        },
    ),
];

/// `_DEFAULT_4BIT_WQ_CONFIG`: every other model.
pub const GENERIC: Recipe = Recipe::DataFree {
    sym: false,
    group_size: 128,
    ratio: 1.0,
    awq: false,
};

/// How the model was matched to a table entry.
#[derive(Clone, Debug, PartialEq)]
pub enum MatchedBy {
    /// The `--model` string itself is the table key (a hub id).
    ModelId,
    /// `_name_or_path` in the folder's `config.json`.
    NameOrPath(String),
    /// The folder's name equals the last part of the key.
    FolderName(String),
}

/// The default 4-bit recipe for `--model model_arg` (a hub id or a local folder): the table entry and how it
/// matched, in optimum's order (the literal string, then `config.json`'s `_name_or_path`, then the folder name),
/// or `None` for the generic default.
pub fn default_4bit(model_arg: &str) -> Option<(&'static str, Recipe, MatchedBy)> {
    let lookup = |id: &str| PHI_DEFAULTS.iter().find(|(key, _)| *key == id);
    if let Some((key, recipe)) = lookup(model_arg) {
        return Some((key, *recipe, MatchedBy::ModelId));
    }
    let path = Path::new(model_arg);
    let name_or_path = std::fs::read_to_string(path.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|c| c.get("_name_or_path")?.as_str().map(str::to_string))
        .filter(|s| !s.is_empty());
    if let Some(name) = name_or_path
        && let Some((key, recipe)) = lookup(&name)
    {
        return Some((key, *recipe, MatchedBy::NameOrPath(name)));
    }
    let folder = path.file_name()?.to_str()?;
    PHI_DEFAULTS
        .iter()
        .find(|(key, _)| key.rsplit('/').next() == Some(folder))
        .map(|(key, recipe)| (*key, *recipe, MatchedBy::FolderName(folder.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_by_id_name_or_path_and_folder_name_in_optimums_order() {
        let (key, recipe, by) = default_4bit("microsoft/Phi-3.5-mini-instruct").unwrap();
        assert_eq!(
            (key, by),
            ("microsoft/Phi-3.5-mini-instruct", MatchedBy::ModelId)
        );
        assert!(matches!(
            recipe,
            Recipe::DataFree {
                awq: true,
                group_size: 64,
                sym: false,
                ..
            }
        ));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("Phi-4-mini-instruct");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            default_4bit(dir.to_str().unwrap()).unwrap().2,
            MatchedBy::FolderName("Phi-4-mini-instruct".into())
        );
        // _name_or_path wins over the folder name.
        std::fs::write(
            dir.join("config.json"),
            r#"{"_name_or_path": "microsoft/Phi-3-mini-4k-instruct"}"#,
        )
        .unwrap();
        let (key, recipe, by) = default_4bit(dir.to_str().unwrap()).unwrap();
        assert_eq!(key, "microsoft/Phi-3-mini-4k-instruct");
        assert!(matches!(
            recipe,
            Recipe::DataAware {
                scale_estimation: true,
                dataset: "wikitext2",
                ..
            }
        ));
        assert_eq!(
            by,
            MatchedBy::NameOrPath("microsoft/Phi-3-mini-4k-instruct".into())
        );
        // No entry: 128k and medium get the generic default; case matters as in optimum.
        assert!(default_4bit("microsoft/Phi-3-mini-128k-instruct").is_none());
        assert!(default_4bit(tmp.path().join("phi-3.5-mini-instruct").to_str().unwrap()).is_none());
    }
}
