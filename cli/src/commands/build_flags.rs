//! The rest of `buildx build`'s flags: `--add-host`, `--ulimit`,
//! `--shm-size`, `--cgroup-parent`, `--label`, `--annotation`, and every
//! flag kiln does not support, refused by name rather than ignored.
//!
//! Flattened into [`super::build::BuildArgs`]; [`Extra::apply`] turns them
//! into [`BuildOptions`].
//!
//! buildx's flags (docker 28.5) and where each is handled:
//! - in `build.rs`: `--file`, `--tag`, `--build-arg`, `--target`,
//!   `--no-cache`, `--no-cache-filter`, `--pull`, `--network`, `--progress`
//!   (`BUILDKIT_PROGRESS`), `--quiet`, `--output`, `--iidfile`,
//!   `--metadata-file`, `--platform`, `--cache-to`, `--cache-from`,
//!   `--secret`, `--ssh`, `--allow`;
//! - here: `--add-host`, `--ulimit`, `--shm-size`, `--cgroup-parent`,
//!   `--label`, `--annotation`;
//! - other branches: `--push`, `--load`, `--check`, `--call`,
//!   `--build-context`, `--provenance`, `--sbom`, `--attest`;
//! - refused ("kiln does not support --X"): `--builder` (kiln has no
//!   builder instances), `--detach`, `--root`, `--server-config`,
//!   `--invoke`, `--print`; and the
//!   resource limits buildx hides and drops (`--memory`, `--memory-swap`,
//!   `--cpu-shares`, `--cpu-period`, `--cpu-quota`, `--cpuset-cpus`,
//!   `--cpuset-mems`): a limit asked for and not applied would be a silent
//!   lie, so kiln says so;
//! - accepted as no-ops, as buildx does, because what they ask for is
//!   always so in kiln: `--rm`, `--force-rm` (there are no intermediate
//!   containers to keep), `--compress` (the context is never sent over a
//!   wire), `--disable-content-trust` (no content trust); and with
//!   buildx's own warnings: `--squash`, `--isolation`, `--security-opt`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kiln_build::BuildOptions;
use kiln_solver::ops::Ulimit;
use miette::{miette, Result};

/// buildx's name for the address of the host as seen from a build step.
const HOST_GATEWAY: &str = "host-gateway";

/// The flags of this module, flattened into `kiln build`'s.
#[derive(Debug, Default, clap::Args)]
pub struct Extra {
    /// Add a line to every RUN's /etc/hosts: `HOST:IP` or `HOST=IP`
    /// (repeatable); IP `host-gateway` is this host's address.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// A resource limit for every RUN: `NAME=SOFT[:HARD]` (`nofile`,
    /// `nproc`, `core`, …; `-1` unlimited; repeatable).
    #[arg(long = "ulimit")]
    pub ulimit: Vec<String>,
    /// Size of /dev/shm in every RUN (`64m`, bytes without a unit).
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Place every RUN's process in a cgroup beneath this one.
    #[arg(long = "cgroup-parent")]
    pub cgroup_parent: Option<String>,
    /// A label of the image: `KEY=VALUE` (repeatable).
    #[arg(long = "label")]
    pub label: Vec<String>,
    /// An annotation: `[TYPE[,TYPE…]:]KEY=VALUE`, TYPE one of `manifest`,
    /// `manifest-descriptor`, `index`, `index-descriptor`, each with an
    /// optional `[PLATFORM]` (repeatable; buildx's syntax).
    #[arg(long = "annotation")]
    pub annotation: Vec<String>,

    // Accepted as no-ops (see the module's notes).
    #[arg(long = "rm", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rm: Option<String>,
    #[arg(long = "force-rm", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub force_rm: Option<String>,
    #[arg(long = "compress", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub compress: Option<String>,
    #[arg(
        long = "disable-content-trust",
        hide = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub disable_content_trust: Option<String>,
    // Accepted with buildx's warnings.
    #[arg(long = "squash", hide = true)]
    pub squash: bool,
    #[arg(long = "isolation", hide = true)]
    pub isolation: Option<String>,
    #[arg(long = "security-opt", hide = true)]
    pub security_opt: Vec<String>,

    // Refused by name.
    #[arg(long = "builder", hide = true)]
    pub builder: Option<String>,
    #[arg(long = "detach", hide = true)]
    pub detach: bool,
    #[arg(long = "root", hide = true)]
    pub root: Option<String>,
    #[arg(long = "server-config", hide = true)]
    pub server_config: Option<String>,
    #[arg(long = "invoke", hide = true)]
    pub invoke: Option<String>,
    #[arg(long = "print", hide = true)]
    pub print: Option<String>,
    #[arg(short = 'm', long = "memory", hide = true)]
    pub memory: Option<String>,
    #[arg(long = "memory-swap", hide = true)]
    pub memory_swap: Option<String>,
    #[arg(short = 'c', long = "cpu-shares", hide = true)]
    pub cpu_shares: Option<String>,
    #[arg(long = "cpu-period", hide = true)]
    pub cpu_period: Option<String>,
    #[arg(long = "cpu-quota", hide = true)]
    pub cpu_quota: Option<String>,
    #[arg(long = "cpuset-cpus", hide = true)]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems", hide = true)]
    pub cpuset_mems: Option<String>,
}

impl Extra {
    /// Refuses what kiln does not support, warns as buildx does, and sets
    /// the options these flags stand for.
    pub fn apply(&self, opts: &mut BuildOptions) -> Result<()> {
        let refused = [
            ("builder", self.builder.is_some()),
            ("detach", self.detach),
            ("root", self.root.is_some()),
            ("server-config", self.server_config.is_some()),
            ("invoke", self.invoke.is_some()),
            ("print", self.print.is_some()),
            ("memory", self.memory.is_some()),
            ("memory-swap", self.memory_swap.is_some()),
            ("cpu-shares", self.cpu_shares.is_some()),
            ("cpu-period", self.cpu_period.is_some()),
            ("cpu-quota", self.cpu_quota.is_some()),
            ("cpuset-cpus", self.cpuset_cpus.is_some()),
            ("cpuset-mems", self.cpuset_mems.is_some()),
        ];
        if let Some((flag, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(miette!("kiln does not support --{flag}"));
        }
        // buildx's words (its flags' `flag-warn` annotations).
        if self.squash {
            eprintln!("WARNING: experimental flag squash is removed with BuildKit. You should squash inside build using a multi-stage Dockerfile for efficiency.");
        }
        if self.isolation.is_some() {
            eprintln!("WARNING: isolation flag is deprecated with BuildKit.");
        }
        if !self.security_opt.is_empty() {
            eprintln!("WARNING: security-opt flag is deprecated. \"RUN --security=insecure\" should be used with BuildKit.");
        }

        let r = &mut opts.resources;
        r.extra_hosts = self
            .add_host
            .iter()
            .map(String::as_str)
            .map(add_host)
            .collect::<Result<_>>()?;
        r.ulimits = self
            .ulimit
            .iter()
            .map(String::as_str)
            .map(ulimit)
            .collect::<Result<_>>()?;
        r.shm_size = match &self.shm_size {
            Some(s) => Some(ram_in_bytes(s).ok_or_else(|| {
                miette!("invalid argument {s:?} for \"--shm-size\" flag: invalid size: '{s}'")
            })?)
            .filter(|b| *b > 0),
            None => None,
        };
        if let Some(p) = self.cgroup_parent.as_deref().filter(|p| !p.is_empty()) {
            kiln_worker::resources::cgroup_parts(p).map_err(|e| miette!("{e}"))?;
            r.cgroup_parent = Some(p.to_string());
        }
        opts.labels = labels(&self.label);
        opts.annotations =
            kiln_build::annotations::parse(&self.annotation).map_err(|e| miette!("{e}"))?;
        Ok(())
    }
}

/// `--label K=V` (`K` alone: an empty value, as docker's `ConvertKVStringsToMap`).
fn labels(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// One `--add-host`: `HOST=IP` or `HOST:IP` (split at the first `=`, else
/// the first `:`, as buildx; an IPv6 address may be in brackets).
fn add_host(s: &str) -> Result<(String, String)> {
    let bad = || miette!("invalid IP address in add-host: {s:?}");
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| miette!("bad format for add-host: {s:?}"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(miette!("bad format for add-host: {s:?}"));
    }
    let ip = if ip == HOST_GATEWAY {
        host_gateway()
    } else {
        ip.parse::<IpAddr>().map_err(|_| bad())?
    };
    Ok((host.to_string(), ip.to_string()))
}

/// The address `host-gateway` stands for: this host's own address on its
/// default route, which a step reaches from every network mode (its own,
/// through slirp4netns's NAT; the host's; nothing with `none`), as docker's
/// host-gateway is the host's address on the docker bridge. No packet is
/// sent: connecting a UDP socket only picks the route. Without a default
/// route, loopback (the host network's view).
fn host_gateway() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// One `--ulimit NAME=SOFT[:HARD]`, as docker's `units.ParseUlimit`.
fn ulimit(s: &str) -> Result<Ulimit> {
    let (name, limits) = s
        .split_once('=')
        .ok_or_else(|| miette!("invalid ulimit argument: {s}"))?;
    let num = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| miette!("invalid ulimit value {v:?} in {s:?}"))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let v = num(limits)?;
            (v, v)
        }
    };
    let u = Ulimit {
        name: name.to_string(),
        soft,
        hard,
    };
    kiln_worker::resources::check_ulimit(&u).map_err(|e| miette!("{e}"))?;
    Ok(u)
}

/// docker's `RAMInBytes`: a number with an optional binary unit (`k`,
/// `m`, `g`, `t`, `p`, optionally followed by `b`/`ib`), any case.
fn ram_in_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_dockers() {
        assert_eq!(ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1G"), Some(1 << 30));
        assert_eq!(ram_in_bytes("512kb"), Some(512 << 10));
        assert_eq!(ram_in_bytes("100"), Some(100));
        assert_eq!(ram_in_bytes("1.5k"), Some(1536));
        assert_eq!(ram_in_bytes("12x"), None);
    }

    #[test]
    fn add_host_takes_both_separators() {
        assert_eq!(
            add_host("db:10.0.0.1").unwrap(),
            ("db".into(), "10.0.0.1".into())
        );
        assert_eq!(add_host("v6=[::1]").unwrap(), ("v6".into(), "::1".into()));
        assert!(add_host("db:nope").is_err());
        assert!(add_host("db").is_err());
    }

    #[test]
    fn ulimits_parse_as_dockers() {
        let u = ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (1024, 2048));
        let u = ulimit("nproc=-1").unwrap();
        assert_eq!((u.soft, u.hard), (-1, -1));
        assert!(ulimit("nofile=5:1").is_err());
        assert!(ulimit("bogus=1").is_err());
    }
}
