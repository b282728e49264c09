//! `oxport`: export Hugging Face Phi-3 checkpoints to quantized ONNX and OpenVINO IR, and validate them.
//!
//! This is the only crate that prints: library crates report through traits that the
//! subcommands implement with indicatif.

mod cmd;
mod progress;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "oxport", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a checkpoint's architecture, dimensions and tensor table (metadata only).
    Inspect(cmd::inspect::Args),
    /// Export a checkpoint to ONNX (ONNX Runtime GenAI layout) or OpenVINO IR (optimum-cli layout).
    #[command(subcommand)]
    Export(ExportCommand),
    /// Run an export on every present device and compare it with an f32 reference.
    Validate(cmd::validate::Args),
    /// List the runtimes (ONNX Runtime, OpenVINO) and devices, present or absent with the reason.
    Devices(cmd::devices::Args),
}

#[derive(Subcommand)]
enum ExportCommand {
    /// ONNX for ONNX Runtime GenAI: MatMulNBits int4, fp16 or fp32, with genai_config.json.
    Onnx(cmd::export_onnx::Args),
    /// Stateful OpenVINO IR like `optimum-cli export openvino`; optimum-cli flags are accepted verbatim.
    Openvino(Box<cmd::export_openvino::Args>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Export(ExportCommand::Onnx(args)) => cmd::export_onnx::run(args),
        Command::Export(ExportCommand::Openvino(args)) => cmd::export_openvino::run(*args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Devices(args) => cmd::devices::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
