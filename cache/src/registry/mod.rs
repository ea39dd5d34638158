//! Moving images between the local store and OCI distribution registries.
//!
//! [`pull`] and [`push`] are the entry points; both take the store, the
//! references, options (insecure registries, mirrors, concurrency) and a
//! [`Progress`] sink. Credentials come from docker's `config.json`
//! ([`DockerConfig`]), which `kiln login` writes through [`verify_login`]
//! and [`DockerConfig::store`].

pub mod auth;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;
pub mod remote;
pub mod unpack;

pub use client::verify_login;
pub use config::RegistryConfig;
pub use credentials::{login_server, Credentials, DockerConfig, Secret};
pub use error::RegistryError;
pub use manifest::Platform;
pub use progress::{NoProgress, Outcome, Progress};
pub use pull::{pull, PullOptions, Unpacker};
pub use push::{blobs_present, push, push_descriptor, PushOptions};
pub use remote::{RemoteManifest, RemoteSource};
pub use unpack::{LayerSink, LayerUnpacker, PendingLayer, UnpackError};
