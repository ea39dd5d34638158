//! Moving images between the local store and OCI distribution registries.

pub mod auth;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;

pub use config::RegistryConfig;
pub use credentials::{Credentials, DockerConfig, Secret};
pub use error::RegistryError;
