//! docker's named networks as files: `$KILN_ROOT/networks/<id>.json`, one
//! [`NetworkRecord`] each, read and replaced (write + rename) under the
//! flock `networks/.lock`, so two `kiln run`s never get the same address.
//!
//! As docker's: the predefined `bridge` (bridge `kiln0`, 172.17.0.0/16),
//! `host` and `none`; user-defined bridges get the next free /16 from
//! 172.18.0.0 (then 172.19…172.31, then 192.168.0.0/20 steps) unless
//! `--subnet` says otherwise; addresses are handed out lowest first,
//! skipping the network's own, the gateway (`.1`) and the broadcast.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default bridge network's Linux bridge (docker's `docker0`).
pub const DEFAULT_BRIDGE: &str = "kiln0";

/// Why a network operation failed; the texts are docker's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("network state {path}: {detail}")]
    State { path: PathBuf, detail: String },
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    NameInUse(String),
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("invalid subnet {0}: an IPv4 CIDR such as 172.30.0.0/16 (prefix 8 to 30)")]
    BadSubnet(String),
    #[error("invalid gateway {0}: an IPv4 address inside the subnet")]
    BadGateway(String),
    #[error("Pool overlaps with other one on this address space")]
    Overlap,
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoPool,
    #[error("no available IPv4 addresses on this network's address pools: {0}")]
    Exhausted(String),
    #[error("Address already in use")]
    AddressInUse,
    #[error(
        "invalid address {ip}: it does not belong to any of this network's subnets ({subnet})"
    )]
    AddressOutside { ip: String, subnet: String },
    #[error("user specified IP address is supported on user defined networks only")]
    IpOnDefault,
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    ActiveEndpoints { name: String, id: String },
    #[error("driver {0:?} is not supported (bridge)")]
    Driver(String),
    #[error(transparent)]
    Lock(#[from] kiln_cache::Error),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetworkError + 'a {
    move |source| NetworkError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

type Result<T, E = NetworkError> = std::result::Result<T, E>;

/// One container's place on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The container's name (for `network inspect` and name lookups).
    pub name: String,
    pub ip: Ipv4Addr,
    /// `--network-alias` (user-defined networks only, as docker's).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A named network (`networks/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    /// `bridge`, `host` or `null` (docker's drivers).
    pub driver: String,
    /// RFC 3339 creation time, as docker's `Created`.
    pub created: String,
    /// The network's subnet and prefix; none for host and none.
    #[serde(default)]
    pub subnet: Option<(Ipv4Addr, u8)>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The Linux bridge (`kiln0`, `br-<id12>`).
    #[serde(default)]
    pub bridge: String,
    /// `--internal`: no route out.
    #[serde(default)]
    pub internal: bool,
    /// `-o KEY=VALUE` driver options, kept and shown.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Containers on it, by container ID.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl NetworkRecord {
    /// docker's `bridge`, `host` and `none`.
    pub fn is_predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }

    /// `SUBNET/PREFIX`, as docker prints it.
    pub fn subnet_text(&self) -> String {
        self.subnet
            .map(|(a, p)| format!("{a}/{p}"))
            .unwrap_or_default()
    }

    /// The short ID (12 hex digits).
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// Parses `A.B.C.D/N` (8 ≤ N ≤ 30) into its network address and prefix.
pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || NetworkError::BadSubnet(s.to_string());
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let p: u8 = p.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&p) {
        return Err(bad());
    }
    Ok((Ipv4Addr::from(u32::from(a) & mask(p)), p))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn contains((net, p): (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    u32::from(ip) & mask(p) == u32::from(net)
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    contains(a, b.0) || contains(b, a.0)
}

/// docker's default address pools after 172.17.0.0/16: 172.18–31 /16,
/// then 192.168.0.0/16 in /20 steps.
fn default_pools() -> impl Iterator<Item = (Ipv4Addr, u8)> {
    (18u8..=31)
        .map(|b| (Ipv4Addr::new(172, b, 0, 0), 16))
        .chain((0u8..16).map(|i| (Ipv4Addr::new(192, 168, i * 16, 0), 20)))
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn random_hex() -> String {
    let mut buf = [0u8; 32];
    if getrandom::fill(&mut buf).is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        buf = *blake3::hash(seed.as_bytes()).as_bytes();
    }
    hex::encode(buf)
}

/// RFC 3339 time of now (UTC, nanoseconds), as docker's `Created`.
fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// What `kiln network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// The networks of one kiln store.
#[derive(Debug, Clone)]
pub struct Networks {
    dir: PathBuf,
}

impl Networks {
    /// Opens (creating) `<kiln_root>/networks`, with docker's predefined
    /// networks recorded on first use.
    pub fn open(kiln_root: &Path) -> Result<Networks> {
        let dir = kiln_cache::Root::networks_dir_of(kiln_root);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let n = Networks { dir };
        let _lock = n.lock()?;
        let all = n.list_unlocked()?;
        for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
            if all.iter().any(|r| r.name == name) {
                continue;
            }
            let mut r = NetworkRecord {
                id: random_hex(),
                name: name.to_string(),
                driver: driver.to_string(),
                created: rfc3339_now(),
                subnet: None,
                gateway: None,
                bridge: String::new(),
                internal: false,
                options: BTreeMap::new(),
                labels: BTreeMap::new(),
                endpoints: BTreeMap::new(),
            };
            if name == "bridge" {
                r.subnet = Some((Ipv4Addr::new(172, 17, 0, 0), 16));
                r.gateway = Some(Ipv4Addr::new(172, 17, 0, 1));
                r.bridge = DEFAULT_BRIDGE.to_string();
                r.options.insert(
                    "com.docker.network.bridge.name".into(),
                    DEFAULT_BRIDGE.into(),
                );
            }
            n.write(&r)?;
        }
        Ok(n)
    }

    fn lock(&self) -> Result<kiln_cache::lock::FileLock> {
        Ok(kiln_cache::lock::FileLock::exclusive(
            &self.dir.join(".lock"),
        )?)
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn write(&self, r: &NetworkRecord) -> Result<()> {
        let path = self.path_of(&r.id);
        let tmp = self.dir.join(format!(".{}.tmp", r.id));
        let text = serde_json::to_vec_pretty(r).map_err(|e| NetworkError::State {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))
    }

    fn list_unlocked(&self) -> Result<Vec<NetworkRecord>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))? {
            let e = e.map_err(io_err("read", &self.dir))?;
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let text = fs::read(&p).map_err(io_err("read", &p))?;
            let r: NetworkRecord =
                serde_json::from_slice(&text).map_err(|e| NetworkError::State {
                    path: p.clone(),
                    detail: e.to_string(),
                })?;
            out.push(r);
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Every network, oldest first.
    pub fn list(&self) -> Result<Vec<NetworkRecord>> {
        let _lock = self.lock()?;
        self.list_unlocked()
    }

    fn find_in(all: &[NetworkRecord], key: &str) -> Result<NetworkRecord> {
        if let Some(r) = all.iter().find(|r| r.name == key || r.id == key) {
            return Ok(r.clone());
        }
        let by_prefix: Vec<_> = all
            .iter()
            .filter(|r| !key.is_empty() && r.id.starts_with(key))
            .collect();
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(NetworkError::NotFound(key.to_string())),
        }
    }

    /// A network by name, full ID or unique ID prefix.
    pub fn find(&self, key: &str) -> Result<NetworkRecord> {
        let _lock = self.lock()?;
        Self::find_in(&self.list_unlocked()?, key)
    }

    /// `kiln network create`.
    pub fn create(&self, req: CreateRequest) -> Result<NetworkRecord> {
        if !valid_name(&req.name) {
            return Err(NetworkError::BadName(req.name));
        }
        let driver = req.driver.clone().unwrap_or_else(|| "bridge".into());
        if driver != "bridge" {
            return Err(NetworkError::Driver(driver));
        }
        let _lock = self.lock()?;
        let all = self.list_unlocked()?;
        if all.iter().any(|r| r.name == req.name) {
            return Err(NetworkError::NameInUse(req.name));
        }
        let taken: Vec<(Ipv4Addr, u8)> = all.iter().filter_map(|r| r.subnet).collect();
        let subnet = match &req.subnet {
            Some(s) => {
                let s = parse_subnet(s)?;
                if taken.iter().any(|t| overlaps(*t, s)) {
                    return Err(NetworkError::Overlap);
                }
                s
            }
            None => default_pools()
                .find(|p| !taken.iter().any(|t| overlaps(*t, *p)))
                .ok_or(NetworkError::NoPool)?,
        };
        let gateway = match &req.gateway {
            Some(g) => {
                let ip: Ipv4Addr = g.parse().map_err(|_| NetworkError::BadGateway(g.clone()))?;
                if !contains(subnet, ip) {
                    return Err(NetworkError::BadGateway(g.clone()));
                }
                ip
            }
            None => Ipv4Addr::from(u32::from(subnet.0) + 1),
        };
        let id = random_hex();
        let bridge = req
            .options
            .get("com.docker.network.bridge.name")
            .cloned()
            .unwrap_or_else(|| format!("br-{}", &id[..12]));
        let r = NetworkRecord {
            id,
            name: req.name,
            driver,
            created: rfc3339_now(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            bridge,
            internal: req.internal,
            options: req.options,
            labels: req.labels,
            endpoints: BTreeMap::new(),
        };
        self.write(&r)?;
        Ok(r)
    }

    /// `kiln network rm`: refused for predefined networks and for networks
    /// with containers on them. Returns the record removed (its bridge
    /// and rules are the caller's to take down).
    pub fn remove(&self, key: &str, live: &dyn Fn(&str) -> bool) -> Result<NetworkRecord> {
        let _lock = self.lock()?;
        let r = Self::find_in(&self.list_unlocked()?, key)?;
        if r.is_predefined() {
            return Err(NetworkError::Predefined(r.name));
        }
        if r.endpoints.keys().any(|c| live(c)) {
            return Err(NetworkError::ActiveEndpoints {
                name: r.name,
                id: r.id,
            });
        }
        let path = self.path_of(&r.id);
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        Ok(r)
    }

    /// Gives container `cid` an address on network `key` (the requested
    /// `ip`, else the lowest free one). Endpoints of containers `exists`
    /// no longer knows are released first.
    pub fn attach(
        &self,
        key: &str,
        cid: &str,
        name: &str,
        aliases: &[String],
        ip: Option<Ipv4Addr>,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<(NetworkRecord, Endpoint)> {
        let _lock = self.lock()?;
        let mut r = Self::find_in(&self.list_unlocked()?, key)?;
        r.endpoints.retain(|c, _| c == cid || exists(c));
        let (Some(subnet), Some(gw)) = (r.subnet, r.gateway) else {
            return Err(NetworkError::NotFound(key.to_string()));
        };
        let used = |a: Ipv4Addr| {
            a == gw
                || r.endpoints
                    .iter()
                    .any(|(c, e)| e.ip == a && c.as_str() != cid)
        };
        let ip = match ip {
            Some(a) => {
                if r.name == "bridge" {
                    return Err(NetworkError::IpOnDefault);
                }
                if !contains(subnet, a) {
                    return Err(NetworkError::AddressOutside {
                        ip: a.to_string(),
                        subnet: r.subnet_text(),
                    });
                }
                if used(a) {
                    return Err(NetworkError::AddressInUse);
                }
                a
            }
            None => {
                let first = u32::from(subnet.0) + 1;
                let last = (u32::from(subnet.0) | !mask(subnet.1)) - 1;
                (first..=last)
                    .map(Ipv4Addr::from)
                    .find(|a| !used(*a))
                    .ok_or_else(|| NetworkError::Exhausted(r.name.clone()))?
            }
        };
        let e = Endpoint {
            name: name.to_string(),
            ip,
            aliases: if r.name == "bridge" {
                Vec::new()
            } else {
                aliases.to_vec()
            },
        };
        r.endpoints.insert(cid.to_string(), e.clone());
        self.write(&r)?;
        Ok((r, e))
    }

    /// Takes container `cid` off network `key` (its address is free again).
    pub fn detach(&self, key: &str, cid: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut r = Self::find_in(&self.list_unlocked()?, key)?;
        if r.endpoints.remove(cid).is_some() {
            self.write(&r)?;
        }
        Ok(())
    }

    /// Takes container `cid` off every network (`kiln rm`).
    pub fn detach_all(&self, cid: &str) -> Result<()> {
        let _lock = self.lock()?;
        for mut r in self.list_unlocked()? {
            if r.endpoints.remove(cid).is_some() {
                self.write(&r)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_as_docker() {
        let dir = tempfile::tempdir().unwrap();
        let n = Networks::open(dir.path()).unwrap();
        let names: Vec<String> = n.list().unwrap().into_iter().map(|r| r.name).collect();
        assert!(names.contains(&"bridge".to_string()) && names.contains(&"none".to_string()));
        let a = n
            .create(CreateRequest {
                name: "appnet".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(a.subnet_text(), "172.18.0.0/16");
        assert_eq!(a.gateway, Some(Ipv4Addr::new(172, 18, 0, 1)));
        let b = n
            .create(CreateRequest {
                name: "b".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(b.subnet_text(), "172.19.0.0/16");
        assert!(matches!(
            n.create(CreateRequest {
                name: "c".into(),
                subnet: Some("172.18.5.0/24".into()),
                ..Default::default()
            }),
            Err(NetworkError::Overlap)
        ));
        let yes = |_: &str| true;
        let (_, e1) = n.attach("appnet", "c1", "one", &[], None, &yes).unwrap();
        let (_, e2) = n.attach("appnet", "c2", "two", &[], None, &yes).unwrap();
        assert_eq!(e1.ip, Ipv4Addr::new(172, 18, 0, 2));
        assert_eq!(e2.ip, Ipv4Addr::new(172, 18, 0, 3));
        // c1 is gone: its address is reused.
        let only_c2 = |c: &str| c == "c2";
        let (_, e3) = n.attach("appnet", "c3", "x", &[], None, &only_c2).unwrap();
        assert_eq!(e3.ip, Ipv4Addr::new(172, 18, 0, 2));
        assert!(matches!(
            n.remove("appnet", &yes),
            Err(NetworkError::ActiveEndpoints { .. })
        ));
        assert!(matches!(
            n.remove("bridge", &yes),
            Err(NetworkError::Predefined(_))
        ));
        n.detach_all("c2").unwrap();
        n.detach_all("c3").unwrap();
        n.remove("appnet", &yes).unwrap();
    }
}
