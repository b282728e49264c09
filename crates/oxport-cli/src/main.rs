//! `oxport`: export Hugging Face Phi-3 checkpoints to quantized ONNX and OpenVINO IR, and validate them.
//!
//! This is the only crate that prints: library crates report through traits that the
//! subcommands implement with indicatif.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a program (or test report) that prints by design

mod calibration;
mod cmd;
mod interrupt;
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
    /// Compute the f32 reference's results once, for `oxport validate --reference-cache DIR`.
    Reference(cmd::reference::Args),
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
        Command::Reference(args) => cmd::reference::run(args),
        Command::Devices(args) => cmd::devices::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined with ": ", leaving out a cause whose text an outer message already
/// includes (library errors that print their source inline would otherwise repeat it).
fn error_chain(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("tensor w: 1 non-finite value")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("compressing w: {0}")]
    struct Outer(#[source] Inner);

    #[test]
    fn causes_already_printed_inline_are_not_repeated() {
        let err = anyhow::Error::new(Outer(Inner)).context("planning");
        assert_eq!(
            error_chain(&err),
            "planning: compressing w: tensor w: 1 non-finite value"
        );
        let plain = anyhow::Error::new(Inner).context("reading");
        assert_eq!(error_chain(&plain), "reading: tensor w: 1 non-finite value");
    }
}
