//! Registry credentials kept where docker keeps them.
//!
//! kiln reads and writes docker's `config.json` (in `$DOCKER_CONFIG`, else
//! `~/.docker`) rather than a file of its own, so that a `docker login`,
//! `podman login --compat-auth-file` or a CI's pre-seeded config works for
//! kiln unchanged, and `kiln login` works for docker. Secrets go through
//! `credHelpers` / `credsStore` (`docker-credential-<name>` programs) when
//! the config names one, exactly as docker does, else into `auths` as
//! base64 `user:password`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Map, Value};

use super::error::RegistryError;

/// A secret string whose `Debug` and `Display` never show it, so that no
/// log line, error or panic message can leak a password or token.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The value itself; call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a registry login is made of. Docker's helpers return an
/// `<token>` user name for identity tokens; kiln treats those like any
/// user/password pair and lets the registry's token server decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (not secret: it appears in messages such as "login as").
    pub username: String,
    /// The password or token.
    pub password: Secret,
}

/// The server key under which docker files credentials for `registry`:
/// docker.io uses its historical index URL, every other registry its host.
pub fn config_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_string()
        }
        other => other.to_string(),
    }
}

/// The registry a `login`/`logout` server argument names: docker accepts
/// URLs there, and Docker Hub under any of its names (or none) is
/// `docker.io`.
pub fn login_server(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Strips a scheme and path from a config key so `https://host/v1/` and
/// `host` compare equal, as docker's lookup does.
fn normalise_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Docker's client configuration file, kept as a JSON value so that every
/// field kiln does not know (proxies, plugins, aliases …) survives a
/// `kiln login` untouched.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    value: Map<String, Value>,
}

impl DockerConfig {
    /// Where docker looks: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("config.json");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".docker").join("config.json")
    }

    /// Reads the file at the default path; a missing file is an empty config.
    pub fn load_default() -> Result<Self, RegistryError> {
        Self::load(&Self::default_path())
    }

    /// Reads `path`; a missing or empty file is an empty config.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let value = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(RegistryError::Config {
                        path: path.to_path_buf(),
                        message: "the top level is not a JSON object".into(),
                    })
                }
                Err(e) => {
                    return Err(RegistryError::Config {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => {
                return Err(RegistryError::Config {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        };
        Ok(DockerConfig {
            path: path.to_path_buf(),
            value,
        })
    }

    /// The file this config was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The helper that holds `registry`'s secret, if any: a per-registry
    /// `credHelpers` entry wins over the global `credsStore`.
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let key = config_key(registry);
        if let Some(Value::Object(h)) = self.value.get("credHelpers") {
            for (k, v) in h {
                if normalise_key(k) == normalise_key(&key) {
                    if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                        return Some(s.to_string());
                    }
                }
            }
        }
        self.value
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The credentials for `registry`, from its helper or from `auths`;
    /// `None` means anonymous access.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(helper) = self.helper_for(registry) {
            if let Some(c) = helper_get(&helper, &config_key(registry))? {
                return Ok(Some(c));
            }
        }
        Ok(self.auths_entry(registry))
    }

    fn auths_entry(&self, registry: &str) -> Option<Credentials> {
        let key = config_key(registry);
        let Some(Value::Object(auths)) = self.value.get("auths") else {
            return None;
        };
        let entry = auths.get(&key).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| normalise_key(k) == normalise_key(&key))
                .map(|(_, v)| v)
        })?;
        if let Some(tok) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let username = entry
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or("<token>")
                .to_string();
            return Some(Credentials {
                username,
                password: Secret::new(tok),
            });
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (u, p) = text.split_once(':')?;
            return Some(Credentials {
                username: u.to_string(),
                password: Secret::new(p),
            });
        }
        let u = entry.get("username").and_then(Value::as_str)?;
        let p = entry.get("password").and_then(Value::as_str)?;
        Some(Credentials {
            username: u.to_string(),
            password: Secret::new(p),
        })
    }

    /// Records `creds` for `registry` (in its helper if it has one) and
    /// writes the file atomically.
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
        let key = config_key(registry);
        let auths = self
            .value
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Some(helper) = self.helper_for(registry) {
            helper_store(&helper, &key, creds)?;
            // Docker leaves an empty entry so `docker info` lists the login.
            if let Some(Value::Object(a)) = self.value.get_mut("auths") {
                a.insert(key, Value::Object(Map::new()));
            }
        } else if let Some(Value::Object(a)) = self.value.get_mut("auths") {
            let pair = format!("{}:{}", creds.username, creds.password.expose());
            let mut entry = Map::new();
            entry.insert(
                "auth".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(pair)),
            );
            a.insert(key, Value::Object(entry));
        }
        self.save()
    }

    /// Forgets `registry`'s credentials; returns whether there were any.
    pub fn erase(&mut self, registry: &str) -> Result<bool, RegistryError> {
        let key = config_key(registry);
        let mut found = false;
        if let Some(helper) = self.helper_for(registry) {
            found |= helper_erase(&helper, &key)?;
        }
        if let Some(Value::Object(a)) = self.value.get_mut("auths") {
            let keys: Vec<String> = a
                .keys()
                .filter(|k| normalise_key(k) == normalise_key(&key))
                .cloned()
                .collect();
            for k in keys {
                a.remove(&k);
                found = true;
            }
        }
        if found {
            self.save()?;
        }
        Ok(found)
    }

    /// Writes the file through a temp file and a rename, mode 0600, so a
    /// crash never leaves a truncated config and other users never read it.
    fn save(&self) -> Result<(), RegistryError> {
        let err = |e: std::io::Error| RegistryError::Config {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
                .map_err(err)?;
        }
        let text =
            serde_json::to_string_pretty(&Value::Object(self.value.clone())).map_err(|e| {
                RegistryError::Config {
                    path: self.path.clone(),
                    message: e.to_string(),
                }
            })?;
        tmp.write_all(text.as_bytes()).map_err(err)?;
        tmp.write_all(b"\n").map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
fn run_helper(helper: &str, action: &str, input: &str) -> Result<(bool, String), RegistryError> {
    let program = format!("docker-credential-{helper}");
    let herr = |message: String| RegistryError::CredentialHelper {
        helper: program.clone(),
        message,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| herr(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| herr(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| herr(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((out.status.success(), stdout))
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, RegistryError> {
    let (ok, out) = run_helper(helper, "get", server)?;
    if !ok {
        // Helpers answer "credentials not found in native keychain" with a
        // failure status; that is anonymous access, not an error.
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let r: Reply = serde_json::from_str(&out).map_err(|e| RegistryError::CredentialHelper {
        helper: format!("docker-credential-{helper}"),
        message: format!("unreadable answer to get: {e}"),
    })?;
    Ok(Some(Credentials {
        username: r.username,
        password: Secret::new(r.secret),
    }))
}

fn helper_store(helper: &str, server: &str, creds: &Credentials) -> Result<(), RegistryError> {
    let mut m = BTreeMap::new();
    m.insert("ServerURL", server);
    m.insert("Username", creds.username.as_str());
    m.insert("Secret", creds.password.expose());
    let input = serde_json::to_string(&m).unwrap_or_default();
    let (ok, out) = run_helper(helper, "store", &input)?;
    if !ok {
        return Err(RegistryError::CredentialHelper {
            helper: format!("docker-credential-{helper}"),
            message: format!("store failed: {}", out.trim()),
        });
    }
    Ok(())
}

fn helper_erase(helper: &str, server: &str) -> Result<bool, RegistryError> {
    let (ok, _) = run_helper(helper, "erase", server)?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{}", c.password).contains("hunter2"));
    }

    #[test]
    fn store_read_erase_keeps_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"proxies":{"default":{"httpProxy":"x"}}}"#).unwrap();
        let mut cfg = DockerConfig::load(&path).unwrap();
        let creds = Credentials {
            username: "alice".into(),
            password: Secret::new("p:w"),
        };
        cfg.store("127.0.0.1:5000", &creds).unwrap();
        cfg.store("docker.io", &creds).unwrap();
        let cfg = DockerConfig::load(&path).unwrap();
        assert_eq!(
            cfg.credentials("127.0.0.1:5000").unwrap(),
            Some(creds.clone())
        );
        assert_eq!(cfg.credentials("docker.io").unwrap(), Some(creds.clone()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("https://index.docker.io/v1/"));
        assert!(text.contains("httpProxy"));
        let mut cfg = DockerConfig::load(&path).unwrap();
        assert!(cfg.erase("127.0.0.1:5000").unwrap());
        assert!(!cfg.erase("127.0.0.1:5000").unwrap());
        assert_eq!(
            DockerConfig::load(&path)
                .unwrap()
                .credentials("127.0.0.1:5000")
                .unwrap(),
            None
        );
    }

    #[test]
    fn helper_protocol() {
        let dir = tempfile::tempdir().unwrap();
        // A credential helper that keeps one secret in a file beside it.
        let helper = dir.path().join("docker-credential-kilntest");
        let store = dir.path().join("store.json");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n store) cat > {s} ;;\n get) read srv; [ -f {s} ] || exit 1; \
                 sed 's/\"ServerURL\":\"[^\"]*\",//' {s} ;;\n erase) rm -f {s} ;;\nesac\n",
                s = store.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example:5000":"kilntest"}}"#).unwrap();
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.path().to_path_buf()];
        paths.extend(std::env::split_paths(&old));
        std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
        let mut cfg = DockerConfig::load(&path).unwrap();
        assert_eq!(cfg.credentials("reg.example:5000").unwrap(), None);
        let creds = Credentials {
            username: "bob".into(),
            password: Secret::new("s3cret"),
        };
        cfg.store("reg.example:5000", &creds).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("s3cret"),
            "the secret went to the helper, not the file"
        );
        assert_eq!(cfg.credentials("reg.example:5000").unwrap(), Some(creds));
        assert!(cfg.erase("reg.example:5000").unwrap());
        assert_eq!(cfg.credentials("reg.example:5000").unwrap(), None);
    }
}
