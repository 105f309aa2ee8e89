//! Which model file to load when `-m` is not given.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// File name of the default model in `models/`.
pub const DEFAULT_MODEL: &str = "trained-small-q8_0.gguf";

/// `-m` if given, else `$GPTQ_MODEL`, else `models/<DEFAULT_MODEL>` relative to
/// the current folder, else the `models/` folder of the source tree this
/// binary was built from.
pub fn resolve(m: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = m {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("GPTQ_MODEL").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let candidates = [
        PathBuf::from("models").join(DEFAULT_MODEL),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("models")
            .join(DEFAULT_MODEL),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no model given (-m FILE) and the default model was not found at {} (see models/README.md)",
        candidates[0].display()
    )
}
