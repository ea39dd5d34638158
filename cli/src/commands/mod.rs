//! One module per group of subcommands.

pub mod frontend;
pub mod registry;
pub mod worker;
