//! Ctrl-C (SIGINT) and SIGTERM during an export: remove the export's temporary folder, say so on stderr and exit
//! with 128 + the signal's number (130, 143), as a shell reports a process killed by that signal.
//!
//! Both exporters build their output in `.NAME.oxport-tmp-PID` beside it and rename it into place at the end
//! (`oxport_onnx::temp_dir_for`, `oxport_openvino::temp_dir_for`); their Drop guard removes it on an error, but a
//! signal ends the process without running Drop. The exporters know nothing of signals; the CLI has two places where
//! it regains control while an export runs, and the handler cleans up while the main thread is stopped at one:
//!
//! * [`ExportGuard::arm`] installs the handler thread (once per process) and records the temporary folder.
//! * On a signal the handler marks the export interrupted and waits for the main thread to *park*: at its next
//!   progress callback ([`checkpoint`], called by the subcommands' progress bars between tensors, on the exporter's
//!   thread) or when it drops the [`ExportGuard`] after the exporter returned. A parked main thread waits forever;
//!   nothing creates, renames or removes entries any more (rayon workers only run inside a tensor the main thread
//!   waits for; oxport-onnx's data writer thread only appends to its already open `model.onnx.data`, which the
//!   removal unlinks), so the handler sees the folder in its final state: not created yet, complete at the temporary name, or already
//!   renamed into place (complete) or removed by the exporter's error path. It removes what is there, prints and
//!   exits. The main thread can neither print more nor exit with its own status first.
//! * The wait is bounded (a phase without callbacks, e.g. a slow planning step, or a hung disk): after
//!   [`PARK_TIMEOUT`], or at a second signal, the handler goes ahead with the main thread still running. It then first
//!   *claims* the folder by renaming it to `.NAME.oxport-tmp-PID.interrupted` and removes that. `rename(2)` is atomic,
//!   so against the exporter's final `rename(tmp, output)` exactly one wins: the handler owns the whole folder (the
//!   exporter's rename fails and nothing reaches `output`), or the output is complete and the claim finds nothing.
//!   Only a folder the exporter creates after the handler looked, before the process ends, can stay behind on that
//!   path; the next export of the same output removes it as stale ([`remove_stale`]).

// Off Unix no handler is installed; only the stale-folder cleanup runs.
#![cfg_attr(not(unix), allow(dead_code))]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget};

/// Suffix of a temporary folder the handler has claimed and is removing.
const CLAIMED_SUFFIX: &str = ".interrupted";

/// How long the handler waits for the main thread to park before cleaning up around it.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(10);

/// The export in flight: its temporary folder and the bar to stop before printing.
struct Armed {
    temp_dir: PathBuf,
    bar: Option<ProgressBar>,
}

struct State {
    armed: Option<Armed>,
    /// A signal arrived: the main thread parks at its next checkpoint.
    interrupted: bool,
    /// The main thread is parked for good.
    parked: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    armed: None,
    interrupted: false,
    parked: false,
});
/// Signalled when `parked` becomes true.
static PARKED: Condvar = Condvar::new();
/// `State::interrupted`, readable without the lock (checked at every progress callback).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn state() -> MutexGuard<'static, State> {
    // Nothing panics while holding the lock; a poisoned lock still holds a valid record.
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Stop the calling (main) thread for good; the signal handler ends the process.
fn park(mut state: MutexGuard<'static, State>) -> ! {
    state.parked = true;
    PARKED.notify_all();
    loop {
        state = PARKED.wait(state).unwrap_or_else(PoisonError::into_inner);
    }
}

/// Called from the exporters' progress callbacks: parks the thread once a signal arrived, so that the handler
/// removes the temporary folder while nothing writes into it.
pub fn checkpoint() {
    if INTERRUPTED.load(Ordering::Acquire) {
        let state = state();
        if state.interrupted {
            park(state);
        }
    }
}

/// While alive, SIGINT/SIGTERM remove `temp_dir` and exit 130/143. Dropping it (after the exporter returned, success
/// or error) disarms the handler, or parks the thread for good if a signal arrived.
#[must_use = "the handler is disarmed when the guard is dropped"]
pub struct ExportGuard(());

impl ExportGuard {
    /// Install the handler (first call only) and record `temp_dir`, the folder the exporter is about to create.
    pub fn arm(temp_dir: PathBuf, bar: Option<ProgressBar>) -> anyhow::Result<Self> {
        handler::install()?;
        state().armed = Some(Armed { temp_dir, bar });
        Ok(Self(()))
    }
}

impl Drop for ExportGuard {
    fn drop(&mut self) {
        let mut state = state();
        if state.interrupted {
            park(state);
        }
        state.armed = None;
    }
}

/// What the handler does on signal `signal`; never returns. `again` tells whether another signal arrived since.
fn on_signal(signal: i32, again: &mut dyn FnMut() -> bool) -> ! {
    INTERRUPTED.store(true, Ordering::Release);
    let mut state = state();
    state.interrupted = true;
    if state.armed.is_some() {
        let deadline = Instant::now() + PARK_TIMEOUT;
        while !state.parked {
            let now = Instant::now();
            if now >= deadline || again() {
                break;
            }
            let slice = (deadline - now).min(Duration::from_millis(100));
            state = PARKED
                .wait_timeout(state, slice)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
    let message = match state.armed.take() {
        Some(Armed { temp_dir, bar }) => {
            // Stop drawing the bar (the main thread may still tick it if it did not park): it stays where the export
            // stopped, above the message.
            if let Some(bar) = bar {
                bar.set_draw_target(ProgressDrawTarget::hidden());
            }
            match claim_and_remove(&temp_dir) {
                Ok(true) => format!("interrupted; removed {}", temp_dir.display()),
                Ok(false) => "interrupted".to_string(),
                Err(err) => format!(
                    "interrupted; could not remove {}: {err}",
                    temp_dir.display()
                ),
            }
        }
        None => "interrupted".to_string(),
    };
    let _ = writeln!(std::io::stderr(), "{message}");
    // `state` stays locked until the process is gone: a main thread that did not park blocks in ExportGuard::drop.
    std::process::exit(128 + signal);
}

/// Rename `temp_dir` out of the exporter's reach, then remove it. `Ok(false)`: there was no such folder (not created
/// yet, already renamed into place, or already removed by the exporter's own error path).
fn claim_and_remove(temp_dir: &Path) -> std::io::Result<bool> {
    let mut claimed = temp_dir.as_os_str().to_owned();
    claimed.push(CLAIMED_SUFFIX);
    let claimed = PathBuf::from(claimed);
    match std::fs::rename(temp_dir, &claimed) {
        Ok(()) => std::fs::remove_dir_all(&claimed).map(|()| true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        // Renaming failed for another reason (e.g. a leftover claimed folder in the way): remove in place.
        Err(_) => std::fs::remove_dir_all(temp_dir).map(|()| true),
    }
}

/// Remove the siblings of `temp_dir` (`.NAME.oxport-tmp-PID`, or the same with `.interrupted`) left by exports of
/// the same output whose process is gone. A folder whose PID is a running process (another export in flight, or a
/// recycled PID) is never touched. Returns each stale folder, sorted, with the outcome of removing it.
pub fn remove_stale(temp_dir: &Path) -> Vec<(PathBuf, std::io::Result<()>)> {
    let (Some(parent), Some(name)) = (temp_dir.parent(), temp_dir.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    // `.NAME.oxport-tmp-` from `.NAME.oxport-tmp-PID`.
    let Some(prefix) = name
        .rfind('-')
        .map(|dash| name[..=dash].to_string())
        .filter(|p| p.ends_with(".oxport-tmp-"))
    else {
        return Vec::new();
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    // An unreadable (or not yet created) parent has nothing we could remove.
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut stale: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| pid_of(n, &prefix)) else {
                return false;
            };
            // Only real folders (a symlink is not followed, a file is not ours).
            entry.file_type().is_ok_and(|t| t.is_dir()) && !process::running(pid)
        })
        .map(|entry| entry.path())
        .collect();
    // Sorted: the printed lines do not depend on the directory's order.
    stale.sort();
    stale
        .into_iter()
        .map(|path| {
            let outcome = std::fs::remove_dir_all(&path);
            (path, outcome)
        })
        .collect()
}

/// Start of an export whose temporary folder is `temp_dir`: remove stale siblings (one stderr line each) and arm the
/// handler. Keep the guard until the exporter returns.
pub fn prepare_export(temp_dir: PathBuf, bar: Option<ProgressBar>) -> anyhow::Result<ExportGuard> {
    for (path, outcome) in remove_stale(&temp_dir) {
        match outcome {
            Ok(()) => eprintln!(
                "removed stale {} (left by an export that is no longer running)",
                path.display()
            ),
            Err(err) => eprintln!("warning: could not remove stale {}: {err}", path.display()),
        }
    }
    ExportGuard::arm(temp_dir, bar)
}

/// The PID in `.NAME.oxport-tmp-PID` or `.NAME.oxport-tmp-PID.interrupted`, for the given `.NAME.oxport-tmp-`.
fn pid_of(file_name: &str, prefix: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(prefix)?;
    let digits = rest.strip_suffix(CLAIMED_SUFFIX).unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(unix)]
mod handler {
    use std::sync::OnceLock;

    use anyhow::Context;
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    static INSTALLED: OnceLock<()> = OnceLock::new();

    /// Register SIGINT and SIGTERM and start the thread that handles them (once per process). signal-hook's handler
    /// only writes to a pipe; the cleanup runs on an ordinary thread, where file system calls are allowed.
    pub fn install() -> anyhow::Result<()> {
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
    /// No signal handling off Unix: a temporary folder left by Ctrl-C is removed by the next export.
    pub fn install() -> anyhow::Result<()> {
        Ok(())
    }
}

mod process {
    /// Whether `pid` is a running process. Where that cannot be told, the answer is yes (nothing gets removed).
    #[cfg(target_os = "linux")]
    pub fn running(pid: u32) -> bool {
        let proc = std::path::Path::new("/proc");
        // Without a mounted /proc every PID would look dead.
        !proc.join("self").exists() || proc.join(pid.to_string()).exists()
    }

    #[cfg(all(unix, not(target_os = "linux")))]
    pub fn running(pid: u32) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }

    #[cfg(not(unix))]
    pub fn running(_pid: u32) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_is_read_from_both_forms_and_nothing_else() {
        let prefix = ".out.oxport-tmp-";
        assert_eq!(pid_of(".out.oxport-tmp-1234", prefix), Some(1234));
        assert_eq!(
            pid_of(".out.oxport-tmp-1234.interrupted", prefix),
            Some(1234)
        );
        for other in [
            ".out.oxport-tmp-",
            ".out.oxport-tmp-12a",
            ".out.oxport-tmp-+12",
            ".out.oxport-tmp-12.partial",
            ".out2.oxport-tmp-12",
            ".other.oxport-tmp-12",
            "out.oxport-tmp-12",
        ] {
            assert_eq!(pid_of(other, prefix), None, "{other}");
        }
    }

    #[test]
    fn claiming_removes_the_folder_and_a_missing_one_is_no_error() {
        let dir = std::env::temp_dir().join(format!("oxport-claim-{}", std::process::id()));
        let tmp = dir.join(".out.oxport-tmp-1");
        std::fs::create_dir_all(tmp.join("sub")).unwrap();
        std::fs::write(tmp.join("sub/model.bin"), b"1234").unwrap();
        assert!(claim_and_remove(&tmp).unwrap());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(!claim_and_remove(&tmp).unwrap());
        std::fs::remove_dir(&dir).unwrap();
    }
}
