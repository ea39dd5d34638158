//! One module per group of subcommands.

pub mod attach;
pub mod build;
pub mod build_flags;
pub mod check;
pub mod compose;
pub mod compose_build;
pub mod compose_extra;
pub mod compose_ops;
pub mod compose_progress;
pub mod compose_up;
pub mod container;
pub mod container_files;
pub mod container_inspect;
pub mod container_ps;
pub mod container_top;
pub mod frontend;
pub mod image_prune;
pub mod images;
pub mod network;
pub mod registry;
pub mod run;
pub mod run_net;
pub mod snapshotter;
pub mod volume;
pub mod worker;
