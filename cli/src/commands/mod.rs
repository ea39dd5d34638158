//! One module per group of subcommands.

pub mod build;
pub mod build_flags;
pub mod check;
pub mod container;
pub mod frontend;
pub mod image_prune;
pub mod images;
pub mod registry;
pub mod run;
pub mod snapshotter;
pub mod worker;
