//! What a program must put right before it does anything else, because its
//! caller chose it: descriptors 0-2 that may be closed, signals that would
//! kill it at a resource limit, and a memory cap under which an allocation
//! fails. The plug-in's contract is an exit code, never a signal: qmail-smtpd
//! answers a crash with 421 and drops the session.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

/// Opens /dev/null on each of descriptors 0-2 that is closed. Otherwise the
/// first file opened later (a counter) would take the lowest free number,
/// and a log line meant for stderr, or a child's output, would go into it.
/// One `poll`, which marks a closed descriptor POLLNVAL, asks about all three.
pub fn fill_closed_descriptors() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll on an array we own, of its length, without waiting.
    if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) } < 0 {
        return;
    }
    for p in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
        // SAFETY: open on a literal path; it returns the lowest free
        // descriptor, which is this one, as every lower one is open or was
        // opened by an earlier turn of this loop.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        debug_assert!(fd < 0 || fd == p.fd);
    }
}

/// Ignores the signals a resource limit raises, so that the limit becomes an
/// error return instead of a death: SIGXFSZ (a write past `ulimit -f`, such
/// as a log line to a file at its limit, then fails with EFBIG), SIGXCPU
/// (the kernel still kills at the hard limit, which a second's work never
/// reaches), and SIGPIPE (a closed log pipe gives EPIPE).
pub fn ignore_limit_signals() {
    for sig in [libc::SIGPIPE, libc::SIGXFSZ, libc::SIGXCPU] {
        // SAFETY: setting a disposition to SIG_IGN, before any thread starts.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

/// Gives the signals `ignore_limit_signals` ignored their default action
/// back, for a child about to exec another program (ignored dispositions
/// survive exec; a notifier should meet its limits as it would anywhere).
/// Async-signal-safe: for `CommandExt::pre_exec`.
pub fn restore_limit_signals() {
    for sig in [libc::SIGPIPE, libc::SIGXFSZ, libc::SIGXCPU] {
        // SAFETY: setting a disposition to SIG_DFL is async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// The system allocator, except that an allocation that fails ends the
/// process with the exit code and log line set by `on_out_of_memory`
/// instead of Rust's abort (SIGABRT). Under `softlimit -m` any allocation
/// may fail; the answer must still be one of the program's exit codes.
pub struct ExitOnOom;

static OOM_CODE: AtomicI32 = AtomicI32::new(111);
static OOM_LINE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static OOM_LINE_LEN: AtomicUsize = AtomicUsize::new(0);

/// What `ExitOnOom` does when memory runs out: write `line` on stderr and
/// exit with `code`. Allocates nothing, so it may run before anything else.
pub fn on_out_of_memory(code: i32, line: &'static str) {
    OOM_CODE.store(code, Ordering::Relaxed);
    OOM_LINE_LEN.store(line.len(), Ordering::Relaxed);
    OOM_LINE.store(line.as_ptr().cast_mut(), Ordering::Release);
}

fn out_of_memory() -> ! {
    let line = OOM_LINE.load(Ordering::Acquire);
    // SAFETY: `line` is null or points at a &'static str of the stored
    // length; write and _exit are async-signal-safe and allocate nothing.
    unsafe {
        if !line.is_null() {
            libc::write(2, line.cast(), OOM_LINE_LEN.load(Ordering::Relaxed));
        }
        libc::_exit(OOM_CODE.load(Ordering::Relaxed))
    }
}

// SAFETY: every call is passed on to `System` unchanged; a null result,
// which `System` returns for a failed allocation, ends the process instead
// of reaching the caller.
unsafe impl GlobalAlloc for ExitOnOom {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are System's.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            out_of_memory();
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            out_of_memory();
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator, which is System's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            out_of_memory();
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}
