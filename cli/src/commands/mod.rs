//! One module per group of subcommands.

pub mod build;
pub mod build_flags;
pub mod check;
pub mod frontend;
pub mod image_prune;
pub mod images;
pub mod network;
pub mod registry;
pub mod run;
pub mod run_net;
pub mod snapshotter;
pub mod worker;
