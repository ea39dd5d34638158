//! Volumes (`kiln volume …`, `-v NAME:/path`, `-v /path`, `--mount`,
//! `--tmpfs`, `--volumes-from`, an image's `VOLUME`s), kept as docker's
//! `local` driver keeps them: `$KILN_ROOT/volumes/<name>/_data` is the
//! content, bound into containers; `volume.json` beside it holds the
//! record (labels, options, creation time).
//!
//! A volume is *in use* while a container record (running or not) names it,
//! as docker judges it: `volume rm` refuses it, `volume prune` keeps it.
//! Anonymous volumes (`-v /path`, image `VOLUME`s) carry docker's label
//! `com.docker.volume.anonymous` and go with their container on `rm -v`
//! and `--rm`. A volume that is empty when first mounted is filled from the
//! image's content at its target (files, owners, modes), as docker does.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Container, Store};
use crate::sandbox::Mount;
use crate::snapshot::LowerView;

/// The label docker (23+) puts on anonymous volumes; `volume prune`
/// without `--all` removes only volumes carrying it.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// What can go wrong with volumes; the messages are docker's (after
/// `Error response from daemon: `).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("remove {name}: volume is in use - [{}]", users.join(", "))]
    InUse { name: String, users: Vec<String> },
    #[error("create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    BadName(String),
    #[error("create {name}: invalid option key: {key:?}")]
    BadOption { name: String, key: String },
    #[error("create {0}: only the local driver is available")]
    Driver(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("volume record {path}: {detail}")]
    Record { path: PathBuf, detail: String },
    #[error(transparent)]
    Container(#[from] super::ContainerError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// One volume's record (`volume.json`), in the shape `docker volume
/// inspect` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// RFC 3339, as docker prints it.
    pub created_at: String,
    pub driver: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub mountpoint: PathBuf,
    pub name: String,
    pub options: Option<BTreeMap<String, String>>,
    pub scope: String,
}

impl Volume {
    /// True for anonymous volumes (docker's label).
    pub fn is_anonymous(&self) -> bool {
        self.labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ANONYMOUS_LABEL))
    }

    /// The mount that puts this volume at `target`: its folder bound in,
    /// or what its local-driver options ask for (`type=tmpfs`, or
    /// `o=bind` of `device`).
    pub fn mount(&self, target: &str, readonly: bool) -> Mount {
        let opts = self.options.clone().unwrap_or_default();
        let o = opts.get("o").cloned().unwrap_or_default();
        if opts.get("type").map(String::as_str) == Some("tmpfs") {
            let size = o
                .split(',')
                .find_map(|kv| kv.strip_prefix("size="))
                .and_then(parse_size);
            return Mount::Tmpfs {
                target: target.to_string(),
                size,
                mode: None,
            };
        }
        let source = match opts.get("device") {
            Some(dev) if o.split(',').any(|x| x == "bind") => PathBuf::from(dev),
            _ => self.mountpoint.clone(),
        };
        Mount::Bind {
            source,
            target: target.to_string(),
            readonly,
        }
    }
}

/// A volume a container mounts, kept in its record so `volume rm` knows
/// it is in use and `rm -v` knows what to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub name: String,
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
    /// Made for this container (`-v /path`, a `VOLUME`): `rm -v` and
    /// `--rm` remove it.
    #[serde(default)]
    pub anonymous: bool,
}

/// The volumes folder of a store.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

/// Docker's rule for local volume names (two characters at least).
pub fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// `10m`, `1g`, `512k`, `100` (bytes), as docker's `units.RAMInBytes`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no time crate in the
/// worker: civil-from-days, Howard Hinnant's algorithm).
fn jiff_like_now() -> String {
    let secs = super::now();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl VolumeStore {
    /// The volumes of the store at `kiln_root`.
    pub fn open(kiln_root: &Path) -> Result<VolumeStore> {
        let dir = kiln_cache::Root::volumes_dir_of(kiln_root);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(VolumeStore { dir })
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("volume.json")
    }

    /// Makes volume `name` (a random one when `None`), or returns the one
    /// of that name already there, as docker does.
    pub fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let name = match name {
            Some(n) => n.to_string(),
            None => random_name(),
        };
        if !valid_name(&name) {
            return Err(VolumeError::BadName(name));
        }
        if driver != "local" {
            return Err(VolumeError::Driver(name));
        }
        for k in options.keys() {
            if !matches!(k.as_str(), "type" | "o" | "device") {
                return Err(VolumeError::BadOption {
                    name,
                    key: k.clone(),
                });
            }
        }
        if let Ok(v) = self.get(&name) {
            return Ok(v);
        }
        let data = self.dir.join(&name).join("_data");
        fs::create_dir_all(&data).map_err(io_err("create", &data))?;
        let v = Volume {
            created_at: jiff_like_now(),
            driver: driver.to_string(),
            labels: (!labels.is_empty()).then_some(labels),
            mountpoint: data,
            name: name.clone(),
            options: (!options.is_empty()).then_some(options),
            scope: "local".into(),
        };
        let path = self.record_path(&name);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&v).map_err(|e| VolumeError::Record {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        fs::write(&tmp, body).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        Ok(v)
    }

    /// An anonymous volume (random name, docker's label).
    pub fn create_anonymous(&self) -> Result<Volume> {
        let labels = BTreeMap::from([(ANONYMOUS_LABEL.to_string(), String::new())]);
        self.create(None, "local", labels, BTreeMap::new())
    }

    /// Volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let path = self.record_path(name);
        let body = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_slice(&body).map_err(|e| VolumeError::Record {
            path,
            detail: e.to_string(),
        })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(v) = self.get(&name) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The containers (short IDs) whose records name volume `name`.
    pub fn users(&self, containers: &[Container], name: &str) -> Vec<String> {
        containers
            .iter()
            .filter(|c| c.volumes.iter().any(|v| v.name == name))
            .map(|c| c.id.clone())
            .collect()
    }

    /// Removes volume `name` and its content, refused while a container
    /// uses it.
    pub fn remove(&self, containers: &[Container], name: &str) -> Result<()> {
        self.get(name)?;
        let users = self.users(containers, name);
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                users,
            });
        }
        self.remove_unchecked(name)
    }

    fn remove_unchecked(&self, name: &str) -> Result<()> {
        let dir = self.dir.join(name);
        let gone = self.dir.join(format!(".removing-{name}"));
        match fs::rename(&dir, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("rename", &dir)(e)),
        }
        fs::remove_dir_all(&gone).map_err(io_err("remove", &gone))
    }

    /// The size of a volume's content in bytes (for prune's total).
    pub fn size(&self, name: &str) -> u64 {
        du(&self.dir.join(name).join("_data"))
    }
}

fn du(p: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_dir() {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        md.len()
    }
}

fn random_name() -> String {
    hex::encode(super::names::random_bytes::<32>())
}

/// Removes the anonymous volumes of container `c` (`rm -v`, `--rm`) that
/// no other container uses; errors are ignored, as docker only warns.
pub fn remove_anonymous(kiln_root: &Path, c: &Container) {
    let Ok(vs) = VolumeStore::open(kiln_root) else {
        return;
    };
    let others: Vec<Container> = Store::open(kiln_root)
        .and_then(|s| s.list())
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.id != c.id)
        .collect();
    for v in c.volumes.iter().filter(|v| v.anonymous) {
        let _ = vs.remove(&others, &v.name);
    }
}

/// [`remove_anonymous`] from the helper, which knows the containers folder
/// (`$KILN_ROOT/containers`) only.
pub fn remove_anonymous_of(containers_dir: &Path, c: &Container) {
    if let Some(kiln_root) = containers_dir.parent() {
        remove_anonymous(kiln_root, c);
    }
}

/// `C[:ro|:rw]` of `--volumes-from`: the container, and read-only.
fn parse_volumes_from(spec: &str) -> (String, bool) {
    match spec.rsplit_once(':') {
        Some((c, "ro")) => (c.to_string(), true),
        Some((c, "rw")) => (c.to_string(), false),
        _ => (spec.to_string(), false),
    }
}

/// [`resolve`] for `kiln run`: the image config's `Volumes`, the
/// `--volumes-from` containers looked up in `store`, the targets `binds`
/// already take.
pub fn from_options(
    kiln_root: &Path,
    store: &Store,
    image_config: &serde_json::Value,
    specs: &[VolumeSpec],
    volumes_from: &[String],
    binds: &[Mount],
    lowers: &[PathBuf],
) -> Result<(Vec<Mount>, Vec<VolumeMount>)> {
    let image_volumes: Vec<String> = image_config
        .get("Volumes")
        .and_then(serde_json::Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let mut from = Vec::new();
    let mut ro = Vec::new();
    for spec in volumes_from {
        let (key, r) = parse_volumes_from(spec);
        from.push(store.find(&key)?);
        ro.push(r);
    }
    let taken: Vec<String> = binds
        .iter()
        .map(|m| match m {
            Mount::Bind { target, .. } | Mount::Tmpfs { target, .. } => target.clone(),
        })
        .collect();
    resolve(kiln_root, specs, &image_volumes, &from, &ro, &taken, lowers)
}

/// What `kiln run` asks for besides host binds: volumes by name (created
/// when missing), anonymous ones, tmpfs mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    /// `-v NAME:/path`, `--mount type=volume,source=NAME` (no name:
    /// anonymous).
    Volume {
        name: Option<String>,
        target: String,
        readonly: bool,
        /// `volume-nocopy`: do not fill it from the image.
        nocopy: bool,
        /// `volume-opt`s, for a volume this creates.
        options: BTreeMap<String, String>,
    },
}

/// The container's volume mounts: `specs` made (named volumes created when
/// missing, anonymous ones fresh), the image's `VOLUME`s not already a
/// mount target added as anonymous volumes, `volumes_from` containers'
/// volumes and binds added; empty volumes filled from the image (`lowers`).
/// Returns the mounts to add and the volumes to record.
pub fn resolve(
    kiln_root: &Path,
    specs: &[VolumeSpec],
    image_volumes: &[String],
    volumes_from: &[Container],
    volumes_from_ro: &[bool],
    taken: &[String],
    lowers: &[PathBuf],
) -> Result<(Vec<Mount>, Vec<VolumeMount>)> {
    let vs = VolumeStore::open(kiln_root)?;
    let mut mounts = Vec::new();
    let mut recs = Vec::new();
    let mut targets: Vec<String> = taken.iter().map(|t| clean(t)).collect();
    let view = LowerView::new(lowers);
    let add = |v: &Volume,
               target: &str,
               readonly: bool,
               anonymous: bool,
               nocopy: bool,
               mounts: &mut Vec<Mount>,
               recs: &mut Vec<VolumeMount>|
     -> Result<()> {
        let m = v.mount(target, readonly);
        if !nocopy {
            if let Mount::Bind { source, .. } = &m {
                if source == &v.mountpoint {
                    fill_from_image(&view, target, &v.mountpoint)?;
                }
            }
        }
        mounts.push(m);
        recs.push(VolumeMount {
            name: v.name.clone(),
            target: target.to_string(),
            readonly,
            anonymous,
        });
        Ok(())
    };
    for s in specs {
        let VolumeSpec::Volume {
            name,
            target,
            readonly,
            nocopy,
            options,
        } = s;
        let v = match name {
            Some(n) => vs.create(Some(n), "local", BTreeMap::new(), options.clone())?,
            None => vs.create_anonymous()?,
        };
        targets.push(clean(target));
        add(
            &v,
            target,
            *readonly,
            name.is_none(),
            *nocopy,
            &mut mounts,
            &mut recs,
        )?;
    }
    for (from, ro) in volumes_from.iter().zip(volumes_from_ro) {
        for vm in &from.volumes {
            if targets.contains(&clean(&vm.target)) {
                continue;
            }
            let v = vs.get(&vm.name)?;
            targets.push(clean(&vm.target));
            add(
                &v,
                &vm.target,
                *ro || vm.readonly,
                false,
                true,
                &mut mounts,
                &mut recs,
            )?;
        }
        for m in &from.mounts {
            if let Mount::Bind {
                source,
                target,
                readonly,
            } = m
            {
                let own_volume = from
                    .volumes
                    .iter()
                    .any(|v| clean(&v.target) == clean(target));
                if own_volume || targets.contains(&clean(target)) {
                    continue;
                }
                targets.push(clean(target));
                mounts.push(Mount::Bind {
                    source: source.clone(),
                    target: target.clone(),
                    readonly: *ro || *readonly,
                });
            }
        }
    }
    for t in image_volumes {
        if targets.contains(&clean(t)) {
            continue;
        }
        let v = vs.create_anonymous()?;
        targets.push(clean(t));
        add(&v, t, false, true, false, &mut mounts, &mut recs)?;
    }
    Ok((mounts, recs))
}

/// `/a/b/` and `/a//b` are `/a/b`.
fn clean(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Fills the empty volume folder `data` with what the image has at
/// `target` (a directory): content, owners, modes, times; the folder takes
/// the directory's own owner and mode. A volume with anything in it is
/// left alone (copied once, as docker).
pub fn fill_from_image(view: &LowerView, target: &str, data: &Path) -> Result<()> {
    let empty = fs::read_dir(data)
        .map_err(io_err("read", data))?
        .next()
        .is_none();
    if !empty {
        return Ok(());
    }
    let Some(rel) = crate::snapshot::rel_components(target) else {
        return Ok(());
    };
    let Some(src) = view.lookup(&rel) else {
        return Ok(());
    };
    let Ok(md) = fs::symlink_metadata(&src) else {
        return Ok(());
    };
    if !md.is_dir() {
        return Ok(());
    }
    super::files::copy_merged(view, &rel, data)
        .map_err(io_err("copying image content to", data))?;
    let _ = std::os::unix::fs::lchown(data, Some(md.uid()), Some(md.gid()));
    let _ = fs::set_permissions(data, fs::Permissions::from_mode(md.mode() & 0o7777));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes() {
        assert!(valid_name("data"));
        assert!(valid_name("a.b-c_d"));
        assert!(!valid_name("a"));
        assert!(!valid_name("_a"));
        assert!(!valid_name("a/b"));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(clean("/a//b/"), "/a/b");
    }

    #[test]
    fn volumes_are_made_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let vs = VolumeStore::open(dir.path()).unwrap();
        let v = vs
            .create(Some("data"), "local", BTreeMap::new(), BTreeMap::new())
            .unwrap();
        assert!(v.mountpoint.ends_with("volumes/data/_data"));
        assert!(v.mountpoint.is_dir());
        let a = vs.create_anonymous().unwrap();
        assert!(a.is_anonymous());
        assert_eq!(vs.list().unwrap().len(), 2);
        vs.remove(&[], "data").unwrap();
        assert!(matches!(vs.get("data"), Err(VolumeError::NotFound(_))));
        assert!(vs
            .create(Some("x/y"), "local", BTreeMap::new(), BTreeMap::new())
            .is_err());
    }
}
