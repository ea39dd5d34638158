//! `--secret` and `--ssh` values, parsed as buildx parses them, into
//! the worker's [`Secrets`] (sources only: values are read when a step
//! mounts them, and never printed). `--ssh ID=KEYFILE` starts an agent
//! holding the keys ([`KeyAgent`]).

use std::path::PathBuf;

use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;

use kiln_worker::key_agent::KeyAgent;
use kiln_worker::secrets::{SecretSource, Secrets};

/// A `--secret` or `--ssh` value that cannot be used; the message says why
/// in buildx's words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretSpecError(String);

type Result<T> = std::result::Result<T, SecretSpecError>;

macro_rules! spec_err {
    ($($t:tt)*) => { SecretSpecError(format!($($t)*)) };
}

/// Builds the worker's table from the flags' values.
pub fn parse(secret: &[String], ssh: &[String]) -> Result<Secrets> {
    let mut out = Secrets::default();
    for s in secret {
        let (id, src) = parse_secret(s)?;
        out.secrets.insert(id, src);
    }
    for s in ssh {
        let (id, source) = parse_ssh(s, std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from))?;
        let sock = match source {
            SshSource::Socket(sock) => sock,
            SshSource::Keys(keys) => {
                let agent = KeyAgent::start(&keys).map_err(|e| spec_err!("--ssh {s:?}: {e}"))?;
                let sock = agent.socket().to_path_buf();
                out.key_agents.push(Arc::new(agent));
                sock
            }
        };
        out.ssh.insert(id, sock);
    }
    Ok(out)
}

/// One `--secret [type=file|env,]id=ID[,src=PATH|,env=VAR]`. With neither
/// `src` nor `env`, the environment variable named ID when set, else the
/// file named ID (buildx, BuildKit's secretsprovider).
fn parse_secret(spec: &str) -> Result<(String, SecretSource)> {
    let (mut typ, mut id, mut src, mut env) = (None, None, None, None);
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| spec_err!("invalid field '{field}' must be a key=value pair"))?;
        match k.to_ascii_lowercase().as_str() {
            "type" => match v {
                "file" | "env" => typ = Some(v.to_string()),
                _ => return Err(spec_err!("unsupported secret type {v:?}")),
            },
            "id" => id = Some(v.to_string()),
            "source" | "src" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            _ => return Err(spec_err!("unexpected key '{k}' in '{field}'")),
        }
    }
    if typ.as_deref() == Some("env") && env.is_none() {
        env = src.take();
    }
    // buildx: the id defaults to the env name or the file's base name.
    let id = id
        .filter(|i| !i.is_empty())
        .or_else(|| env.clone())
        .or_else(|| {
            src.as_deref()
                .and_then(|s| s.rsplit('/').next())
                .map(String::from)
        })
        .filter(|i| !i.is_empty())
        .ok_or_else(|| spec_err!("secret ID missing in --secret {spec:?}"))?;
    let source = match (src, env) {
        (Some(_), Some(_)) => {
            return Err(spec_err!(
                "--secret {spec:?}: give either src or env, not both"
            ))
        }
        (Some(p), None) => SecretSource::File(PathBuf::from(p)),
        (None, Some(v)) => SecretSource::Env(v),
        (None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
        (None, None) => SecretSource::File(PathBuf::from(&id)),
    };
    if let SecretSource::File(p) = &source {
        if let Err(e) = std::fs::metadata(p) {
            return Err(spec_err!("failed to stat {}: {e}", p.display()));
        }
    }
    Ok((id, source))
}

/// What one `--ssh` value names: an agent socket, or key files that need
/// an agent of kiln's.
#[derive(Debug, PartialEq, Eq)]
enum SshSource {
    Socket(PathBuf),
    Keys(Vec<PathBuf>),
}

/// One `--ssh default|ID[=SOCKET|KEYFILE[,KEYFILE…]]` as buildx reads it:
/// `$SSH_AUTH_SOCK` when nothing is named, else one agent socket or any
/// number of private key files.
fn parse_ssh(spec: &str, auth_sock: Option<PathBuf>) -> Result<(String, SshSource)> {
    let (id, paths): (&str, Vec<&str>) = match spec.split_once('=') {
        Some((id, p)) => (id, p.split(',').filter(|p| !p.is_empty()).collect()),
        None => (spec, Vec::new()),
    };
    if id.is_empty() {
        return Err(spec_err!("--ssh {spec:?}: empty id"));
    }
    if paths.is_empty() {
        let sock = auth_sock
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| {
                spec_err!("invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set")
            })?;
        return match std::fs::metadata(&sock) {
            Ok(m) if m.file_type().is_socket() => Ok((id.to_string(), SshSource::Socket(sock))),
            Ok(_) => Err(spec_err!(
                "--ssh {spec:?}: SSH_AUTH_SOCK {} is not a socket",
                sock.display()
            )),
            Err(e) => Err(spec_err!("--ssh {spec:?}: {}: {e}", sock.display())),
        };
    }
    let mut keys = Vec::new();
    for p in &paths {
        let path = PathBuf::from(p);
        match std::fs::metadata(&path) {
            // buildx: only a single socket, and never beside key files.
            Ok(m) if m.file_type().is_socket() => {
                if paths.len() > 1 {
                    return Err(spec_err!("--ssh {spec:?}: only single socket allowed"));
                }
                return Ok((id.to_string(), SshSource::Socket(path)));
            }
            Ok(m) if m.is_file() => keys.push(path),
            Ok(_) => {
                return Err(spec_err!(
                    "--ssh {spec:?}: {} is neither an agent socket nor a key file",
                    path.display()
                ))
            }
            Err(e) => return Err(spec_err!("--ssh {spec:?}: {}: {e}", path.display())),
        }
    }
    Ok((id.to_string(), SshSource::Keys(keys)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_forms() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("tok.txt");
        std::fs::write(&f, "x").unwrap();
        let (id, s) = parse_secret(&format!("id=a,src={}", f.display())).unwrap();
        assert_eq!((id.as_str(), s), ("a", SecretSource::File(f.clone())));
        let (id, _) = parse_secret(&format!("source={}", f.display())).unwrap();
        assert_eq!(id, "tok.txt");
        let (id, s) = parse_secret("id=b,env=SOME_VAR").unwrap();
        assert_eq!(
            (id.as_str(), s),
            ("b", SecretSource::Env("SOME_VAR".into()))
        );
        let (id, s) = parse_secret("type=env,id=c,src=V").unwrap();
        assert_eq!((id.as_str(), s), ("c", SecretSource::Env("V".into())));
        let (id, s) = parse_secret("env=ONLY").unwrap();
        assert_eq!((id.as_str(), s), ("ONLY", SecretSource::Env("ONLY".into())));
        // Neither: the variable named id when set ("PATH" always is).
        let (_, s) = parse_secret("id=PATH").unwrap();
        assert_eq!(s, SecretSource::Env("PATH".into()));
        assert!(parse_secret("id=kiln-no-such-file-or-var").is_err());
        assert!(parse_secret("type=ftp,id=a").is_err());
        assert!(parse_secret("id").is_err());
        assert!(parse_secret("id=a,bogus=1").is_err());
    }

    #[test]
    fn ssh_forms() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("agent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let (id, p) = parse_ssh("default", Some(sock.clone())).unwrap();
        assert_eq!(
            (id.as_str(), p),
            ("default", SshSource::Socket(sock.clone()))
        );
        let (id, p) = parse_ssh(&format!("git={}", sock.display()), None).unwrap();
        assert_eq!((id.as_str(), p), ("git", SshSource::Socket(sock.clone())));
        assert!(parse_ssh("default", None).is_err());
        let key = t.path().join("id_ed25519");
        std::fs::write(&key, "k").unwrap();
        let (id, p) = parse_ssh(&format!("k={},{}", key.display(), key.display()), None).unwrap();
        assert_eq!(
            (id.as_str(), p),
            ("k", SshSource::Keys(vec![key.clone(), key.clone()]))
        );
        let err = parse_ssh(&format!("k={},{}", sock.display(), key.display()), None).unwrap_err();
        assert!(err.to_string().contains("only single socket"), "{err}");
        assert!(parse_ssh("k=/kiln/no/such/key", None).is_err());
    }
}
