//! Content and image store.
//!
//! The storage half (blobs, names, archives, garbage collection) is
//! synchronous and file-based; the registry client moves content between
//! this store and registries.

pub mod archive;
pub mod blobs;
pub mod buildcache;
pub mod catalog;
pub mod compress;
pub mod digest;
pub mod error;
pub mod gc;
pub mod image;
pub mod images;
pub mod layer;
pub mod lock;
pub mod media;
pub mod pgzip;
pub mod reference;
pub mod registry;
pub mod remote;
pub mod root;
pub mod sparse;
pub mod untagged;

pub use blobs::{BlobStore, BlobWriter, PendingBlob};
pub use digest::Digest;
pub use error::{Error, Result};
pub use images::ImageStore;
pub use layer::LayerRef;
pub use reference::Reference;
pub use root::Root;
