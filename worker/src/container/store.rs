//! The container store: one folder per container under
//! `$KILN_ROOT/containers/`, its `state.json` replaced atomically under the
//! store's flock.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::names::{generated_name, random_bytes, valid_name};
use super::{io_err, Container, ContainerError, Result};

/// The containers of one kiln store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store whose folder is `dir` (a helper is handed its container's
    /// folder, whose parent this is).
    pub(super) fn at(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// Opens (creating) `<kiln_root>/containers`.
    pub fn open(kiln_root: &Path) -> Result<Store> {
        let dir = kiln_cache::Root::containers_dir_of(kiln_root);
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            // Containers' environments (secrets passed with -e) are in
            // their state: for the owner only, as docker's.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("chmod", &dir))?;
        }
        Ok(Store { dir })
    }

    /// The kiln store's folder (the parent of `containers/`).
    pub fn kiln_root(&self) -> PathBuf {
        self.dir.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// A container's folder.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn global_lock(&self) -> Result<kiln_cache::lock::FileLock> {
        Ok(kiln_cache::lock::FileLock::exclusive(
            &self.dir.join(".lock"),
        )?)
    }

    /// Records a new container: picks its id (and its name when `c.name` is
    /// empty), checks the name is free, makes its folder and writes its
    /// state, all under the store's lock so two runs never share a name.
    pub fn create(&self, mut c: Container) -> Result<Container> {
        if !c.name.is_empty() && !valid_name(&c.name) {
            return Err(ContainerError::BadName(c.name));
        }
        let _lock = self.global_lock()?;
        let all = self.list()?;
        if c.name.is_empty() {
            let mut seed = random_bytes::<8>();
            loop {
                let n = generated_name(u64::from_le_bytes(seed));
                if !all.iter().any(|x| x.name == n) {
                    c.name = n;
                    break;
                }
                seed = random_bytes::<8>();
            }
        } else if all.iter().any(|x| x.name == c.name) {
            return Err(ContainerError::NameInUse(c.name));
        }
        c.id = hex::encode(random_bytes::<32>());
        c.created_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self.dir_of(&c.id);
        for sub in ["upper", "work", "rootfs"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        write_state(&dir, &c)?;
        Ok(c)
    }

    /// Reads one container's record.
    pub fn load(&self, id: &str) -> Result<Container> {
        read_state(&self.dir_of(id))
    }

    /// Changes one container's record under its lock and returns the result.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Container)) -> Result<Container> {
        let dir = self.dir_of(id);
        let _lock = kiln_cache::lock::FileLock::exclusive(&dir.join("lock"))?;
        let mut c = read_state(&dir)?;
        f(&mut c);
        write_state(&dir, &c)?;
        Ok(c)
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            // A folder being removed (or half made) is no container.
            if let Ok(c) = read_state(&e.path()) {
                out.push(c);
            }
        }
        out.sort_by(|a, b| (b.created, b.created_ns, &b.id).cmp(&(a.created, a.created_ns, &a.id)));
        Ok(out)
    }

    /// Finds a container as docker does: full ID, exact name, or an
    /// unambiguous ID prefix.
    pub fn find(&self, key: &str) -> Result<Container> {
        let all = self.list()?;
        let key = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = all.iter().find(|c| c.id == key || c.name == key) {
            return Ok(c.clone());
        }
        let hits: Vec<&Container> = if key.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|c| c.id.starts_with(key)).collect()
        };
        match hits.as_slice() {
            [c] => Ok((*c).clone()),
            [] => Err(ContainerError::NotFound(key.to_string())),
            _ => Err(ContainerError::Ambiguous(key.to_string())),
        }
    }

    /// Renames a container (`kiln rename`): the new name checked and
    /// claimed under the store's lock, as at creation.
    pub fn rename(&self, id: &str, new_name: &str) -> Result<Container> {
        if !valid_name(new_name) {
            return Err(ContainerError::BadName(new_name.to_string()));
        }
        let _lock = self.global_lock()?;
        if let Some(other) = self.list()?.into_iter().find(|x| x.name == new_name) {
            return Err(ContainerError::State {
                path: self.dir_of(&other.id),
                detail: format!(
                    "Conflict. The container name \"/{new_name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    other.id
                ),
            });
        }
        self.update(id, |c| c.name = new_name.to_string())
    }

    /// Deletes a container's folder (its upper dir, log and state).
    pub fn remove(&self, id: &str) -> Result<()> {
        let _lock = self.global_lock()?;
        let dir = self.dir_of(id);
        // Renamed first so no reader sees a half-deleted container.
        let gone = self.dir.join(format!(".removing-{id}"));
        match fs::rename(&dir, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("rename", &dir)(e)),
        }
        fs::remove_dir_all(&gone).map_err(io_err("remove", &gone))?;
        // --- life: a cgroup a killed helper could not remove.
        super::cgroup::remove_of(id);
        // Its addresses are free again.
        crate::network::request::release(&self.kiln_root(), id);
        Ok(())
    }
}

fn read_state(dir: &Path) -> Result<Container> {
    let path = dir.join("state.json");
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| ContainerError::State {
        path,
        detail: e.to_string(),
    })
}

fn write_state(dir: &Path, c: &Container) -> Result<()> {
    let path = dir.join("state.json");
    let tmp = dir.join(format!("state.json.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec_pretty(c).map_err(|e| ContainerError::State {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))
}
