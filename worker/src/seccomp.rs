//! The seccomp filter of every sandboxed process (RUN, `kiln run`,
//! `kiln exec`), equivalent to docker's default profile.
//!
//! Without one, root in a sandbox could read a key the host's root keeps in
//! its keyring (`keyctl`), create a user namespace and mount in it
//! (`unshare -U`), and reach every other kernel interface that docker's
//! default profile closes. Profiles are written in docker's JSON format
//! ([`Profile`]): `defaultAction`, `defaultErrnoRet`, `syscalls` with
//! `names`, `action`, `errnoRet`, `args` and `includes`/`excludes` by
//! capability, architecture and kernel version. The default profile is the
//! same data built in Rust ([`Profile::docker_default`]), so a custom
//! profile (`--security-opt seccomp=FILE`) goes through the one compiler.
//!
//! The compiler resolves names with the native architecture's syscall table
//! and emits one BPF program (instructions from `seccompiler`, rust-vmm's
//! pure-Rust seccomp library, for the argument checks): the architecture is
//! checked first, then each listed syscall number in turn, its rules in the
//! profile's order, each with its own action; a listed syscall whose rules
//! all fail, and any unlisted one, get the default action. Syscalls of any
//! other ABI kill the process (letting them through would bypass the
//! filter); x32 syscall numbers match nothing, so they get the default
//! action (docker's profile would allow x32 as it allows x86_64).

mod table {
    use std::collections::HashMap;

    #[cfg(target_arch = "aarch64")]
    include!("seccomp/syscalls_aarch64.rs");
    #[cfg(target_arch = "x86_64")]
    include!("seccomp/syscalls_x86_64.rs");
    #[cfg(target_arch = "x86_64")]
    include!("seccomp/syscalls_i386.rs");

    const AUDIT_ARCH_64BIT_LE: u32 = 0x8000_0000 | 0x4000_0000;

    /// The ABIs a process on this host may call the kernel through, as
    /// (AUDIT_ARCH_*, its syscall table): native first.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn sections() -> Vec<(u32, HashMap<&'static str, i64>)> {
        vec![
            (62 | AUDIT_ARCH_64BIT_LE, make_syscall_table()),
            // i386 (`int 0x80`, 32-bit binaries): EM_386, little-endian.
            (3 | 0x4000_0000, make_syscall_table_i386()),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    pub(super) fn sections() -> Vec<(u32, HashMap<&'static str, i64>)> {
        vec![(183 | AUDIT_ARCH_64BIT_LE, make_syscall_table())]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub(super) fn sections() -> Vec<(u32, HashMap<&'static str, i64>)> {
        Vec::new()
    }
}

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompRule,
};
use serde::{Deserialize, Serialize};

/// Which filter a sandboxed process gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// Docker's default profile ([`Profile::docker_default`]).
    #[default]
    Default,
    /// No filter (`--security-opt seccomp=unconfined`, `RUN
    /// --security=insecure`).
    Unconfined,
    /// A profile in docker's JSON format, as the text of its file (parsed
    /// and checked by the CLI, compiled again by each helper).
    Profile(String),
}

/// What can be wrong with a profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile: {0}")]
    Json(#[from] serde_json::Error),
    #[error("seccomp profile: unknown action {0:?}")]
    Action(String),
    #[error("seccomp profile: unknown operator {0:?}")]
    Operator(String),
    #[error("seccomp profile: {0}")]
    Rule(String),
    #[error("seccomp profile: the filter has {0} instructions, more than the kernel's 4096")]
    TooLong(usize),
    #[error("seccomp is not supported on this architecture by kiln")]
    Arch,
    #[error("loading the seccomp filter: {0}")]
    Load(String),
}

/// A seccomp profile in docker's JSON format (moby's `types.Seccomp`);
/// fields kiln has no use for (`archMap`, `listenerPath`, `flags`) are
/// accepted and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Architectures: the native one is always filtered, others are killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<SyscallRule>>,
}

/// One entry of a profile's `syscalls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// The old single-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// All must hold (AND).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Arg>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Filter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Filter>,
}

/// An argument check (`SCMP_CMP_*`); for `SCMP_CMP_MASKED_EQ`, `value` is
/// the mask and `valueTwo` the expected masked value, as libseccomp has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u8,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// When a rule applies: every listed capability held (`includes`) or none
/// of them (`excludes`), the native architecture listed, the kernel at
/// least `minKernel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

/// Docker's unconditional allow-list (moby's default profile, the entry
/// without conditions). Names the native table lacks are skipped, as
/// libseccomp skips them.
const DOCKER_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Socket families docker's profile allows besides those below 12
/// (AF_VSOCK, 40, and AF_ALG, 38, among the refused).
const DOCKER_SOCKET_FAMILIES: &[u64] = &[
    13, 14, 15, 16, 17, 18, 21, 22, 24, 26, 27, 28, 29, 30, 31, 32, 33, 35, 36, 39, 41, 42, 43, 44,
    45,
];

/// `personality` values docker allows: PER_LINUX, UNAME26, PER_LINUX32,
/// PER_LINUX32|UNAME26 and the query 0xffffffff.
const DOCKER_PERSONALITIES: &[u64] = &[0, 8, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags of `clone` that need CAP_SYS_ADMIN in docker's
/// profile: NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Capability names by number, for `includes.caps`/`excludes.caps`.
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn allow(names: &[&str]) -> SyscallRule {
    SyscallRule {
        names: Some(names.iter().map(|n| n.to_string()).collect()),
        action: "SCMP_ACT_ALLOW".into(),
        ..SyscallRule::default()
    }
}

fn arg(index: u8, op: &str, value: u64) -> Arg {
    Arg {
        index,
        value,
        value_two: 0,
        op: op.into(),
    }
}

fn on_arches(mut r: SyscallRule, arches: &[&str]) -> SyscallRule {
    r.includes = Some(Filter {
        arches: Some(arches.iter().map(|a| a.to_string()).collect()),
        ..Filter::default()
    });
    r
}

impl Profile {
    /// Docker's default profile as it applies to docker's default
    /// capability set ([`crate::sandbox::DEFAULT_CAPS`], kiln's): the
    /// unconditional allow-list; `ptrace` and `process_vm_*` (kernel ≥ 4.8);
    /// `socket` for the families docker allows; `personality` for docker's
    /// values; `clone` without namespace flags and `clone3` failing with
    /// ENOSYS (so libc falls back to `clone`), as without CAP_SYS_ADMIN;
    /// `chroot` (CAP_SYS_CHROOT); the per-architecture extras; EPERM for
    /// everything else (`keyctl`, `add_key`, `unshare`, `mount`, `setns`,
    /// `bpf`, …). The entries docker grants only with capabilities outside
    /// that set are left out, as docker leaves them out for it.
    pub fn docker_default() -> Profile {
        let mut rules = vec![allow(DOCKER_ALLOWED)];
        let mut ptrace = allow(&["process_vm_readv", "process_vm_writev", "ptrace"]);
        ptrace.includes = Some(Filter {
            min_kernel: Some("4.8".into()),
            ..Filter::default()
        });
        rules.push(ptrace);
        let mut socket = allow(&["socket"]);
        socket.args = Some(vec![arg(0, "SCMP_CMP_LT", 12)]);
        rules.push(socket);
        for f in DOCKER_SOCKET_FAMILIES {
            let mut socket = allow(&["socket"]);
            socket.args = Some(vec![arg(0, "SCMP_CMP_EQ", *f)]);
            rules.push(socket);
        }
        for p in DOCKER_PERSONALITIES {
            let mut r = allow(&["personality"]);
            r.args = Some(vec![arg(0, "SCMP_CMP_EQ", *p)]);
            rules.push(r);
        }
        rules.push(on_arches(
            allow(&["sync_file_range2", "swapcontext"]),
            &["ppc64le"],
        ));
        rules.push(on_arches(
            allow(&[
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ]),
            &["arm", "arm64"],
        ));
        rules.push(on_arches(allow(&["arch_prctl"]), &["amd64", "x32"]));
        rules.push(on_arches(allow(&["modify_ldt"]), &["amd64", "x32", "x86"]));
        rules.push(on_arches(
            allow(&[
                "s390_pci_mmio_read",
                "s390_pci_mmio_write",
                "s390_runtime_instr",
            ]),
            &["s390", "s390x"],
        ));
        rules.push(on_arches(allow(&["riscv_flush_icache"]), &["riscv64"]));
        let mut clone = allow(&["clone"]);
        clone.args = Some(vec![arg(0, "SCMP_CMP_MASKED_EQ", CLONE_NAMESPACE_FLAGS)]);
        rules.push(clone);
        rules.push(SyscallRule {
            names: Some(vec!["clone3".into()]),
            action: "SCMP_ACT_ERRNO".into(),
            errno_ret: Some(libc::ENOSYS as u32),
            ..SyscallRule::default()
        });
        let mut chroot = allow(&["chroot"]);
        chroot.includes = Some(Filter {
            caps: Some(vec!["CAP_SYS_CHROOT".into()]),
            ..Filter::default()
        });
        rules.push(chroot);
        Profile {
            default_action: "SCMP_ACT_ERRNO".into(),
            default_errno_ret: Some(libc::EPERM as u32),
            architectures: None,
            syscalls: Some(rules),
        }
    }

    /// Parses a profile in docker's JSON format and checks that it
    /// compiles.
    pub fn parse(json: &str) -> Result<Profile, SeccompError> {
        let p: Profile = serde_json::from_str(json)?;
        p.compile(crate::sandbox::DEFAULT_CAPS)?;
        Ok(p)
    }

    /// The BPF program of this profile for the native architecture, for a
    /// process holding the capabilities `caps` (a bit per capability).
    pub fn compile(&self, caps: u64) -> Result<BpfProgram, SeccompError> {
        let sections = table::sections();
        if sections.is_empty() {
            return Err(SeccompError::Arch);
        }
        let default = action(&self.default_action, self.default_errno_ret)?;
        let kernel = kernel_version();
        // Which rules apply is decided once, by the host's architecture and
        // the capability set (as moby decides it); names are then resolved
        // per ABI, as libseccomp resolves them for each of a filter's arches.
        let mut applied: Vec<(Vec<&str>, Option<SeccompRule>, SeccompAction)> = Vec::new();
        for r in self.syscalls.iter().flatten() {
            if !applies(r, caps, kernel) {
                continue;
            }
            let act = action(&r.action, r.errno_ret)?;
            let rule = match &r.args {
                Some(args) if !args.is_empty() => {
                    let conds = args
                        .iter()
                        .map(condition)
                        .collect::<Result<Vec<_>, SeccompError>>()?;
                    Some(SeccompRule::new(conds).map_err(|e| SeccompError::Rule(e.to_string()))?)
                }
                _ => None,
            };
            let names = r.names.iter().flatten().chain(r.name.iter());
            applied.push((names.map(String::as_str).collect(), rule, act));
        }
        let bodies: Vec<BpfProgram> = sections
            .iter()
            .map(|(_, table)| section(table, &applied, &default))
            .collect();
        // The dispatch on seccomp_data.arch: per ABI a `jeq` and a jump to
        // its section; any other ABI is killed.
        let n = sections.len();
        let mut prog: BpfProgram = vec![stmt(BPF_LD | BPF_W | BPF_ABS, 4)];
        let mut before = 0usize; // section instructions before this one
        for (i, (audit, _)) in sections.iter().enumerate() {
            prog.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *audit, 0, 1));
            // From the instruction after this `ja`: the other ABIs' pairs,
            // the kill, then the sections before this one.
            let skip = 2 * (n - i - 1) + 1 + before;
            prog.push(stmt(BPF_JMP | BPF_JA, skip as u32));
            before += bodies[i].len();
        }
        prog.push(stmt(BPF_RET, u32::from(SeccompAction::KillProcess)));
        for b in bodies {
            prog.extend(b);
        }
        if prog.len() > 4096 {
            return Err(SeccompError::TooLong(prog.len()));
        }
        Ok(prog)
    }
}

/// The code of one ABI: load the syscall number, find it by a binary
/// search over the named syscalls (a `jge` per level, a short `jeq` chain
/// at the leaves), then jump to its block: its conditional rules, each
/// falling through to its action on a match, then its unconditional action
/// (or the default). Identical blocks (most are a lone `ret ALLOW`) are
/// shared. A linear chain of `jeq`s would cost every syscall a walk of
/// hundreds of instructions, and the kernel walks the filter once per
/// syscall number when it loads it (its allow cache): a millisecond per
/// step; the tree makes both a few dozen instructions.
fn section(
    table: &std::collections::HashMap<&'static str, i64>,
    applied: &[(Vec<&str>, Option<SeccompRule>, SeccompAction)],
    default: &SeccompAction,
) -> BpfProgram {
    let mut by_nr: BTreeMap<i64, Chain> = BTreeMap::new();
    for (names, rule, act) in applied {
        for name in names {
            // Unknown to this ABI: skipped, as libseccomp does.
            let Some(nr) = table.get(name) else {
                continue;
            };
            let entry = by_nr.entry(*nr).or_default();
            match rule {
                Some(rule) => entry.0.push((rule.clone(), act.clone())),
                None => {
                    entry.1.get_or_insert(act.clone());
                }
            }
        }
    }
    let ret = |a: &SeccompAction| stmt(BPF_RET, u32::from(a.clone()));
    let mut blocks: Vec<BpfProgram> = Vec::new();
    let mut shared: std::collections::HashMap<Vec<(u16, u8, u8, u32)>, usize> =
        std::collections::HashMap::new();
    let mut entries: Vec<(u32, usize)> = Vec::new();
    for (nr, (rules, uncond)) in by_nr {
        let mut block: BpfProgram = Vec::new();
        for (rule, act) in rules {
            block.extend(BpfProgram::from(rule));
            block.push(ret(&act));
        }
        block.push(ret(uncond.as_ref().unwrap_or(default)));
        let key = block.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        let idx = *shared.entry(key).or_insert_with(|| {
            blocks.push(block);
            blocks.len() - 1
        });
        entries.push((nr as u32, idx));
    }
    let mut prog: BpfProgram = vec![stmt(BPF_LD | BPF_W | BPF_ABS, 0)]; // seccomp_data.nr
    let mut to_block: Vec<(usize, usize)> = Vec::new();
    search_tree(&entries, &ret(default), &mut prog, &mut to_block);
    let mut starts = Vec::with_capacity(blocks.len());
    for b in blocks {
        starts.push(prog.len());
        prog.extend(b);
    }
    for (at, idx) in to_block {
        prog[at].k = (starts[idx] - at - 1) as u32;
    }
    prog
}

/// Emits the search for the accumulator among `entries` (sorted by
/// number): a `ja` to each entry's block is recorded in `to_block` (its
/// position, the block) for the caller to aim; a number not found gets
/// `miss`.
fn search_tree(
    entries: &[(u32, usize)],
    miss: &sock_filter,
    prog: &mut BpfProgram,
    to_block: &mut Vec<(usize, usize)>,
) {
    if entries.len() <= 4 {
        for (nr, idx) in entries {
            prog.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *nr, 0, 1));
            to_block.push((prog.len(), *idx));
            prog.push(stmt(BPF_JMP | BPF_JA, 0));
        }
        prog.push(miss.clone());
        return;
    }
    let (low, high) = entries.split_at(entries.len() / 2);
    // nr >= the first of the upper half: on to its subtree (a `ja`, whose
    // offset has no 255 limit), else fall into the lower half.
    prog.push(jump(BPF_JMP | BPF_JGE | BPF_K, high[0].0, 0, 1));
    let ja = prog.len();
    prog.push(stmt(BPF_JMP | BPF_JA, 0));
    search_tree(low, miss, prog, to_block);
    prog[ja].k = (prog.len() - ja - 1) as u32;
    search_tree(high, miss, prog, to_block);
}

/// One syscall's rules: the conditional ones with their actions, in the
/// profile's order, then the action when none of them matches (if an
/// unconditional rule names the syscall).
type Chain = (Vec<(SeccompRule, SeccompAction)>, Option<SeccompAction>);

/// Compiles the filter `mode` asks for, for a process holding `caps`;
/// `None` when it asks for none.
pub fn compile_mode(mode: &Seccomp, caps: u64) -> Result<Option<BpfProgram>, SeccompError> {
    match mode {
        Seccomp::Unconfined => Ok(None),
        Seccomp::Default => Profile::docker_default().compile(caps).map(Some),
        Seccomp::Profile(json) => {
            let p: Profile = serde_json::from_str(json)?;
            p.compile(caps).map(Some)
        }
    }
}

/// Installs `prog` on the calling thread (with no_new_privs, which the
/// kernel requires of a process without CAP_SYS_ADMIN). From here on every
/// syscall, the execve that follows included, passes the filter.
pub fn load(prog: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(prog).map_err(|e| SeccompError::Load(e.to_string()))
}

const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JA: u16 = 0x00;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The names docker's profiles use for this architecture (Go's and
/// libseccomp's).
fn native_arch_names() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["amd64", "x86_64", "SCMP_ARCH_X86_64"]
    } else if cfg!(target_arch = "aarch64") {
        &["arm64", "aarch64", "SCMP_ARCH_AARCH64"]
    } else {
        &[]
    }
}

/// (major, minor) of the running kernel; (0, 0) when unreadable, so that a
/// `minKernel` rule is left out rather than granted.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// A capability's number by its name (`CAP_NET_ADMIN`), for
/// `kiln run --cap-add/--cap-drop`.
pub fn cap_number(name: &str) -> Option<u32> {
    CAP_NAMES.iter().position(|c| *c == name).map(|i| i as u32)
}

fn has_cap(caps: u64, name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let name = if name.starts_with("CAP_") {
        name
    } else {
        format!("CAP_{name}")
    };
    CAP_NAMES
        .iter()
        .position(|c| *c == name)
        .is_some_and(|i| caps & (1u64 << i) != 0)
}

/// Whether rule `r` applies to this process, as moby decides it.
fn applies(r: &SyscallRule, caps: u64, kernel: (u32, u32)) -> bool {
    let native = native_arch_names();
    if let Some(inc) = &r.includes {
        if let Some(arches) = &inc.arches {
            if !arches.is_empty() && !arches.iter().any(|a| native.contains(&a.as_str())) {
                return false;
            }
        }
        if let Some(cs) = &inc.caps {
            if !cs.iter().all(|c| has_cap(caps, c)) {
                return false;
            }
        }
        if let Some(min) = &inc.min_kernel {
            match parse_version(min) {
                Some(v) if kernel >= v => {}
                _ => return false,
            }
        }
    }
    if let Some(exc) = &r.excludes {
        if let Some(arches) = &exc.arches {
            if arches.iter().any(|a| native.contains(&a.as_str())) {
                return false;
            }
        }
        if let Some(cs) = &exc.caps {
            if cs.iter().any(|c| has_cap(caps, c)) {
                return false;
            }
        }
    }
    true
}

fn action(name: &str, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(libc::EPERM as u32)),
        other => return Err(SeccompError::Action(other.into())),
    })
}

fn condition(a: &Arg) -> Result<SeccompCondition, SeccompError> {
    let (op, value) = match a.op.as_str() {
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, a.value),
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, a.value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, a.value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, a.value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, a.value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, a.value),
        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(a.value), a.value_two),
        other => return Err(SeccompError::Operator(other.into())),
    };
    SeccompCondition::new(a.index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| SeccompError::Rule(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::DEFAULT_CAPS;

    #[test]
    fn default_profile_compiles_within_the_kernel_limit() {
        let prog = Profile::docker_default().compile(DEFAULT_CAPS).unwrap();
        assert!(prog.len() > 300 && prog.len() <= 4096, "{}", prog.len());
    }

    #[test]
    fn caps_decide_includes_and_excludes() {
        let k = (6, 1);
        let mut r = allow(&["chroot"]);
        r.includes = Some(Filter {
            caps: Some(vec!["CAP_SYS_CHROOT".into()]),
            ..Filter::default()
        });
        assert!(applies(&r, DEFAULT_CAPS, k));
        r.includes = Some(Filter {
            caps: Some(vec!["CAP_SYS_ADMIN".into()]),
            ..Filter::default()
        });
        assert!(!applies(&r, DEFAULT_CAPS, k));
        r.includes = None;
        r.excludes = Some(Filter {
            caps: Some(vec!["CAP_SYS_ADMIN".into()]),
            ..Filter::default()
        });
        assert!(applies(&r, DEFAULT_CAPS, k));
        r.includes = Some(Filter {
            min_kernel: Some("7.0".into()),
            ..Filter::default()
        });
        assert!(!applies(&r, DEFAULT_CAPS, k));
    }

    #[test]
    fn docker_json_profiles_parse() {
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["keyctl"],"action":"SCMP_ACT_ERRNO","errnoRet":38,"args":null},
            {"names":["clone"],"action":"SCMP_ACT_ERRNO",
             "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#;
        let p = Profile::parse(json).unwrap();
        assert_eq!(p.syscalls.as_ref().map(Vec::len), Some(2));
        assert!(matches!(
            Profile::parse(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#),
            Err(SeccompError::Action(_))
        ));
        assert!(Profile::parse("{").is_err());
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_version("4.8"), Some((4, 8)));
    }
}
