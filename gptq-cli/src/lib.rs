//! The parts of the `gptq` command that other programs link: the shared
//! flags, model loading, and `gptq serve` (which the fuzz targets drive in
//! process, without a socket). The other subcommands live in the binary.

pub mod args;
pub mod load;
pub mod model_path;
pub mod serve;
