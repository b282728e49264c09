use std::path::PathBuf;

/// Errors name the file and, where there is one, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file that is a FIFO, socket or device: reading one could block for ever or never end.
    #[error(
        "{path}: not a regular file ({kind}); checkpoint files must be regular files or symlinks to them"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    /// `tokenizer.json` / `tokenizer_config.json` that do not parse.
    #[error("{path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    /// A chat template that is not valid Jinja (`field` names the key inside `tokenizer_config.json`).
    #[error("{path}{}: chat template: {msg}", field.as_ref().map(|f| format!(": `{f}`")).unwrap_or_default())]
    ChatTemplate {
        path: PathBuf,
        field: Option<String>,
        msg: String,
    },
    #[error("{path}: invalid safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("{path}: invalid shard index: {msg}")]
    Index { path: PathBuf, msg: String },
    #[error("{path}: shard {shard:?} (holding {tensors}) resolves outside the model folder")]
    ShardEscapes {
        path: PathBuf,
        shard: String,
        tensors: String,
    },
    #[error("{path}: tensor {tensor}: unsupported dtype {dtype} (oxport reads BF16, F16, F32)")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{dir}: missing tensors: {}", names.join(", "))]
    MissingTensors { dir: PathBuf, names: Vec<String> },
    #[error("{path}: tensor {tensor} appears twice (also in {other})")]
    DuplicateTensor {
        path: PathBuf,
        tensor: String,
        other: PathBuf,
    },
    #[error(
        "{path}: tensor {tensor}: {count} non-finite values (NaN or Inf), first at element {first}"
    )]
    NonFinite {
        path: PathBuf,
        tensor: String,
        count: usize,
        first: usize,
    },
    #[error("{0}")]
    Resolve(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// Refuse anything but a regular file (after symlinks) before opening `path`: `File::open` on a FIFO blocks until a
/// writer appears, and a character device never ends.
pub fn regular_file(path: &std::path::Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_file() {
        return Ok(());
    }
    Err(Error::NotAFile {
        path: path.to_path_buf(),
        kind: file_kind(meta.file_type()),
    })
}

fn file_kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a regular file"
}
