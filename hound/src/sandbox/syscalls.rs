//! The seccomp policy of a sandboxed hound, as data: one entry per line, each with the reason
//! the job loop needs it (or, for the kill-list, why only an attacker would call it).
//!
//! The job loop this list was derived for is std Rust, single-threaded except for the S3 upload
//! threads (`Need::Threads`, started after confinement): memmap2 over the ring memfds, flate2
//! (zlib-rs) and sha2 (pure computation), eventfd doorbells, a SOCK_SEQPACKET control socket, a
//! filesystem cold store written atomically in batches (temp files, writeback, fdatasync, link,
//! fsync dir) and, when the S3 backend is configured, a blocking HTTP client over TCP. It was checked
//! by running `tests/sandbox_workload.rs` and `hound-escape` under `strace -f` with the filter
//! in force (every `EPERM` a denied call would produce shows up in the trace); see
//! docs/SECURITY.md.
//!
//! How the lists become filters is in `seccomp.rs`: the kill-list and the ENOSYS list are
//! separate filters installed first, the allow-list filter (default `EPERM`) last.

/// When an allow-list entry is part of the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Every hound.
    Always,
    /// Only a hound with an outbound TCP endpoint (the S3 backend).
    TcpClient,
    /// Only a hound that starts upload threads (S3 backend with `cold.s3_concurrency` > 1).
    Threads,
}

/// Restriction on the arguments of an allowed call; a call that does not satisfy it gets the
/// filter's default action (`EPERM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Args {
    /// Any arguments.
    Any,
    /// `prot` (argument 2) must not contain `PROT_EXEC`: no new executable memory.
    NoExecProt,
    /// Argument 0 must be the hound's own pid (signals to itself only, e.g. `abort()`).
    OwnPid,
    /// `socket(AF_INET | AF_INET6, SOCK_STREAM [| flags], 0 | IPPROTO_TCP)` only: no UDP (which
    /// Landlock does not govern before ABI 10), no raw sockets, no AF_UNIX / AF_NETLINK, no
    /// SCTP / MPTCP streams.
    InetTcpSocket,
    /// `ioctl(fd, FIONBIO, …)` only (non-blocking toggle of the HTTP client's socket).
    Fionbio,
    /// `fcntl` with `F_GETFD`, `F_SETFD`, `F_GETFL` or `F_DUPFD_CLOEXEC` only: no `F_SETFL`
    /// (file status flags such as `O_NONBLOCK` live on the open file description, which the
    /// hound must not be able to change under anyone), no seals, leases, locks or owner
    /// changes on the memfds or anything else.
    FcntlBasic,
    /// `clone(flags, …)` with `flags` exactly [`THREAD_CLONE_FLAGS`]: a new thread of this
    /// process, never a new process (see [`THREAD_CLONE_FLAGS`] for why that is sufficient).
    ThreadClone,
    /// `madvise` with one of [`MADV_ALLOWED`] only (what glibc malloc, std and memmap2 use).
    /// [`MADV_KILLED`] kills the hound; any other advice is `EPERM`.
    MadviseUsed,
}

/// The only `clone` flags word a hound may pass: what glibc's `pthread_create` passes (after
/// `clone3` answered `ENOSYS`), exit signal 0.
///
/// Why this cannot make a process: `CLONE_THREAD` puts the child in the caller's thread group
/// (the kernel requires `CLONE_SIGHAND` with it, and `CLONE_VM` with that), so it shares the
/// hound's memory, descriptors, filesystem context, credentials, rlimits, seccomp filters
/// (a thread inherits the filters of the thread that created it), Landlock domain and
/// no_new_privs; it dies with the hound (a SIGKILL or exit_group ends the whole group) and
/// cannot exec (`execve` is on the kill-list). No namespace flag (`CLONE_NEW*`), no
/// `CLONE_PIDFD`, `CLONE_PTRACE`, `CLONE_UNTRACED`, `CLONE_VFORK` or `CLONE_PARENT` is in the
/// word, and the comparison is for equality, so any other combination is refused (`EPERM`).
/// The kernel reads the low 32 bits of the legacy `clone` flags word, which is exactly what the
/// filter compares. `fork`, `vfork` (x86-64) are not allowed at all and `clone3` (whose flags
/// live in memory, out of seccomp's reach) answers `ENOSYS`.
pub(crate) const THREAD_CLONE_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

/// Advice values a hound may give `madvise`: glibc's allocator returns freed memory with
/// `MADV_DONTNEED` (heap trimming) and may use the (no)hugepage hints when its tunables ask for
/// them; memmap2's `advise` maps to the access-pattern hints and `MADV_FREE`. Nothing here can
/// affect another process: `MADV_DONTNEED` on the shared ring memfds only drops the hound's own
/// page-table entries (the pages stay in the memfd), `MADV_FREE` is refused by the kernel on
/// shared mappings.
pub(crate) const MADV_ALLOWED: &[(i32, &str)] = &[
    (libc::MADV_NORMAL, "MADV_NORMAL"),
    (libc::MADV_RANDOM, "MADV_RANDOM"),
    (libc::MADV_SEQUENTIAL, "MADV_SEQUENTIAL"),
    (libc::MADV_WILLNEED, "MADV_WILLNEED"),
    (libc::MADV_DONTNEED, "MADV_DONTNEED"),
    (libc::MADV_FREE, "MADV_FREE"),
    (libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"),
    (libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE"),
];

/// Advice values only an attacker gives: memory-failure injection. `MADV_HWPOISON` on a page
/// of a shared ring would poison it for the supervisor too (SIGBUS on its next access); both
/// need CAP_SYS_ADMIN, which the capabilities layer removes, and seccomp kills the hound at the
/// first attempt anyway.
pub(crate) const MADV_KILLED: &[(i32, &str)] = &[
    (libc::MADV_HWPOISON, "MADV_HWPOISON"),
    (libc::MADV_SOFT_OFFLINE, "MADV_SOFT_OFFLINE"),
];

/// One allowed system call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Allowed {
    /// Syscall number on this architecture.
    pub nr: i64,
    /// `SYS_…` symbol (for reports and tests).
    pub sym: &'static str,
    /// When it is part of the filter.
    pub need: Need,
    /// Argument restriction.
    pub args: Args,
}

/// One system call with a fixed verdict (kill, ENOSYS, or documented EPERM).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Listed {
    /// Syscall number on this architecture.
    pub nr: i64,
    /// `SYS_…` symbol.
    pub sym: &'static str,
}

macro_rules! allow {
    ($sym:ident, $need:ident, $args:ident) => {
        Allowed {
            nr: libc::$sym,
            sym: stringify!($sym),
            need: Need::$need,
            args: Args::$args,
        }
    };
}

macro_rules! listed {
    ($sym:ident) => {
        Listed {
            nr: libc::$sym,
            sym: stringify!($sym),
        }
    };
}

/// What the job loop needs, on every architecture.
#[rustfmt::skip]
pub(crate) const ALLOW: &[Allowed] = &[
    // --- memory ---
    allow!(SYS_mmap, Always, NoExecProt),           // memmap2 maps ring memfds / cold files; malloc of large blocks
    allow!(SYS_munmap, Always, Any),                // memmap2 drop; free of large blocks
    allow!(SYS_mremap, Always, Any),                // realloc of large (mmapped) Vec buffers while compressing
    allow!(SYS_madvise, Always, MadviseUsed),       // glibc free trimming (MADV_DONTNEED), memmap2 advise; see MADV_ALLOWED
    allow!(SYS_brk, Always, Any),                   // glibc malloc main-arena growth
    allow!(SYS_mprotect, Always, NoExecProt),       // glibc malloc heap growth; never to make memory executable
    allow!(SYS_msync, Always, Any),                 // memmap2 flush of a mapped file
    // --- descriptors the hound holds: doorbells, control socket, cold-store files ---
    allow!(SYS_read, Always, Any),                  // eventfd doorbell read; file reads (restore)
    allow!(SYS_write, Always, Any),                 // eventfd doorbell ring; file writes; stderr diagnostics
    allow!(SYS_readv, Always, Any),                 // std read_vectored on files / sockets
    allow!(SYS_writev, Always, Any),                // std write_vectored (stderr, files)
    allow!(SYS_pread64, Always, Any),               // positioned reads of cold-store files
    allow!(SYS_pwrite64, Always, Any),              // positioned writes of cold-store files
    allow!(SYS_lseek, Always, Any),                 // std File seek / stream_position
    allow!(SYS_close, Always, Any),                 // closing cold-store files and sockets
    allow!(SYS_fsync, Always, Any),                 // atomic write: fsync temp file, then fsync the directory
    allow!(SYS_fdatasync, Always, Any),             // File::sync_data (group commit: one per temp file)
    allow!(SYS_sync_file_range, Always, Any),       // group commit: start writeback of a batch's temp files (own files only)
    allow!(SYS_fstat, Always, Any),                 // std File::metadata, read_to_end size hint
    allow!(SYS_newfstatat, Always, Any),            // std fs::metadata on older glibc paths
    allow!(SYS_statx, Always, Any),                 // std fs::metadata / File::metadata (preferred by std)
    allow!(SYS_fcntl, Always, FcntlBasic),          // CLOEXEC flags, F_GETFL reads, try_clone (F_DUPFD_CLOEXEC)
    // --- filesystem cold store (paths confined by Landlock to the rw dirs) ---
    allow!(SYS_openat, Always, Any),                // open temp files, objects, directories (for fsync / listing)
    allow!(SYS_mkdirat, Always, Any),               // create key-prefix directories
    allow!(SYS_unlinkat, Always, Any),              // erase objects; remove temp files after a failed write
    allow!(SYS_renameat2, Always, Any),             // atomic publish: rename temp file over the object
    allow!(SYS_linkat, Always, Any),                // create-only publish: link the temp file to the key
    allow!(SYS_getdents64, Always, Any),            // list objects (read_dir)
    // --- control socket (SOCK_SEQPACKET) and HTTP socket data ---
    allow!(SYS_recvmsg, Always, Any),               // control frames (with or without ancillary data)
    allow!(SYS_sendmsg, Always, Any),               // Ready / Fatal frames
    allow!(SYS_recvfrom, Always, Any),              // recv() on the control socket; HTTP responses
    allow!(SYS_sendto, Always, Any),                // send() on the control socket; HTTP requests
    allow!(SYS_ppoll, Always, Any),                 // wait on doorbell + control socket with a timeout
    // --- time, randomness, synchronisation ---
    allow!(SYS_clock_gettime, Always, Any),         // Instant / SystemTime when the vDSO is unavailable
    allow!(SYS_clock_nanosleep, Always, Any),       // thread::sleep in the idle back-off
    allow!(SYS_nanosleep, Always, Any),             // thread::sleep on older glibc
    allow!(SYS_getrandom, Always, Any),             // HashMap RandomState seeds; UUIDv7 random bits
    allow!(SYS_futex, Always, Any),                 // std Mutex / OnceLock (stdout lock, lazy statics)
    allow!(SYS_sched_yield, Always, Any),           // spin phase of the ring poll
    // --- signals and process lifetime ---
    allow!(SYS_rt_sigreturn, Always, Any),          // return from a signal handler (std's stack-overflow handler)
    allow!(SYS_rt_sigprocmask, Always, Any),        // glibc abort() / raise() mask handling
    allow!(SYS_rt_sigaction, Always, Any),          // glibc abort() resets SIGABRT to default
    allow!(SYS_sigaltstack, Always, Any),           // std's stack-overflow guard page handler
    allow!(SYS_restart_syscall, Always, Any),       // kernel restarts an interrupted sleep / poll
    allow!(SYS_exit, Always, Any),                  // thread exit
    allow!(SYS_exit_group, Always, Any),            // process::exit after Shutdown or Fatal
    allow!(SYS_getpid, Always, Any),                // own pid (Ready message, abort())
    allow!(SYS_gettid, Always, Any),                // glibc raise() / abort()
    allow!(SYS_getppid, Always, Any),               // parent check while idle (orphan detection)
    allow!(SYS_kill, Always, OwnPid),               // signals to itself only
    allow!(SYS_tgkill, Always, OwnPid),             // glibc abort() -> raise(SIGABRT) on itself
    allow!(SYS_tkill, Always, OwnPid),              // raise() on itself (single-threaded: tid == pid)
    // --- S3 HTTP client (only with an outbound TCP endpoint; Landlock limits the port) ---
    allow!(SYS_socket, TcpClient, InetTcpSocket),   // TCP socket to the S3 endpoint
    allow!(SYS_connect, TcpClient, Any),            // connect to the S3 endpoint (port checked by Landlock)
    allow!(SYS_setsockopt, TcpClient, Any),         // TCP_NODELAY, SO_RCVTIMEO / SO_SNDTIMEO
    allow!(SYS_getsockopt, TcpClient, Any),         // SO_ERROR after a non-blocking connect
    allow!(SYS_getsockname, TcpClient, Any),        // local address (HTTP client bookkeeping)
    allow!(SYS_getpeername, TcpClient, Any),        // peer address (HTTP client bookkeeping)
    allow!(SYS_ioctl, TcpClient, Fionbio),          // set_nonblocking on the TCP socket
    allow!(SYS_shutdown, TcpClient, Any),           // half-close the HTTP connection
    // --- upload threads (S3 with cold.s3_concurrency > 1; threads start after confinement) ---
    allow!(SYS_clone, Threads, ThreadClone),        // pthread_create: the thread flags exactly, see THREAD_CLONE_FLAGS
    allow!(SYS_set_robust_list, Threads, Any),      // glibc registers each new thread's robust futex list
    allow!(SYS_rseq, Threads, Any),                 // glibc registers each new thread's restartable sequence area
];

/// What the job loop needs on x86-64 only (legacy calls that newer architectures never had).
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
pub(crate) const ALLOW_ARCH: &[Allowed] = &[
    allow!(SYS_poll, Always, Any),                  // glibc poll() uses the legacy call on x86-64
    allow!(SYS_rename, Always, Any),                // std fs::rename -> glibc rename() on x86-64
    allow!(SYS_renameat, Always, Any),              // renameat() on older glibc
    allow!(SYS_link, Always, Any),                  // std fs::hard_link -> glibc link() on x86-64
    allow!(SYS_mkdir, Always, Any),                 // std fs::create_dir -> glibc mkdir() on x86-64
    allow!(SYS_unlink, Always, Any),                // std fs::remove_file -> glibc unlink() on x86-64
    allow!(SYS_rmdir, Always, Any),                 // std fs::remove_dir -> glibc rmdir() on x86-64
];

/// No legacy calls on other architectures.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const ALLOW_ARCH: &[Allowed] = &[];

/// Calls only an attacker makes: the hound is killed (SIGSYS) at the first attempt, which the
/// supervisor records as `HoundKilled { signal: SIGSYS }`. None of these is reachable from the
/// job loop, std's panic / backtrace machinery or glibc's abort path.
#[rustfmt::skip]
pub(crate) const KILL: &[Listed] = &[
    listed!(SYS_execve),             // run another program (a shell)
    listed!(SYS_execveat),           // same, by fd
    listed!(SYS_ptrace),             // attach to / inspect other processes
    listed!(SYS_process_vm_readv),   // read another process's memory
    listed!(SYS_process_vm_writev),  // write another process's memory
    listed!(SYS_process_madvise),    // act on another process's memory
    listed!(SYS_pidfd_getfd),        // steal a descriptor from another process
    listed!(SYS_kcmp),               // probe other processes' kernel objects
    listed!(SYS_bpf),                // load BPF programs (kernel attack surface)
    listed!(SYS_perf_event_open),    // perf (kernel attack surface, side channels)
    listed!(SYS_userfaultfd),        // classic kernel-race exploitation primitive
    listed!(SYS_io_uring_setup),     // io_uring bypasses seccomp for the calls it performs
    listed!(SYS_io_uring_enter),     // (same)
    listed!(SYS_io_uring_register),  // (same)
    listed!(SYS_mount),              // change the mount table
    listed!(SYS_umount2),            // (same)
    listed!(SYS_fsopen),             // new mount API
    listed!(SYS_fsconfig),           // (same)
    listed!(SYS_fsmount),            // (same)
    listed!(SYS_fspick),             // (same)
    listed!(SYS_move_mount),         // (same)
    listed!(SYS_open_tree),          // (same)
    listed!(SYS_mount_setattr),      // (same)
    listed!(SYS_pivot_root),         // change the root
    listed!(SYS_chroot),             // (same)
    listed!(SYS_unshare),            // leave the namespaces the sandbox set up
    listed!(SYS_setns),              // join other namespaces
    listed!(SYS_init_module),        // load kernel code
    listed!(SYS_finit_module),       // (same)
    listed!(SYS_delete_module),      // unload kernel code
    listed!(SYS_kexec_load),         // replace the kernel
    listed!(SYS_kexec_file_load),    // (same)
    listed!(SYS_reboot),             // reboot / power off
    listed!(SYS_keyctl),             // kernel keyrings (credentials of other services)
    listed!(SYS_add_key),            // (same)
    listed!(SYS_request_key),        // (same)
    listed!(SYS_open_by_handle_at),  // open files by handle, bypassing path checks
    listed!(SYS_name_to_handle_at),  // (companion of the above)
    listed!(SYS_personality),        // legacy execution domains (ASLR off, READ_IMPLIES_EXEC)
    listed!(SYS_swapon),             // swap configuration
    listed!(SYS_swapoff),            // (same)
    listed!(SYS_acct),               // process accounting configuration
    listed!(SYS_quotactl),           // quota configuration
    listed!(SYS_quotactl_fd),        // (same)
    listed!(SYS_fanotify_init),      // watch the whole filesystem
    listed!(SYS_syslog),             // read / clear the kernel log
    listed!(SYS_vhangup),            // hang up the terminal
];

/// Attacker-only calls that exist on x86-64 only.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
pub(crate) const KILL_ARCH: &[Listed] = &[
    listed!(SYS_iopl),               // raw I/O port access
    listed!(SYS_ioperm),             // (same)
    listed!(SYS_modify_ldt),         // segment descriptor games (kernel attack surface)
    listed!(SYS_uselib),             // legacy library loading
    listed!(SYS__sysctl),            // legacy sysctl
];

/// No arch-specific kill entries elsewhere.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const KILL_ARCH: &[Listed] = &[];

/// Calls answered with `ENOSYS` so that libc falls back cleanly. `clone3` returning `EPERM`
/// would make glibc report the failure instead of trying `clone`; with `ENOSYS` it falls back to
/// `clone`, which the default then refuses (`EPERM`), so `std::thread::spawn` fails with an
/// error instead of an abort and a hound that tries to start a thread gets a clean error.
#[rustfmt::skip]
pub(crate) const ENOSYS: &[Listed] = &[
    listed!(SYS_clone3),             // glibc >= 2.34 tries clone3 first for threads and posix_spawn
];

/// Calls refused with the default `EPERM`, listed so that a test keeps them out of the
/// allow-list: the hound never starts processes (`clone` is allowed for threads only, with
/// the exact flags of [`THREAD_CLONE_FLAGS`], and only with `Need::Threads`).
#[cfg(test)]
#[rustfmt::skip]
pub(crate) const NEVER_ALLOW: &[Listed] = &[
    listed!(SYS_socketpair),         // new local channels
    listed!(SYS_bind),               // servers
    listed!(SYS_listen),             // (same)
    listed!(SYS_accept),             // (same)
    listed!(SYS_accept4),            // (same)
    listed!(SYS_prctl),              // setup is over: nothing left to configure
    listed!(SYS_seccomp),            // further filters
    listed!(SYS_memfd_create),       // fresh anonymous files (W^X bypass via file mappings)
    listed!(SYS_landlock_create_ruleset), // nothing left to restrict
    listed!(SYS_setuid),             // credential changes
    listed!(SYS_setgid),             // (same)
    listed!(SYS_pidfd_open),         // handles on other processes
];

/// Every allow-list entry for this architecture, legacy ones included.
pub(crate) fn allowed() -> impl Iterator<Item = &'static Allowed> {
    ALLOW.iter().chain(ALLOW_ARCH.iter())
}

/// Every kill-list entry for this architecture.
pub(crate) fn killed() -> impl Iterator<Item = &'static Listed> {
    KILL.iter().chain(KILL_ARCH.iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn no_syscall_is_listed_twice_or_in_two_lists() {
        let mut seen = BTreeSet::new();
        for nr in allowed()
            .map(|a| a.nr)
            .chain(killed().map(|k| k.nr))
            .chain(ENOSYS.iter().map(|e| e.nr))
        {
            assert!(seen.insert(nr), "syscall {nr} appears twice");
        }
    }

    #[test]
    fn dangerous_and_threading_calls_are_never_allowed() {
        let allowed: BTreeSet<i64> = allowed().map(|a| a.nr).collect();
        for l in NEVER_ALLOW.iter().chain(killed()).chain(ENOSYS.iter()) {
            assert!(!allowed.contains(&l.nr), "{} must not be allowed", l.sym);
        }
    }

    #[test]
    fn clone_is_for_threads_only() {
        let clone: Vec<_> = allowed().filter(|a| a.nr == libc::SYS_clone).collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].need, Need::Threads);
        assert_eq!(clone[0].args, Args::ThreadClone);
        let flags = THREAD_CLONE_FLAGS;
        assert_ne!(flags & libc::CLONE_THREAD as u64, 0);
        assert_eq!(
            flags & 0xff,
            0,
            "no exit signal: a thread, not a child process"
        );
        for forbidden in [
            libc::CLONE_VFORK,
            libc::CLONE_PARENT,
            libc::CLONE_PTRACE,
            libc::CLONE_UNTRACED,
            libc::CLONE_PIDFD,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(flags & forbidden as u64, 0, "{forbidden:#x}");
        }
        #[cfg(target_arch = "x86_64")]
        {
            let allowed: BTreeSet<i64> = allowed().map(|a| a.nr).collect();
            assert!(!allowed.contains(&libc::SYS_fork) && !allowed.contains(&libc::SYS_vfork));
        }
    }

    #[test]
    fn network_setup_calls_need_the_tcp_client_mode() {
        for a in allowed() {
            if matches!(a.sym, "SYS_socket" | "SYS_connect" | "SYS_ioctl") {
                assert_eq!(a.need, Need::TcpClient, "{}", a.sym);
            }
        }
        let socket = allowed().find(|a| a.sym == "SYS_socket").map(|a| a.args);
        assert_eq!(socket, Some(Args::InetTcpSocket));
    }

    #[test]
    fn killed_advice_is_never_allowed() {
        for (advice, name) in MADV_KILLED {
            assert!(
                MADV_ALLOWED.iter().all(|(a, _)| a != advice),
                "{name} must not be allowed"
            );
        }
        for forbidden in [libc::MADV_REMOVE, libc::MADV_DONTFORK, libc::MADV_MERGEABLE] {
            assert!(MADV_ALLOWED.iter().all(|(a, _)| *a != forbidden));
        }
    }

    #[test]
    fn symbols_match_numbers() {
        assert_eq!(
            allowed().find(|a| a.sym == "SYS_read").map(|a| a.nr),
            Some(libc::SYS_read)
        );
        assert_eq!(
            killed().find(|a| a.sym == "SYS_execve").map(|a| a.nr),
            Some(libc::SYS_execve)
        );
    }
}
