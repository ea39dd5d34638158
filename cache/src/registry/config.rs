//! Which registries are spoken to how: plain HTTP or TLS, and mirrors.
//!
//! kiln has no daemon, so the settings docker keeps in `daemon.json` live in
//! `$KILN_ROOT/config.json` under the same names:
//!
//! ```json
//! { "insecure-registries": ["reg.lan:5000", "10.0.0.0/8"],
//!   "registry-mirrors": ["http://127.0.0.1:5000"],
//!   "mirrors": { "quay.io": ["https://quay-cache.lan"] } }
//! ```
//!
//! `registry-mirrors` stands in for docker.io, as in docker; `mirrors` is
//! kiln's extension for any other registry. The CLI's repeatable
//! `--insecure-registry` flag adds to the list for one command. As in
//! docker, `localhost` and 127.0.0.0/8 (and `::1`) are always insecure.
//! An insecure registry is tried over HTTPS without certificate checks
//! first and over plain HTTP if TLS fails; loopback goes straight to HTTP.
//!
//! Timeouts (seconds, fractions allowed) live there too, each overridable
//! by an environment variable for one command: `registry-timeout`
//! (`KILN_REGISTRY_TIMEOUT`, default 60) bounds a whole small request —
//! `/v2/` pings, token requests, manifests, configs, HEADs, upload starts;
//! `registry-stall-timeout` (`KILN_REGISTRY_STALL_TIMEOUT`, default 30)
//! bounds the time without a byte moving on any request, so a blob of any
//! size goes on as long as it flows; `registry-connect-timeout`
//! (`KILN_REGISTRY_CONNECT_TIMEOUT`, default 30) bounds the TCP and TLS
//! handshake.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::error::RegistryError;

/// The registry settings of one kiln invocation.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistryConfig {
    /// Hosts (`host[:port]`) or CIDR ranges reached without TLS checks.
    #[serde(default, rename = "insecure-registries")]
    pub insecure_registries: Vec<String>,
    /// Mirrors for docker.io, tried in order before docker.io itself.
    #[serde(default, rename = "registry-mirrors")]
    pub registry_mirrors: Vec<String>,
    /// Mirrors for other registries, by registry host.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Seconds a small request (ping, token, manifest, config, HEAD) may
    /// take in all; `None` is [`Timeouts::default`]'s.
    #[serde(default, rename = "registry-timeout")]
    pub registry_timeout: Option<f64>,
    /// Seconds a request may go without a byte moving either way.
    #[serde(default, rename = "registry-stall-timeout")]
    pub registry_stall_timeout: Option<f64>,
    /// Seconds a TCP connection and TLS handshake may take.
    #[serde(default, rename = "registry-connect-timeout")]
    pub registry_connect_timeout: Option<f64>,
}

/// How long the registry client waits, resolved from the config and the
/// environment. Separate limits because one number cannot serve both a
/// manifest (which a healthy registry sends in milliseconds, so a slow one
/// is broken) and a multi-gigabyte layer (which may take an hour, and is
/// only broken when it stops moving).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// Deadline for a whole small request, from sending to the last byte.
    pub small: Duration,
    /// Longest time without progress on any request, big or small.
    pub stall: Duration,
    /// Longest TCP connect plus TLS handshake.
    pub connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            small: Duration::from_secs(60),
            stall: Duration::from_secs(30),
            connect: Duration::from_secs(30),
        }
    }
}

/// The environment variables that override the config's timeouts.
pub const ENV_TIMEOUT: &str = "KILN_REGISTRY_TIMEOUT";
/// See [`ENV_TIMEOUT`].
pub const ENV_STALL_TIMEOUT: &str = "KILN_REGISTRY_STALL_TIMEOUT";
/// See [`ENV_TIMEOUT`].
pub const ENV_CONNECT_TIMEOUT: &str = "KILN_REGISTRY_CONNECT_TIMEOUT";

/// A timeout in seconds: positive, finite, at most a day.
fn seconds(name: &str, value: f64) -> Result<Duration, RegistryError> {
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(RegistryError::InvalidSetting {
            name: name.to_string(),
            value: value.to_string(),
            expected: "a number of seconds above 0 and at most 86400",
        })
    }
}

/// `env`, else the config value, else the default.
fn resolve(
    env: &str,
    key: &str,
    configured: Option<f64>,
    default: Duration,
) -> Result<Duration, RegistryError> {
    if let Ok(v) = std::env::var(env) {
        let n: f64 = v
            .trim()
            .parse()
            .map_err(|_| RegistryError::InvalidSetting {
                name: env.to_string(),
                value: v.clone(),
                expected: "a number of seconds above 0 and at most 86400",
            })?;
        return seconds(env, n);
    }
    match configured {
        Some(n) => seconds(key, n),
        None => Ok(default),
    }
}

/// How to reach a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTPS with certificate verification.
    Https,
    /// HTTPS without verification, falling back to HTTP.
    Insecure,
    /// Plain HTTP only.
    Http,
}

impl RegistryConfig {
    /// Reads `config.json` in the store folder; a missing file means defaults.
    pub fn load(root: &Path) -> Result<Self, RegistryError> {
        let path = root.join("config.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Config {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(RegistryError::Config {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// The timeouts to use: each environment variable overrides its config
    /// key, which overrides the default. A value that is not a positive
    /// number of seconds is an error rather than silently ignored, since
    /// a typo would otherwise bring back the defaults unnoticed.
    pub fn timeouts(&self) -> Result<Timeouts, RegistryError> {
        let d = Timeouts::default();
        Ok(Timeouts {
            small: resolve(
                ENV_TIMEOUT,
                "registry-timeout",
                self.registry_timeout,
                d.small,
            )?,
            stall: resolve(
                ENV_STALL_TIMEOUT,
                "registry-stall-timeout",
                self.registry_stall_timeout,
                d.stall,
            )?,
            connect: resolve(
                ENV_CONNECT_TIMEOUT,
                "registry-connect-timeout",
                self.registry_connect_timeout,
                d.connect,
            )?,
        })
    }

    /// How to reach `host` (`name[:port]`, `[v6]:port`).
    pub fn transport(&self, host: &str) -> Transport {
        let name = host_name(host);
        if name == "localhost" || name.ends_with(".localhost") {
            return Transport::Http;
        }
        let ip = name.parse::<IpAddr>().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return Transport::Http;
        }
        for entry in &self.insecure_registries {
            let entry = entry
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            if entry == host || entry == name {
                return Transport::Insecure;
            }
            if let (Some(ip), Some((net, bits))) = (ip, entry.split_once('/')) {
                if let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) {
                    if in_cidr(ip, net, bits) {
                        return Transport::Insecure;
                    }
                }
            }
        }
        Transport::Https
    }

    /// The mirror base URLs (`scheme://host[:port]`) standing in for `registry`.
    pub fn mirrors_for(&self, registry: &str) -> Vec<String> {
        let mut out = Vec::new();
        if matches!(
            registry,
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        ) {
            out.extend(self.registry_mirrors.iter().cloned());
        }
        if let Some(m) = self.mirrors.get(registry) {
            out.extend(m.iter().cloned());
        }
        out.into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect()
    }
}

/// The host part of `host[:port]` (brackets of an IPv6 literal removed).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    // A bare IPv6 literal has several colons and no port.
    if host.matches(':').count() > 1 {
        return host;
    }
    host.split(':').next().unwrap_or(host)
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The host that serves the API of `registry`: docker.io's API lives on
/// registry-1.docker.io.
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http() {
        let c = RegistryConfig::default();
        assert_eq!(c.transport("localhost:5000"), Transport::Http);
        assert_eq!(c.transport("127.0.0.1:5000"), Transport::Http);
        assert_eq!(c.transport("127.3.2.1"), Transport::Http);
        assert_eq!(c.transport("[::1]:5000"), Transport::Http);
        assert_eq!(c.transport("registry-1.docker.io"), Transport::Https);
        assert_eq!(c.transport("10.1.2.3:5000"), Transport::Https);
    }

    #[test]
    fn insecure_list_and_cidr() {
        let c: RegistryConfig = serde_json::from_str(
            r#"{"insecure-registries":["reg.lan:5000","10.0.0.0/8"],"registry-mirrors":["http://127.0.0.1:9/"]}"#,
        )
        .unwrap();
        assert_eq!(c.transport("reg.lan:5000"), Transport::Insecure);
        assert_eq!(c.transport("reg.lan:5001"), Transport::Https);
        assert_eq!(c.transport("10.9.8.7:443"), Transport::Insecure);
        assert_eq!(c.transport("11.0.0.1"), Transport::Https);
        assert_eq!(
            c.mirrors_for("docker.io"),
            vec!["http://127.0.0.1:9".to_string()]
        );
        assert!(c.mirrors_for("quay.io").is_empty());
    }

    #[test]
    fn timeout_keys() {
        let c: RegistryConfig = serde_json::from_str(
            r#"{"registry-timeout":5,"registry-stall-timeout":0.5,"registry-connect-timeout":2}"#,
        )
        .unwrap();
        // The environment is not set in unit tests, so the keys decide.
        if std::env::var_os(ENV_TIMEOUT).is_none()
            && std::env::var_os(ENV_STALL_TIMEOUT).is_none()
            && std::env::var_os(ENV_CONNECT_TIMEOUT).is_none()
        {
            let t = c.timeouts().unwrap();
            assert_eq!(t.small, Duration::from_secs(5));
            assert_eq!(t.stall, Duration::from_millis(500));
            assert_eq!(t.connect, Duration::from_secs(2));
            assert_eq!(
                RegistryConfig::default().timeouts().unwrap(),
                Timeouts::default()
            );
            let bad: RegistryConfig = serde_json::from_str(r#"{"registry-timeout":0}"#).unwrap();
            assert!(bad
                .timeouts()
                .unwrap_err()
                .to_string()
                .contains("registry-timeout"));
        }
    }
}
