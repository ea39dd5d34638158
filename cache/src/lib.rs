//! Content and image store.
