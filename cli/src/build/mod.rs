//! The machinery of `kiln build` beyond argument handling: exporting the
//! result as an image.

pub mod export;
