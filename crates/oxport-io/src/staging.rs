//! The staging folder: an export is built in `.NAME.oxport-tmp-PID` beside its output (same file system, so the
//! final rename is atomic) and committed by rename, or removed by the Drop guard when the export fails or is
//! cancelled. Folders left by exports whose process was killed are found by their PID and removed by the next
//! export of the same output ([`remove_stale`]); a folder is claimed by renaming it before it is removed
//! ([`claim_and_remove`]), so against the exporter's final rename exactly one of the two wins.

use std::path::{Path, PathBuf};

use crate::{Result, io};

/// Suffix of a staging folder that was claimed for removal.
const CLAIMED_SUFFIX: &str = ".interrupted";

/// What committing does with an existing output folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitPolicy {
    /// The output must not exist or be an empty folder (the exporter refuses anything else before it starts); the
    /// staging folder is renamed into its place. oxport-onnx.
    RequireEmpty,
    /// An existing output folder receives the files, each replacing its namesake by an atomic rename, as
    /// optimum-cli writes into an existing folder; a missing one is the staging folder renamed. oxport-openvino.
    MergeInto,
}

/// `.{name}.oxport-tmp-{pid}` in `output`'s parent folder (`.` when it has none).
pub fn staging_dir_for(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(format!(".{name}.oxport-tmp-{}", std::process::id()))
}

/// The folder an export is built in; removed on drop unless [`commit`](Self::commit) moved it into place.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    output: PathBuf,
    policy: CommitPolicy,
    committed: bool,
}

impl Staging {
    /// Create [`staging_dir_for`]`(output)` (and the output's parent), removing a leftover of this process first.
    pub fn create(output: &Path, policy: CommitPolicy) -> Result<Self> {
        let dir = staging_dir_for(output);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(Staging {
            dir,
            output: output.to_path_buf(),
            policy,
            committed: false,
        })
    }

    /// The staging folder, to write the export's files into.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The files written so far: (name, bytes), sorted by name.
    pub fn files(&self) -> Result<Vec<(String, u64)>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let len = entry.metadata().map_err(io(&entry.path()))?.len();
            files.push((entry.file_name().to_string_lossy().into_owned(), len));
        }
        files.sort();
        Ok(files)
    }

    /// Move the export into place under the policy.
    pub fn commit(mut self) -> Result<()> {
        let output = self.output.clone();
        match self.policy {
            CommitPolicy::MergeInto if output.exists() => {
                for (name, _) in self.files()? {
                    let (from, to) = (self.dir.join(&name), output.join(&name));
                    std::fs::rename(&from, &to).map_err(io(&to))?;
                }
                // The emptied staging folder goes with the guard.
            }
            CommitPolicy::RequireEmpty | CommitPolicy::MergeInto => {
                if output.exists() {
                    std::fs::remove_dir(&output).map_err(io(&output))?;
                }
                std::fs::rename(&self.dir, &output).map_err(io(&output))?;
                self.committed = true;
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    /// A failed or cancelled export leaves nothing behind.
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Rename `staging` out of the exporter's reach, then remove it. `Ok(false)`: there was no such folder (not created
/// yet, already committed, or already removed by the exporter's guard).
pub fn claim_and_remove(staging: &Path) -> std::io::Result<bool> {
    let mut claimed = staging.as_os_str().to_owned();
    claimed.push(CLAIMED_SUFFIX);
    let claimed = PathBuf::from(claimed);
    match std::fs::rename(staging, &claimed) {
        Ok(()) => std::fs::remove_dir_all(&claimed).map(|()| true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        // Renaming failed for another reason (e.g. a leftover claimed folder in the way): remove in place.
        Err(_) => std::fs::remove_dir_all(staging).map(|()| true),
    }
}

/// Remove the siblings of `staging` (`.NAME.oxport-tmp-PID`, or the same with `.interrupted`) left by exports of
/// the same output whose process is gone. A folder whose PID is a running process (another export in flight, or a
/// recycled PID) is never touched. Returns each stale folder, sorted, with the outcome of removing it.
pub fn remove_stale(staging: &Path) -> Vec<(PathBuf, std::io::Result<()>)> {
    let (Some(parent), Some(name)) = (staging.parent(), staging.file_name()) else {
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
        .filter_map(std::result::Result::ok)
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
    // Sorted: the caller's report does not depend on the directory's order.
    stale.sort();
    stale
        .into_iter()
        .map(|path| {
            let outcome = std::fs::remove_dir_all(&path);
            (path, outcome)
        })
        .collect()
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

mod process {
    /// Whether `pid` is a running process. Where that cannot be told, the answer is yes (nothing gets removed).
    #[cfg(target_os = "linux")]
    pub(super) fn running(pid: u32) -> bool {
        let proc = std::path::Path::new("/proc");
        // Without a mounted /proc every PID would look dead.
        !proc.join("self").exists() || proc.join(pid.to_string()).exists()
    }

    #[cfg(all(unix, not(target_os = "linux")))]
    pub(super) fn running(pid: u32) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }

    #[cfg(not(unix))]
    pub(super) fn running(_pid: u32) -> bool {
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
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(".out.oxport-tmp-1");
        std::fs::create_dir_all(tmp.join("sub")).unwrap();
        std::fs::write(tmp.join("sub/model.bin"), b"1234").unwrap();
        assert!(claim_and_remove(&tmp).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!claim_and_remove(&tmp).unwrap());
    }

    #[test]
    fn a_dropped_staging_folder_is_removed_and_a_committed_one_moved() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out");
        let staging = Staging::create(&output, CommitPolicy::RequireEmpty).unwrap();
        std::fs::write(staging.path().join("a"), b"1").unwrap();
        let path = staging.path().to_path_buf();
        drop(staging);
        assert!(!path.exists());
        let staging = Staging::create(&output, CommitPolicy::RequireEmpty).unwrap();
        std::fs::write(staging.path().join("a"), b"12").unwrap();
        assert_eq!(staging.files().unwrap(), vec![("a".to_string(), 2)]);
        staging.commit().unwrap();
        assert_eq!(std::fs::read(output.join("a")).unwrap(), b"12");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn merging_replaces_namesakes_and_keeps_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out");
        std::fs::create_dir(&output).unwrap();
        std::fs::write(output.join("a"), b"old").unwrap();
        std::fs::write(output.join("keep"), b"k").unwrap();
        let staging = Staging::create(&output, CommitPolicy::MergeInto).unwrap();
        std::fs::write(staging.path().join("a"), b"new").unwrap();
        staging.commit().unwrap();
        assert_eq!(std::fs::read(output.join("a")).unwrap(), b"new");
        assert_eq!(std::fs::read(output.join("keep")).unwrap(), b"k");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
