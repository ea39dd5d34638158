//! The machinery of `kiln build` beyond argument handling: exporting the
//! result as an image, and the remote build cache.

pub mod export;
pub mod remote_cache;
pub mod secrets;
