//! The output file: written as a temporary file beside the target and
//! renamed into place only when complete, so the target is either absent (or
//! its previous version) or a whole, synced file — never a partial one, even
//! when the converter is killed.
//!
//! A killed converter cannot delete its temporary file, so each temporary file
//! is locked (`flock`) by the process writing it, and the next conversion to
//! the same target removes those whose lock nobody holds any more: their
//! writer is gone. A temporary file of a conversion still running is locked
//! and left alone.

use std::fs::{File, TryLockError};
use std::path::Path;

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

/// The prefix and suffix of the temporary files for `out`: `.<name>.XXXXXX.tmp`.
fn temp_affixes(out: &Path) -> (String, &'static str) {
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    (format!(".{name}."), ".tmp")
}

/// Creates the locked temporary file for `out` in `parent` (the target's
/// folder), after removing the ones that killed conversions left there.
pub(crate) fn create_temp(out: &Path, parent: &Path) -> Result<NamedTempFile> {
    remove_stale(out, parent);
    let (prefix, suffix) = temp_affixes(out);
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(suffix)
        .tempfile_in(parent)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;
    // Held until the file is renamed or deleted (or the process dies).
    match tmp.as_file().try_lock() {
        Ok(()) | Err(TryLockError::WouldBlock) => {}
        // A file system without locks: the stale-file sweep then finds the
        // files unlockable too and leaves them, which is safe.
        Err(TryLockError::Error(_)) => {}
    }
    Ok(tmp)
}

/// Removes the temporary files of `out` in `parent` that no process holds
/// locked. Best effort: anything unreadable is left where it is.
fn remove_stale(out: &Path, parent: &Path) {
    let (prefix, suffix) = temp_affixes(out);
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !(name.starts_with(&prefix) && name.ends_with(suffix)) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            // Nobody writes it: its converter died. Removed while we hold the
            // lock, so a run that starts now cannot be handed the same name
            // (tempfile creates with O_EXCL) before it is gone.
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The number of temporary files of `out` in `parent` (for tests).
#[cfg(test)]
fn count_temps(out: &Path, parent: &Path) -> usize {
    let (prefix, suffix) = temp_affixes(out);
    std::fs::read_dir(parent)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && n.ends_with(suffix)
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.gguf");
        // A leftover of a killed run: nobody holds its lock.
        std::fs::write(dir.path().join(".m.gguf.abc123.tmp"), b"partial").unwrap();
        // Someone else's file with a similar name is not touched.
        std::fs::write(dir.path().join(".other.gguf.abc123.tmp"), b"x").unwrap();
        // A live conversion's file: locked.
        let live = create_temp(&out, dir.path()).unwrap();
        assert_eq!(count_temps(&out, dir.path()), 1);
        assert!(live.path().exists());
        // Another run sweeps again: the live one stays.
        let second = create_temp(&out, dir.path()).unwrap();
        assert!(live.path().exists());
        assert_eq!(count_temps(&out, dir.path()), 2);
        drop(second);
        drop(live);
        assert_eq!(count_temps(&out, dir.path()), 0);
        assert!(dir.path().join(".other.gguf.abc123.tmp").exists());
    }
}
