//! The one progress interface of the libraries, and cancellation.
//!
//! Progress is a stream of [`Event`]s to one method, [`Reporter::report`], rather than a trait with a method per
//! occasion: every long-running step in oxport (writing weights, scoring sensitivities, validating prompts,
//! downloading a file) is "a stage of N units, advanced by named items", so one small enum covers them all; an
//! adapter from another callback shape (oxport-quant's scoring callback, the hub's download callbacks) is one
//! `match`; and the CLI's single implementation draws every stage the same way.
//!
//! Cancellation is not a return value of [`Reporter::report`]: a [`CancelToken`] is passed beside the reporter,
//! so silent callers (tests, benches) can still cancel, and a library checks it where stopping is safe (between
//! tensors), returning [`Cancelled`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Something a long-running library call reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A stage of `total` units begins (0: not counted). `stage` says what is counted or done ("weights",
    /// "sensitivities", "prompts", a file name); `bytes` tells that the units are bytes.
    Begin {
        stage: &'a str,
        total: u64,
        bytes: bool,
    },
    /// `units` more units of the current stage are done; `item` names the last one done ("" when unnamed).
    Advance { item: &'a str, units: u64 },
    /// The current stage is over.
    End,
}

impl<'a> Event<'a> {
    /// [`Event::Begin`] of a stage counted in items.
    pub fn stage(stage: &'a str, total: u64) -> Self {
        Event::Begin {
            stage,
            total,
            bytes: false,
        }
    }

    /// [`Event::Advance`] by one item, `item` (or "" when unnamed).
    pub fn item(item: &'a str) -> Self {
        Event::Advance { item, units: 1 }
    }
}

/// Receives the [`Event`]s of a library call. Library code never prints; the CLI implements this with indicatif.
pub trait Reporter: Sync {
    fn report(&self, event: Event<'_>);
}

/// A [`Reporter`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Event<'_>) {}
}

/// Asks a running export to stop. Clones share one flag; [`cancel`](Self::cancel) may be called from any thread
/// (e.g. a signal-handling thread), and the library notices it at its next [`check`](Self::check).
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` once cancelled. `staging` is the export's staging folder if it exists at this point: its
    /// Drop guard removes it as the error propagates.
    pub fn check(&self, staging: Option<&std::path::Path>) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            return Err(Cancelled {
                staging: staging.map(|p| p.to_path_buf()),
            });
        }
        Ok(())
    }
}

/// The call stopped because its [`CancelToken`] was cancelled; nothing it wrote is left.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled {
    /// The staging folder that existed when the export stopped, removed by its guard before the error reached
    /// the caller.
    pub staging: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag_and_check_names_the_staging_folder() {
        let token = CancelToken::new();
        let other = token.clone();
        assert!(token.check(None).is_ok());
        other.cancel();
        assert!(token.is_cancelled());
        let e = token.check(Some("x/.y.oxport-tmp-1".as_ref())).unwrap_err();
        assert_eq!(e.staging, Some(PathBuf::from("x/.y.oxport-tmp-1")));
    }
}
