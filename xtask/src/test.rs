//! `cargo xtask test`: the one command that sets up everything the tests need on a fresh machine and runs them.
//!
//! 0. `cargo fmt --all --check`, `cargo xtask sizes` (files ≤ 600 lines, functions ≤ 120), then
//!    `cargo clippy --workspace --all-targets -- -D warnings`;
//! 1. a Python venv at `<repo>/.venv` with the runtimes from PyPI (`tests/python/requirements.txt`), recreated
//!    when the requirements change;
//! 2. the `oxport` binary, and `cargo xtask digests` with it (every fixture × format × tested flag set, file
//!    digests against the committed `tests/golden/export-digests.txt`);
//! 3. `cargo test` over the workspace with the `runtimes` feature (the tests that load ONNX Runtime or OpenVINO,
//!    which a plain `cargo test` ignores; here none may be ignored), then `pytest tests/python` with `OXPORT_BIN`
//!    and `OXPORT_PYTHON` set;
//! 4. `cargo xtask smol` (the real SmolLM2 model in Phi-3 layout, once), then `pytest tests/python_peers` (optimum-intel
//!    loading our exports, NNCF beside our data-aware AWQ) in `.venv-peers`, created once from PyPI;
//! 5. `cargo xtask bench --smoke` and `cargo xtask bench validate --smoke`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Skip the Python tests (pytest); the Rust tests still need the venv's runtimes (the `runtimes` feature).
    #[arg(long)]
    no_python: bool,
    /// Extra arguments passed to `cargo test` (after `--workspace`), e.g. a test name filter.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repo")
        .to_path_buf()
}

/// Create (or refresh) `<repo>/.venv` from `tests/python/requirements.txt`; returns the venv's python.
pub(crate) fn ensure_venv(root: &Path) -> Result<PathBuf> {
    let req = root.join("tests/python/requirements.txt");
    let wanted =
        std::fs::read_to_string(&req).with_context(|| format!("reading {}", req.display()))?;
    ensure_venv_from(&root.join(".venv"), &wanted, &[])
}

/// Create `venv` (or refresh it when `requirements` or `no_deps` changed) and install `requirements` (a
/// requirements.txt text) plus the `no_deps` packages without their dependencies; returns the venv's python.
pub(crate) fn ensure_venv_from(
    venv: &Path,
    requirements: &str,
    no_deps: &[&str],
) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    let stamp = venv.join(".oxport-requirements");
    let mut wanted = requirements.to_string();
    for package in no_deps {
        wanted.push_str(&format!("--no-deps {package}\n"));
    }
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    eprintln!("xtask: setting up {} from PyPI (once)", venv.display());
    if !python.exists() {
        let host = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run_checked(Command::new(&host).args(["-m", "venv"]).arg(venv))
            .context("creating the venv (is python3-venv installed?)")?;
    }
    let req = venv.join("requirements.txt");
    std::fs::write(&req, requirements)?;
    let pip = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    run_checked(Command::new(&python).args(pip).arg("-r").arg(&req))?;
    for package in no_deps {
        run_checked(Command::new(&python).args(pip).args(["--no-deps", package]))?;
    }
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// Build the `oxport` binary of this tree (release) and return its path.
pub(crate) fn build_oxport(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(Command::new(&cargo).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "oxport-cli",
    ]))?;
    Ok(root.join("target/release/oxport"))
}

pub(crate) fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub(crate) fn run(args: Args) -> Result<()> {
    let root = repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    static_checks(&root, &cargo)?;
    let python = ensure_venv(&root)?;

    let bin = build_oxport(&root)?;

    let mut failures = Vec::new();
    let mut counts = Counts::default();
    // The safety net of every refactoring: the same bytes out for every fixture, format and flag set.
    let mut digests = Command::new(std::env::current_exe()?);
    digests
        .current_dir(&root)
        .args(["digests", "--bin"])
        .arg(&bin);
    if let Err(e) = run_checked(&mut digests) {
        failures.push(format!("xtask digests: {e:#}"));
    }
    let env = TestEnv {
        root: &root,
        python: &python,
        bin: &bin,
    };
    rust_tests(&env, &cargo, &args.cargo_args, &mut counts, &mut failures);
    if !args.no_python {
        python_tests(&env, &mut counts, &mut failures)?;
    }
    smoke_benches(&env, &mut failures)?;

    // One closing line over both runners (Rust and Python), in the plain form CI reads.
    println!("tests: {} passed, {} failed", counts.passed, counts.failed);
    if !failures.is_empty() {
        bail!("tests failed:\n  {}", failures.join("\n  "));
    }
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// What every test step runs with: the repository, the venv's python and the `oxport` binary under test.
struct TestEnv<'a> {
    root: &'a Path,
    python: &'a Path,
    bin: &'a Path,
}

/// Step 0, the checks that take seconds and fail first: formatting, the size limits, then clippy.
fn static_checks(root: &Path, cargo: &str) -> Result<()> {
    // Formatting first: seconds, and the cheapest failure to report.
    run_checked(
        Command::new(cargo)
            .current_dir(root)
            .args(["fmt", "--all", "--check"]),
    )
    .context("cargo fmt --all --check (run `cargo fmt --all`)")?;
    // The house limits (files ≤ 600 lines, functions ≤ 120): a parse of every file, no build.
    run_checked(
        Command::new(std::env::current_exe()?)
            .current_dir(root)
            .arg("sizes"),
    )
    .context("cargo xtask sizes")?;
    run_checked(Command::new(cargo).current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))
    .context("cargo clippy --workspace --all-targets -- -D warnings")
}

/// Step 3's Rust half: `cargo test` over the workspace with the runtimes on; none may be ignored.
fn rust_tests(
    env: &TestEnv<'_>,
    cargo: &str,
    cargo_args: &[String],
    counts: &mut Counts,
    failures: &mut Vec<String>,
) {
    let mut cargo_test = Command::new(cargo);
    cargo_test
        .current_dir(env.root)
        .args(["test", "--release", "--workspace"])
        // The tests that load the runtimes from `$OXPORT_PYTHON`'s wheels: ignored by a plain `cargo test`.
        .args(["--features", "oxport-tests/runtimes"])
        .args(cargo_args)
        .env("OXPORT_PYTHON", env.python)
        .env("OXPORT_BIN", env.bin);
    if let Err(e) = run_counting(&mut cargo_test, counts) {
        failures.push(format!("cargo test: {e:#}"));
    }
    if counts.ignored > 0 {
        failures.push(format!(
            "cargo test: {} tests ignored; with the runtimes feature every test runs",
            counts.ignored
        ));
    }
}

/// Step 3's Python half (`tests/python`) and step 4 (the real SmolLM2 model, then optimum-intel loading our
/// exports and NNCF beside our data-aware AWQ, in the peers' venv).
fn python_tests(env: &TestEnv<'_>, counts: &mut Counts, failures: &mut Vec<String>) -> Result<()> {
    let root = env.root;
    let has_python_tests = std::fs::read_dir(root.join("tests/python"))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("test_"));
    if has_python_tests {
        let mut pytest = Command::new(env.python);
        pytest
            .current_dir(root)
            .args(["-m", "pytest", "-q", "tests/python"])
            .env("OXPORT_PYTHON", env.python)
            .env("OXPORT_BIN", env.bin);
        if let Err(e) = run_counting(&mut pytest, counts) {
            failures.push(format!("pytest: {e:#}"));
        }
    }
    // The real trained model the data-aware comparison with NNCF runs on (`.cache/smol-phi3`, built once).
    let mut smol = Command::new(std::env::current_exe()?);
    smol.current_dir(root).arg("smol");
    if let Err(e) = run_checked(&mut smol) {
        failures.push(format!("xtask smol: {e:#}"));
    }
    let peers = crate::bench::ensure_peer_venv(root)?;
    let mut pytest = Command::new(&peers);
    pytest
        .current_dir(root)
        .args(["-m", "pytest", "-q", "tests/python_peers"])
        .env("OXPORT_BIN", env.bin);
    if let Err(e) = run_counting(&mut pytest, counts) {
        failures.push(format!("pytest (optimum-intel): {e:#}"));
    }
    Ok(())
}

/// Step 5: the export and validate benchmarks' smoke modes (every case on the tiny fixture, measured the same
/// way as the full benches).
fn smoke_benches(env: &TestEnv<'_>, failures: &mut Vec<String>) -> Result<()> {
    let mut smoke = Command::new(std::env::current_exe()?);
    smoke
        .current_dir(env.root)
        .args(["bench", "--smoke", "--out", "target/bench/smoke.md"]);
    if let Err(e) = run_checked(&mut smoke) {
        failures.push(format!("bench --smoke: {e:#}"));
    }
    // The validate benchmark's smoke mode: reference, ONNX Runtime and validate on the tiny fixture.
    let mut smoke = Command::new(std::env::current_exe()?);
    smoke
        .current_dir(env.root)
        .env("OXPORT_PYTHON", env.python)
        .args([
            "bench",
            "validate",
            "--smoke",
            "--out",
            "target/bench/validate-smoke.md",
        ]);
    if let Err(e) = run_checked(&mut smoke) {
        failures.push(format!("bench validate --smoke: {e:#}"));
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    /// cargo test's ignored tests (pytest's skips are not counted).
    ignored: u64,
}

/// Run `cmd`, echoing its stdout line by line, and add up the passed/failed counts of cargo test's
/// `test result:` lines (and their ignored counts) and pytest's summary line.
fn run_counting(cmd: &mut Command, counts: &mut Counts) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    cmd.stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        writeln!(out, "{line}")?;
        out.flush()?;
        let number_before = |word: &str| -> u64 {
            let words: Vec<&str> = line
                .split([' ', ';', ','])
                .filter(|w| !w.is_empty())
                .collect();
            words
                .windows(2)
                .filter(|w| w[1].trim_end_matches('.') == word)
                .filter_map(|w| w[0].parse::<u64>().ok())
                .sum()
        };
        let is_cargo = line.starts_with("test result:");
        let is_pytest = line.contains(" passed") && line.contains(" in ") && !is_cargo;
        if is_cargo || is_pytest {
            counts.passed += number_before("passed");
            counts.failed += number_before("failed");
        }
        if is_cargo {
            counts.ignored += number_before("ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
