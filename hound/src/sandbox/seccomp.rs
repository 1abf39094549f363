//! The seccomp layer: three filters compiled by seccompiler from the data in `syscalls.rs`.
//!
//! The kernel runs every installed filter and keeps the most severe verdict
//! (KILL_PROCESS > … > ERRNO > … > ALLOW); between two ERRNO verdicts the most recently
//! installed filter wins. Hence:
//! 1. kill filter: the kill-list, and `madvise` with memory-failure advice (`MADV_KILLED`),
//!    → `KillProcess`, everything else → `Allow`;
//! 2. ENOSYS filter: `clone3` → `Errno(ENOSYS)`, everything else → `Allow`;
//! 3. allow-list filter (last, because after it `seccomp()` itself is refused): the allow-list
//!    (with argument conditions) → `Allow`, plus the ENOSYS calls as pass-through `Allow` so that
//!    filter 2's `ENOSYS` is the most severe verdict for them; everything else → `Errno(EPERM)`.
//!
//! A wrong-architecture call (e.g. `int 0x80` on x86-64) is killed by every filter's
//! architecture check.

use super::syscalls::{self, Args, Need};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Sizes of the installed policy, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PolicySize {
    /// Allow-list entries in force (legacy arch entries included, pass-throughs excluded).
    pub allowed: usize,
    /// Of those, entries with argument conditions.
    pub conditional: usize,
    /// Kill-list entries.
    pub killed: usize,
}

/// The three compiled programs, in installation order.
pub(crate) struct Programs {
    /// Filter 1.
    pub kill: BpfProgram,
    /// Filter 2.
    pub enosys: BpfProgram,
    /// Filter 3.
    pub allow: BpfProgram,
    /// Counts for the report.
    pub size: PolicySize,
}

/// `FIONBIO` as the 64-bit value seccompiler compares (its C type differs between targets).
#[allow(clippy::unnecessary_cast)]
const FIONBIO: u64 = libc::FIONBIO as u64;

fn cond(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| format!("seccomp condition: {e}"))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| format!("seccomp rule: {e}"))
}

/// The rules (OR-ed) that make an allowed call match; empty means "any arguments".
fn rules_for(args: Args, own_pid: u32) -> Result<Vec<SeccompRule>, String> {
    // Every compared argument is an `int` / `unsigned int` in the kernel, which ignores the
    // upper half of the register: comparing the low 32 bits (Dword) is exactly what it sees.
    Ok(match args {
        Args::Any => Vec::new(),
        Args::NoExecProt => vec![rule(vec![cond(
            2,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])?],
        Args::OwnPid => vec![rule(vec![cond(0, SeccompCmpOp::Eq, u64::from(own_pid))?])?],
        Args::Fionbio => vec![rule(vec![cond(1, SeccompCmpOp::Eq, FIONBIO)?])?],
        Args::FcntlBasic => [
            libc::F_GETFD,
            libc::F_SETFD,
            libc::F_GETFL,
            libc::F_DUPFD_CLOEXEC,
        ]
        .into_iter()
        .map(|cmd| rule(vec![cond(1, SeccompCmpOp::Eq, cmd as u64)?]))
        .collect::<Result<_, _>>()?,
        Args::MadviseUsed => advice_rules(syscalls::MADV_ALLOWED)?,
        Args::ThreadClone => vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            syscalls::THREAD_CLONE_FLAGS,
        )?])?],
        Args::InetTcpSocket => {
            let mut rules = Vec::new();
            for domain in [libc::AF_INET, libc::AF_INET6] {
                for protocol in [0, libc::IPPROTO_TCP] {
                    rules.push(rule(vec![
                        cond(0, SeccompCmpOp::Eq, domain as u64)?,
                        // The type argument carries SOCK_NONBLOCK / SOCK_CLOEXEC in its high
                        // bits; the socket type proper is the low nibble.
                        cond(1, SeccompCmpOp::MaskedEq(0xf), libc::SOCK_STREAM as u64)?,
                        cond(2, SeccompCmpOp::Eq, protocol as u64)?,
                    ])?);
                }
            }
            rules
        }
    })
}

/// One rule per advice value: `madvise(addr, len, advice)` with argument 2 equal to it.
fn advice_rules(advice: &[(i32, &str)]) -> Result<Vec<SeccompRule>, String> {
    advice
        .iter()
        .map(|(a, _)| rule(vec![cond(2, SeccompCmpOp::Eq, *a as u64)?]))
        .collect()
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(rules, mismatch, matched, arch)
        .map_err(|e| format!("seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp compile: {e}"))
}

/// Compiles the three filters for this architecture without installing them.
pub(crate) fn build(tcp_client: bool, threads: bool, own_pid: u32) -> Result<Programs, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("architecture {} unsupported: {e}", std::env::consts::ARCH))?;

    let mut kill_rules: BTreeMap<i64, Vec<SeccompRule>> =
        syscalls::killed().map(|k| (k.nr, Vec::new())).collect();
    // madvise itself is allowed (with the advice values in MADV_ALLOWED); only the
    // memory-failure advice kills.
    kill_rules.insert(libc::SYS_madvise, advice_rules(syscalls::MADV_KILLED)?);
    let killed = kill_rules.len();
    let kill = compile(
        kill_rules,
        SeccompAction::Allow,
        SeccompAction::KillProcess,
        arch,
    )?;

    let enosys_rules: BTreeMap<i64, Vec<SeccompRule>> = syscalls::ENOSYS
        .iter()
        .map(|e| (e.nr, Vec::new()))
        .collect();
    let enosys = compile(
        enosys_rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;

    let mut allow_rules = BTreeMap::new();
    let mut conditional = 0;
    for entry in syscalls::allowed() {
        if (entry.need == Need::TcpClient && !tcp_client)
            || (entry.need == Need::Threads && !threads)
        {
            continue;
        }
        let rules = rules_for(entry.args, own_pid)?;
        if !rules.is_empty() {
            conditional += 1;
        }
        allow_rules.insert(entry.nr, rules);
    }
    let allowed = allow_rules.len();
    for pass_through in syscalls::ENOSYS {
        allow_rules.insert(pass_through.nr, Vec::new());
    }
    let allow = compile(
        allow_rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )?;

    Ok(Programs {
        kill,
        enosys,
        allow,
        size: PolicySize {
            allowed,
            conditional,
            killed,
        },
    })
}

/// Installs the three filters on the calling thread (the hound is single-threaded while it
/// confines itself; threads it starts later inherit the filters), allow-list last. Returns the report detail, or why the layer is not in force.
pub(crate) fn apply(tcp_client: bool, threads: bool) -> Result<String, String> {
    let programs = build(tcp_client, threads, std::process::id())?;
    for (name, program) in [
        ("kill-list", &programs.kill),
        ("clone3 ENOSYS", &programs.enosys),
        ("allow-list", &programs.allow),
    ] {
        seccompiler::apply_filter(program).map_err(|e| {
            format!("installing the {name} filter failed: {e} (earlier filters stay in force)")
        })?;
    }
    let s = programs.size;
    Ok(format!(
        "allow-list of {} syscalls ({} with argument checks{}), {} attacker-only syscalls (and \
         madvise with MADV_HWPOISON / MADV_SOFT_OFFLINE) kill the process (SIGSYS), clone3 -> \
         ENOSYS, everything else -> EPERM",
        s.allowed,
        s.conditional,
        match (tcp_client, threads) {
            (true, true) => "; TCP client calls and thread-only clone included",
            (true, false) => "; TCP client calls included",
            (false, true) => "; thread-only clone included",
            (false, false) => "",
        },
        s.killed.saturating_sub(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_architecture() {
        let plain = build(false, false, 1234).expect("filters compile");
        let tcp = build(true, false, 1234).expect("filters compile");
        let threads = build(true, true, 1234).expect("filters compile");
        assert_eq!(
            threads.size.allowed - tcp.size.allowed,
            syscalls::allowed()
                .filter(|a| a.need == Need::Threads)
                .count()
        );
        assert!(plain.size.allowed < tcp.size.allowed);
        assert_eq!(
            tcp.size.allowed - plain.size.allowed,
            syscalls::allowed()
                .filter(|a| a.need == Need::TcpClient)
                .count()
        );
        // The kill-list plus madvise with memory-failure advice.
        assert_eq!(plain.size.killed, syscalls::killed().count() + 1);
        assert!(!plain.kill.is_empty() && !plain.enosys.is_empty() && !plain.allow.is_empty());
        // Conditional entries compile to more instructions than unconditional ones.
        assert!(tcp.allow.len() > plain.allow.len());
    }

    #[test]
    fn every_argument_rule_compiles() {
        for args in [
            Args::Any,
            Args::NoExecProt,
            Args::OwnPid,
            Args::InetTcpSocket,
            Args::Fionbio,
            Args::FcntlBasic,
            Args::MadviseUsed,
            Args::ThreadClone,
        ] {
            let rules = rules_for(args, 42).expect("rules build");
            assert_eq!(rules.is_empty(), args == Args::Any);
        }
        assert_eq!(rules_for(Args::InetTcpSocket, 1).map(|r| r.len()), Ok(4));
        assert_eq!(rules_for(Args::FcntlBasic, 1).map(|r| r.len()), Ok(4));
        assert_eq!(
            rules_for(Args::MadviseUsed, 1).map(|r| r.len()),
            Ok(syscalls::MADV_ALLOWED.len())
        );
    }
}
