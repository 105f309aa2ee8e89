//! The one place this crate maps a file into memory, and the bytes a reader
//! works on: a mapping, or an owned buffer for checkpoints that are already in
//! memory (tests, fuzzers, embedders).

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use anyhow::anyhow;
use memmap2::Mmap;

/// The bytes of one weights file.
pub(crate) enum FileBytes {
    /// A read-only mapping of the file.
    Mapped(Mmap),
    /// Bytes handed over in memory.
    Owned(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

/// Maps `path` read-only. The mapping lives as long as the returned value.
pub(crate) fn map_file(path: &Path) -> anyhow::Result<FileBytes> {
    let file = File::open(path).map_err(|e| anyhow!("{}: cannot open: {e}", path.display()))?;
    // SAFETY: the mapping is read-only and private, and every slice taken from it
    // borrows the `Mmap`, so none outlives the mapping. The remaining hazard of any
    // file mapping, another process truncating or rewriting the file while it is
    // mapped, is outside what Rust can guard; checkpoints are inputs that are not
    // modified while a conversion reads them (the contract of every mmap-based
    // model loader).
    let map = unsafe { Mmap::map(&file) }
        .map_err(|e| anyhow!("{}: cannot map into memory: {e}", path.display()))?;
    Ok(FileBytes::Mapped(map))
}

/// Lets the kernel drop the pages of `range` now that they have been read, so a
/// conversion's resident memory stays near one tensor rather than growing to
/// the whole checkpoint. Advice only: failure changes nothing, and bytes held
/// in memory are left as they are.
pub(crate) fn release(bytes: &FileBytes, range: std::ops::Range<usize>) {
    #[cfg(unix)]
    {
        let FileBytes::Mapped(map) = bytes else {
            return;
        };
        let len = range.end.min(map.len()).saturating_sub(range.start);
        if len == 0 {
            return;
        }
        // SAFETY: the mapping is a read-only view of a file that is not modified
        // while we read it (see `map_file`); MADV_DONTNEED on such a mapping only
        // evicts pages, and any later read faults the same bytes back in from
        // the file, so no reference ever observes different contents.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, len)
        };
    }
    #[cfg(not(unix))]
    let _ = (bytes, range);
}
