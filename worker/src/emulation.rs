//! Running RUN steps of foreign platforms (e.g. linux/arm64 on amd64)
//! through QEMU user emulation.
//!
//! The host's binfmt_misc is neither needed nor touched: since Linux 6.7 a
//! user namespace may mount a binfmt_misc instance of its own. The sandbox
//! helper creates a user namespace (root mapped to root, every id mapped to
//! itself, so files keep their owners), mounts a private binfmt_misc on the
//! sandbox's `/proc/sys/fs/binfmt_misc` and registers the static qemu with
//! the F (fix-binary) flag: the kernel opens the interpreter at registration,
//! from the host's filesystem, so it need not exist inside the rootfs and
//! never shows up in a layer. The registration dies with the namespace.

use std::path::{Path, PathBuf};

use kiln_platform::Platform;
use serde::{Deserialize, Serialize};

/// Where Debian's qemu-user-static puts its interpreters.
const QEMU_DIR: &str = "/usr/bin";

/// Why a foreign platform cannot be run here.
#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    #[error("platform {platform} cannot be emulated: kiln knows no QEMU binfmt rule for it")]
    Unsupported { platform: String },
    #[error(
        "RUN for {platform} needs QEMU user emulation, but {path} is missing: install qemu-user-static (apt-get install qemu-user-static)"
    )]
    MissingQemu { platform: String, path: PathBuf },
    #[error("platform {platform} is for {os}, kiln runs only linux steps")]
    ForeignOs { platform: String, os: String },
}

/// The emulator a sandbox registers for its step: serialized into the
/// sandbox spec, so the helper needs no lookup of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emulator {
    /// The static qemu binary on the host (opened by the kernel at
    /// registration time, thanks to the F flag).
    pub interpreter: PathBuf,
    /// QEMU's name for the architecture (`aarch64`), which picks the ELF
    /// magic and mask to register.
    pub qemu_arch: String,
}

/// ELF magic and mask per QEMU architecture, as qemu's
/// `scripts/qemu-binfmt-conf.sh` registers them (the mask ignores the ELF
/// ABI version byte and ET_EXEC vs ET_DYN).
struct Rule {
    qemu_arch: &'static str,
    magic: &'static [u8],
    mask: &'static [u8],
}

const MASK_64LE: &[u8] =
    b"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff";

const RULES: &[Rule] = &[
    Rule {
        qemu_arch: "aarch64",
        magic: b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
        mask: MASK_64LE,
    },
    Rule {
        qemu_arch: "arm",
        magic: b"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00",
        mask: MASK_64LE,
    },
    Rule {
        qemu_arch: "riscv64",
        magic: b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00",
        mask: MASK_64LE,
    },
    Rule {
        qemu_arch: "x86_64",
        magic: b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00",
        mask: b"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    },
];

pub use kiln_platform::host_architecture;

/// QEMU's architecture name for an OCI one.
fn qemu_arch(oci_arch: &str) -> Option<&'static str> {
    Some(match oci_arch {
        "arm64" => "aarch64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "amd64" => "x86_64",
        _ => return None,
    })
}

/// The emulator a RUN for `platform` needs: `None` for the host's own
/// architecture (run natively), an error naming the missing package when
/// qemu-user-static is not installed, so a multi-platform build fails with
/// something actionable instead of "exec format error".
pub fn emulator_for(platform: &Platform) -> Result<Option<Emulator>, EmulationError> {
    emulator_in(platform, Path::new(QEMU_DIR))
}

fn emulator_in(platform: &Platform, dir: &Path) -> Result<Option<Emulator>, EmulationError> {
    if platform.os != "linux" {
        return Err(EmulationError::ForeignOs {
            platform: platform.to_string(),
            os: platform.os.clone(),
        });
    }
    let platform_n = platform.normalize();
    if platform_n.architecture == host_architecture() {
        return Ok(None);
    }
    let arch = qemu_arch(&platform_n.architecture).ok_or_else(|| EmulationError::Unsupported {
        platform: platform.to_string(),
    })?;
    let path = dir.join(format!("qemu-{arch}-static"));
    if !path.is_file() {
        return Err(EmulationError::MissingQemu {
            platform: platform.to_string(),
            path,
        });
    }
    Ok(Some(Emulator {
        interpreter: path,
        qemu_arch: arch.to_string(),
    }))
}

fn hex_escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// The line written to binfmt_misc's `register` file for `emu`: named
/// `qemu-<arch>`, matched by magic, with flags F (interpreter opened now,
/// from the host), P (argv[0] preserved: busybox picks its applet by it, and
/// its shell re-execs applets through /proc/self/exe; measured here, without
/// P `sh -c 'cat f'` runs `f` as a script) and C (set-uid binaries get their
/// own credentials) — or `None` for an architecture without a rule.
pub fn register_line(emu: &Emulator) -> Option<String> {
    let rule = RULES.iter().find(|r| r.qemu_arch == emu.qemu_arch)?;
    Some(format!(
        ":qemu-{}:M::{}:{}:{}:FPC",
        rule.qemu_arch,
        hex_escape(rule.magic),
        hex_escape(rule.mask),
        emu.interpreter.display()
    ))
}

/// Why a step's emulation could not be set up inside its sandbox.
#[derive(Debug, thiserror::Error)]
pub enum EmulationSetupError {
    /// A system call of the setup failed (`pipe`, `fork`, `waitpid`).
    #[error("{call}: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a new user namespace.
    #[error("user namespace for emulation: {0}")]
    UserNamespace(#[source] std::io::Error),
    /// The forked child could not write the namespace's id maps.
    #[error("user namespace for emulation: writing its id maps failed")]
    IdMaps,
    /// The rootfs has no usable `/proc/sys/fs/binfmt_misc`.
    #[error("/proc/sys/fs/binfmt_misc: {0}")]
    BinfmtDir(#[source] std::io::Error),
    /// A private binfmt_misc could not be mounted (an older kernel).
    #[error("mounting a private binfmt_misc (needs Linux 6.7 or later for emulation): {0}")]
    Mount(#[source] std::io::Error),
    /// binfmt_misc refused the interpreter.
    #[error("registering the QEMU interpreter with binfmt_misc: {0}")]
    Register(#[source] std::io::Error),
}

fn sys_err(call: &'static str) -> impl FnOnce(std::io::Error) -> EmulationSetupError {
    move |source| EmulationSetupError::Sys { call, source }
}

/// Moves the (single-threaded) sandbox helper into a new user namespace in
/// which every uid and gid maps to itself, so root stays root for files and
/// `USER` steps alike, while mounts made afterwards (binfmt_misc above all)
/// belong to this namespace. A process may not write such a map for itself,
/// so a forked child, still in the host's namespace, writes it.
pub(crate) fn enter_user_namespace(
    one_thread: &crate::sys::SingleThreaded,
) -> Result<(), EmulationSetupError> {
    use crate::sys;
    use std::io::{Read, Write};
    let (rd, wr) = sys::pipe().map_err(sys_err("pipe"))?;
    let parent = std::process::id();
    let Some(pid) = sys::fork(one_thread).map_err(sys_err("fork"))? else {
        drop(wr);
        sys::die_with_parent();
        let mut go = [0u8; 1];
        let ok = std::fs::File::from(rd)
            .read(&mut go)
            .map(|n| n == 1)
            .unwrap_or(false)
            && ["uid_map", "gid_map"].iter().all(|f| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(format!("/proc/{parent}/{f}"))
                    .and_then(|mut m| m.write_all(b"0 0 4294967295\n"))
                    .is_ok()
            });
        sys::exit_now(if ok { 0 } else { 1 });
    };
    drop(rd);
    let unshared = sys::unshare(libc::CLONE_NEWUSER);
    let mut w = std::fs::File::from(wr);
    if unshared.is_ok() {
        let _ = w.write_all(b"1");
    }
    drop(w);
    let status = sys::waitpid(pid).map_err(sys_err("waitpid"))?;
    if let Err(err) = unshared {
        return Err(EmulationSetupError::UserNamespace(err));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(EmulationSetupError::IdMaps);
    }
    Ok(())
}

/// Mounts a private binfmt_misc on `proc/sys/fs/binfmt_misc` of the rootfs
/// `root` (its /proc already mounted) and registers `line`. It stays
/// mounted for the step's life: unmounting would drop the registration.
pub(crate) fn mount_and_register(
    root: std::os::fd::RawFd,
    line: &str,
) -> Result<(), EmulationSetupError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let rel = Path::new("proc/sys/fs/binfmt_misc");
    let dir = crate::sys::open_in_root(root, rel, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(EmulationSetupError::BinfmtDir)?;
    let at = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    crate::sys::mount(
        Some(std::ffi::OsStr::new("binfmt_misc")),
        &at,
        Some("binfmt_misc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(EmulationSetupError::Mount)?;
    let dir = crate::sys::open_in_root(root, rel, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(EmulationSetupError::BinfmtDir)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}/register", dir.as_raw_fd()))
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(EmulationSetupError::Register)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(arch: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
        }
    }

    #[test]
    fn host_platform_needs_no_emulator() {
        assert_eq!(emulator_for(&p(host_architecture())).unwrap(), None);
    }

    #[test]
    fn missing_qemu_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = if host_architecture() == "arm64" {
            "amd64"
        } else {
            "arm64"
        };
        let err = emulator_in(&p(foreign), dir.path()).unwrap_err();
        assert!(err.to_string().contains("qemu-user-static"), "{err}");
    }

    #[test]
    fn unknown_arch_and_os_are_refused() {
        assert!(matches!(
            emulator_for(&p("mips64le")),
            Err(EmulationError::Unsupported { .. })
        ));
        let mut w = p("amd64");
        w.os = "windows".into();
        assert!(matches!(
            emulator_for(&w),
            Err(EmulationError::ForeignOs { .. })
        ));
    }

    #[test]
    fn aarch64_rule_is_qemus() {
        let line = register_line(&Emulator {
            interpreter: "/usr/bin/qemu-aarch64-static".into(),
            qemu_arch: "aarch64".into(),
        })
        .unwrap();
        assert_eq!(
            line,
            ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/bin/qemu-aarch64-static:FPC"
        );
    }
}
