//! The one indicatif implementation of oxport-io's [`Reporter`]: every stage a library reports (weights,
//! initializers, sensitivities, validation prompts, a download) is one bar on stderr, replaced by the next stage's.

use std::sync::{Mutex, PoisonError};

use indicatif::{ProgressBar, ProgressStyle};
use oxport_io::{Event, Reporter};

/// Bars for the stages of one library call; nothing is drawn with `quiet` (or when stderr is not a terminal).
pub(crate) struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Bars {
    pub(crate) fn new(quiet: bool) -> Self {
        Bars {
            bar: Mutex::new(None),
            quiet,
        }
    }

    /// Clear the bar of an unfinished stage (before the command prints its result).
    pub(crate) fn finish(&self) {
        if let Some(bar) = self.lock().take() {
            bar.finish_and_clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        // Drawing never panics while holding the lock; a poisoned lock still holds a valid bar.
        self.bar.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn style(total: u64, bytes: bool) -> ProgressStyle {
    let template = match (total, bytes) {
        (0, false) => "{prefix:>18} {spinner} {elapsed} {wide_msg}",
        (0, true) => "{prefix:>18} {spinner} {bytes}",
        (_, false) => "{prefix:>18} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}",
        (_, true) => "{prefix:>18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    };
    ProgressStyle::with_template(template)
        .expect("static template")
        .progress_chars("=> ")
}

impl Reporter for Bars {
    fn report(&self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        let mut slot = self.lock();
        match event {
            Event::Begin {
                stage,
                total,
                bytes,
            } => {
                let bar = ProgressBar::new(total).with_style(style(total, bytes));
                bar.set_prefix(stage.to_string());
                if let Some(old) = slot.replace(bar) {
                    old.finish_and_clear();
                }
            }
            Event::Advance { item, units } => {
                if let Some(bar) = slot.as_ref() {
                    bar.inc(units);
                    if !item.is_empty() {
                        bar.set_message(item.to_string());
                    }
                }
            }
            Event::End => {
                if let Some(bar) = slot.take() {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}
