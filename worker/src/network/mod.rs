//! One network layer for RUN steps and containers.
//!
//! - [`netpool`]: RUN steps' namespaces of their own, wired out by
//!   slirp4netns (no bridge, veth or firewall rule on the host);
//! - [`netlink`]: the rtnetlink requests (bridge, veth, addresses, routes);
//! - [`store`]: docker's named networks (`bridge`, `host`, `none` and
//!   user-defined bridges) as `$KILN_ROOT/networks/<id>.json`, with their
//!   address allocations (IPAM), all under one flock;
//! - [`ports`]: published ports (`-p`, `-P`): DNAT rules and a userland
//!   proxy for the host's loopback, kept by each container's helper;
//! - [`attach`]: a container's side: what `kiln run` asked for
//!   ([`ContainerNet`]), the veth pair the container helper makes, the
//!   firewall rules of a bridge, and `/etc/hosts` / `/etc/resolv.conf`
//!   as docker writes them;
//! - [`resolver`] (with [`dns`], its messages): docker's embedded DNS
//!   server at 127.0.0.11 for containers on user-defined networks.
//!
//! Rootless kiln keeps today's behaviour: RUN steps use slirp4netns, and
//! containers cannot use bridges (they need root in the host's network
//! namespace), so `kiln run` refuses `--network bridge` there.

pub mod attach;
pub mod dns;
pub mod helper;
pub mod netlink;
pub mod netpool;
pub mod ports;
pub mod request;
pub mod resolver;
pub mod store;

pub use attach::{Attachment, ContainerNet, NetMode};
pub use request::{NetRequest, RequestError};
pub use store::{NetworkError, NetworkRecord, Networks};
