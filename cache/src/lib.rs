//! Content and image store.
pub mod registry;
