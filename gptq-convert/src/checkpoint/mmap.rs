//! The one place this crate maps a file into memory.

use std::fs::File;
use std::path::Path;

use anyhow::anyhow;
use memmap2::Mmap;

/// Maps `path` read-only. The mapping lives as long as the returned value.
pub(crate) fn map_file(path: &Path) -> anyhow::Result<Mmap> {
    let file = File::open(path).map_err(|e| anyhow!("{}: cannot open: {e}", path.display()))?;
    // SAFETY: the mapping is read-only and private, and every slice taken from it
    // borrows the `Mmap`, so none outlives the mapping. The remaining hazard of any
    // file mapping, another process truncating or rewriting the file while it is
    // mapped, is outside what Rust can guard; checkpoints are inputs that are not
    // modified while a conversion reads them (the contract of every mmap-based
    // model loader).
    let map = unsafe { Mmap::map(&file) }
        .map_err(|e| anyhow!("{}: cannot map into memory: {e}", path.display()))?;
    Ok(map)
}
