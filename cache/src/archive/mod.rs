//! Image archives: OCI layouts (folder or tar) and docker-archives.
//!
//! These are how images travel without a registry (`docker save | kiln
//! load`, `kiln save | skopeo copy`), so kiln must read what docker,
//! podman, skopeo and BuildKit write, and write what they read.

mod load;
mod paths;
mod save;

pub use load::{
    layout_blob_descriptor, layout_index, load, load_layout_image, LoadOptions, LoadReport,
    LoadedImage,
};
pub use save::{
    compress_items, save, save_compressed, save_compressed_to_file, save_to_file, Format, SaveItem,
    SaveOptions,
};
