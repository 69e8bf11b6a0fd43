//! The privilege model of `overlimit-count`: installed set-user-id and
//! set-group-id `overlimit`, it becomes that account wholly before it does
//! anything else, so the calling site can neither signal nor trace the
//! process that holds counter locks, nor starve it into a torn write.
//!
//! A site controls everything it hands to `execve`: descriptors, environment,
//! resource limits, signal dispositions, a controlling terminal. `enter`
//! takes each back: descriptors 0-2 open and no other, the caller's uid
//! gone from the real, effective and saved ids (the kernel then refuses the
//! caller's signals and ptrace), the terminal's signals ignored, inherited
//! timers and signal mask cleared, idle scheduling undone, a fixed
//! environment, soft limits raised to the hard ones and the hard ones
//! checked; the deliverer later runs in a session of its own, away from the
//! caller's terminal (`deliverer::Invocation::run`). When the
//! set-id bits are not in effect (never installed, a `nosuid` mount,
//! `no_new_privs`, a tracer) it refuses, naming the fix: counting as the
//! caller would let the caller stop the counter while it holds a lock.

use super::identity::{self, ACCOUNT};

/// The only environment the program and its children get.
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Who called, from the ids the process had at start.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Resource limits checked after raising the soft limits: each hard limit
/// must allow at least this much (a message of 32 MiB held twice, a few
/// counter files, a child to start).
const NEEDED: [(libc::__rlimit_resource_t, &str, u64); 6] = [
    (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE", 64 << 20),
    (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE", 64),
    (libc::RLIMIT_AS, "RLIMIT_AS", 512 << 20),
    (libc::RLIMIT_DATA, "RLIMIT_DATA", 512 << 20),
    (libc::RLIMIT_STACK, "RLIMIT_STACK", 1 << 20),
    (libc::RLIMIT_NPROC, "RLIMIT_NPROC", 2),
];

/// CPU seconds the program may still need: counting, and waiting on a child
/// costs none, so a few seconds are plenty.
const CPU_SECONDS: u64 = 10;

/// Becomes the `overlimit` account for good. `Err` is the log line: what is
/// wrong and how to fix it.
pub fn enter() -> Result<Caller, String> {
    open_standard_descriptors();
    // SAFETY: the get*id calls have no preconditions and cannot fail.
    let (uid, gid, euid, egid) = unsafe {
        (
            libc::getuid(),
            libc::getgid(),
            libc::geteuid(),
            libc::getegid(),
        )
    };
    let account = ACCOUNT.as_bytes();
    let want_uid = identity::uid_of(account).map_err(|e| e.to_string())?;
    let want_gid = identity::gid_of(account).map_err(|e| e.to_string())?;
    let (Some(want_uid), Some(want_gid)) = (want_uid, want_gid) else {
        return Err(format!(
            "no account or group {ACCOUNT} in {} and {}: run make install as root",
            identity::PASSWD,
            identity::GROUP
        ));
    };
    if (euid, egid) != (want_uid, want_gid) {
        return Err(format!(
            "not running as {ACCOUNT} (euid {euid}, egid {egid}; {ACCOUNT} is \
             {want_uid}:{want_gid}): the set-user-id and set-group-id bits are missing \
             or not in effect (mode 6755 owner {ACCOUNT}:{ACCOUNT}, no nosuid mount, \
             no no_new_privs, no tracer); run make install as root"
        ));
    }
    drop_caller_ids(want_uid, want_gid)?;
    // Root owns every cgroup and needs no trick to stop a process.
    if let Some(dir) = super::cgroup::owned_by(uid).filter(|_| uid != 0) {
        return Err(format!(
            "this process runs in a cgroup the caller controls ({}, owned by uid {uid}): \
             the caller could freeze it while it holds a lock; send mail from a service \
             whose cgroup is not delegated to the site",
            dir.display()
        ));
    }
    ignore_terminal_signals();
    clear_inherited_timers_and_mask();
    undo_idle_scheduling();
    // SAFETY: single-threaded here; nothing holds pointers into the
    // environment. The umask keeps counters writable by group overlimit,
    // which the SMTP plug-in writes them through.
    unsafe {
        libc::clearenv();
        libc::umask(0o007);
    }
    std::env::set_var("PATH", PATH);
    raise_limits()?;
    Ok(Caller { uid, gid })
}

/// Descriptors 0-2 open on /dev/null where closed: else a counter opened
/// later could become stderr, and a diagnostic would land in it. Every
/// other descriptor the caller left open is closed: the program and the
/// deliverer it runs as `overlimit` start with none of the site's files,
/// and the full descriptor table a site can hand over (its hard limit less
/// a few) does not make them fail half-way.
fn open_standard_descriptors() {
    // SAFETY: close_range on descriptor numbers; nothing in this process
    // holds a descriptor above 2 yet (the runtime opens none before main).
    unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    for fd in 0..3 {
        // SAFETY: fcntl and open on descriptor numbers and a literal path;
        // open returns the lowest free descriptor, which is `fd`.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

/// Real, effective and saved ids all `overlimit`: the kernel lets a process
/// signal or trace another only when its ids match one of these.
fn drop_caller_ids(uid: u32, gid: u32) -> Result<(), String> {
    // SAFETY: plain system calls on integers; results checked below. Group
    // first: once the uid is gone the process could no longer change it.
    let ok = unsafe {
        libc::setresgid(gid, gid, gid) == 0
            && libc::setresuid(uid, uid, uid) == 0
            && libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    };
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three integers we own.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if !ok || (r, e, s) != (uid, uid, uid) {
        let err = std::io::Error::last_os_error();
        return Err(format!("cannot become {ACCOUNT} wholly: {err}"));
    }
    Ok(())
}

/// Signals a terminal sends whoever owns it, whatever the uid: a site that
/// runs the program on a pty could stop it from the keyboard otherwise; and
/// SIGPIPE and SIGXFSZ, so that a failed write is an error, not a death.
fn ignore_terminal_signals() {
    for sig in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGHUP,
        libc::SIGPIPE,
        libc::SIGXFSZ,
    ] {
        // SAFETY: SIG_IGN is a valid disposition for each of these.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// Interval timers, pending signals and the signal mask survive `execve`: a
/// caller could arm `alarm(1)` to have the counter killed at a moment of its
/// choosing, or leave a blocked signal pending. The timers are cancelled,
/// every pending signal discarded (setting SIG_IGN does that), and the mask
/// emptied.
fn clear_inherited_timers_and_mask() {
    // Left alone: SIGKILL and SIGSTOP (no one can catch them), SIGSEGV and
    // SIGBUS (the runtime's stack-overflow handler; a sent one is harmless).
    // Put back to the default after the discard: what the program needs
    // (SIGCHLD for waiting on the deliverer) or what reports a fault.
    const KEEP: [libc::c_int; 4] = [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS];
    const DEFAULT: [libc::c_int; 7] = [
        libc::SIGCHLD,
        libc::SIGCONT,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGSYS,
    ];
    for sig in 1..=libc::SIGRTMAX() {
        if KEEP.contains(&sig) || (32..libc::SIGRTMIN()).contains(&sig) {
            continue;
        }
        // SAFETY: SIG_IGN and SIG_DFL are valid for every signal but those kept.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
            if DEFAULT.contains(&sig) {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    let zero = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: setitimer and sigprocmask with structs we own; an empty set
    // from sigemptyset.
    unsafe {
        for which in [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF] {
            libc::setitimer(which, &zero, std::ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// The scheduling class and I/O class survive `execve` too: under SCHED_IDLE
/// or the idle I/O class the counter would hold a lock for as long as the
/// machine is busy. Both go back to the defaults where the kernel lets an
/// unprivileged process (it does for these); a nice value cannot be undone
/// and costs little for the microseconds a lock is held.
fn undo_idle_scheduling() {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_BE: libc::c_int = 2;
    const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on this process; failures leave it as it was.
    unsafe {
        if libc::sched_getscheduler(0) != libc::SCHED_OTHER {
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
        }
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 4,
        );
    }
}

/// Soft limits up to the hard ones; a hard limit below what the program
/// needs refuses the mail rather than fail half-way through a write.
fn raise_limits() -> Result<(), String> {
    let cpu = (libc::RLIMIT_CPU, "RLIMIT_CPU", cpu_used() + CPU_SECONDS);
    for (resource, name, needed) in NEEDED.iter().copied().chain([cpu]) {
        let Some(hard) = raise_soft_limit(resource) else {
            continue;
        };
        if hard != libc::RLIM_INFINITY && hard < needed {
            return Err(format!(
                "{name} is {hard} (hard limit), below the {needed} this program needs: \
                 the caller lowered it"
            ));
        }
    }
    Ok(())
}

/// Every soft limit the program depends on raised to its hard limit: what an
/// unprivileged caller may do for itself, so a low soft limit set by a site
/// cannot kill the wrapper or the queue front half-way; and SIGXFSZ ignored,
/// so a hard file-size limit is a write error with a message, not a signal.
pub fn raise_soft_limits() {
    // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    for (resource, _, _) in NEEDED {
        raise_soft_limit(resource);
    }
    raise_soft_limit(libc::RLIMIT_CPU);
}

/// Raises one soft limit to the hard one; the hard limit, if readable.
fn raise_soft_limit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a struct we own.
    unsafe {
        if libc::getrlimit(resource, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur != lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(resource, &lim);
        }
    }
    Some(lim.rlim_max)
}

/// CPU seconds this process has used (an exec keeps the count).
fn cpu_used() -> u64 {
    // SAFETY: getrusage writes a struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    (u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1).max(0) as u64
}
