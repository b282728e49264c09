//! Ctrl-C (SIGINT) and SIGTERM: wired to the export's [`CancelToken`]. The exporter stops at its next check
//! (between tensors), its staging guard removes the staging folder, and the CLI says so on stderr and exits with
//! 128 + the signal's number (130, 143), as a shell reports a process killed by that signal.
//!
//! Outside an export a signal ends the process at once. During one, the handler waits up to [`STOP_TIMEOUT`] for
//! the export to stop; at a second signal, or after that time (a phase without checks, a hung disk), it claims
//! and removes the staging folder itself ([`oxport_io::claim_and_remove`]: a rename, so against the exporter's
//! final rename exactly one wins) and exits. A folder left anyway is removed by the next export of the same
//! output ([`oxport_io::remove_stale`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use oxport_io::CancelToken;

/// How long the handler waits for a cancelled export to stop before cleaning up around it.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(10);

static TOKEN: LazyLock<CancelToken> = LazyLock::new(CancelToken::new);
/// The staging folder of the export in flight; `None` outside an export. Whoever ends the process (the handler or
/// the main thread) holds this lock until it exits, so only one of them prints.
static ARMED: Mutex<Option<PathBuf>> = Mutex::new(None);
/// The signal received (0: none), written under the [`ARMED`] lock.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

fn armed() -> MutexGuard<'static, Option<PathBuf>> {
    // Nothing panics while holding the lock; a poisoned lock still holds a valid record.
    ARMED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run `export` (given the cancel token) for `output`: remove stale staging folders of the same output (one stderr
/// line each), and on SIGINT/SIGTERM cancel it, report the removed staging folder and exit 130/143.
pub(crate) fn run_export<T>(
    output: &Path,
    export: impl FnOnce(&CancelToken) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    handler::install()?;
    let staging = oxport_io::staging_dir_for(output);
    for (path, outcome) in oxport_io::remove_stale(&staging) {
        match outcome {
            Ok(()) => eprintln!(
                "removed stale {} (left by an export that is no longer running)",
                path.display()
            ),
            Err(err) => eprintln!("warning: could not remove stale {}: {err}", path.display()),
        }
    }
    *armed() = Some(staging.clone());
    let result = export(&TOKEN);
    let mut guard = armed();
    guard.take();
    let signal = SIGNAL.load(Ordering::Acquire);
    if signal != 0 {
        // The staging folder the exporter's guard removed, named by its `Cancelled` error.
        let removed = result.as_ref().err().and_then(|e| {
            e.chain()
                .find_map(|e| e.downcast_ref::<oxport_io::Cancelled>())
                .and_then(|c| c.staging.clone())
        });
        exit_interrupted(signal, &staging, removed.as_deref());
    }
    result
}

/// Remove `staging` if still there, say what happened, and exit 128 + `signal`. The caller holds the [`ARMED`] lock.
fn exit_interrupted(signal: i32, staging: &Path, removed_by_export: Option<&Path>) -> ! {
    let message = match oxport_io::claim_and_remove(staging) {
        Ok(true) => format!("interrupted; removed {}", staging.display()),
        Ok(false) => match removed_by_export {
            Some(dir) => format!("interrupted; removed {}", dir.display()),
            None => "interrupted".to_string(),
        },
        Err(err) => format!("interrupted; could not remove {}: {err}", staging.display()),
    };
    eprintln!("{message}");
    std::process::exit(128 + signal);
}

/// The signal thread's work on `signal`; never returns. `again` tells whether another signal arrived since.
fn on_signal(signal: i32, again: &mut dyn FnMut() -> bool) -> ! {
    let guard = armed();
    SIGNAL.store(signal, Ordering::Release);
    if guard.is_none() {
        eprintln!("interrupted");
        std::process::exit(128 + signal);
    }
    TOKEN.cancel();
    drop(guard);
    // The main thread normally ends the process once the export stopped; this is the fallback.
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline && !again() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut guard = armed();
    match guard.take() {
        Some(staging) => exit_interrupted(signal, &staging, None),
        None => {
            eprintln!("interrupted");
            std::process::exit(128 + signal);
        }
    }
}

#[cfg(unix)]
mod handler {
    use std::sync::OnceLock;

    use anyhow::Context;
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    static INSTALLED: OnceLock<()> = OnceLock::new();

    /// Register SIGINT and SIGTERM and start the thread that handles them (once per process). signal-hook's handler
    /// only writes to a pipe; the work runs on an ordinary thread, where file system calls are allowed.
    pub(super) fn install() -> anyhow::Result<()> {
        if INSTALLED.get().is_some() {
            return Ok(());
        }
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).context("installing the SIGINT/SIGTERM handler")?;
        std::thread::Builder::new()
            .name("oxport-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    super::on_signal(signal, &mut || signals.pending().next().is_some());
                }
            })
            .context("starting the signal thread")?;
        let _ = INSTALLED.set(());
        Ok(())
    }
}

#[cfg(not(unix))]
mod handler {
    /// No signal handling off Unix: a staging folder left by Ctrl-C is removed by the next export.
    pub(super) fn install() -> anyhow::Result<()> {
        Ok(())
    }
}
