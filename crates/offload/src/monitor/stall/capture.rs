//! Where a stalled thread is: a real-time signal sent with `tgkill` to that
//! thread, whose handler records raw instruction pointers into a
//! preallocated, process-global buffer. The watchdog resolves the symbols.
//!
//! With `priority/sys.rs` (one `sched_setscheduler` call), this is the
//! only file of the crate with `unsafe` code: thread ids, `tgkill`,
//! `sigaction`, `sigaltstack`, the alternate stacks' memory and the signal
//! handler itself.
#![allow(unsafe_code)]

/// Why a backtrace could not be captured (shown in reports).
pub(crate) type Unavailable = String;

/// The id the kernel gives the calling thread (`gettid`), or `None` where
/// there is no such notion.
pub(crate) fn current_tid() -> Option<i32> {
    imp::current_tid()
}

/// How long to wait for a thread to run the capture handler.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Patience {
    /// Always waited.
    pub(crate) timeout: std::time::Duration,
    /// Waited on top, for as long as `waiting_for_cpu` says the thread is
    /// runnable but not running: it has the signal, it just has no CPU to
    /// run the handler on (a loaded machine). A thread in uninterruptible
    /// sleep, or one that blocks the signal, is given up on after
    /// `timeout`.
    pub(crate) more_if_runnable: std::time::Duration,
}

/// Captures the stack of thread `tid` of this process, waiting for the
/// thread to run the signal handler as `patience` says (`waiting_for_cpu`
/// tells whether the thread is runnable but not running). Returns the raw
/// instruction pointers, innermost first, the handler's own frames removed
/// later by [`resolve`].
pub(crate) fn capture(
    tid: i32,
    patience: Patience,
    waiting_for_cpu: &dyn Fn() -> bool,
) -> Result<Vec<usize>, Unavailable> {
    imp::capture(tid, patience, waiting_for_cpu)
}

/// Gives the calling thread an alternate signal stack large enough for the
/// capture handler, unless it has one already; the handler runs on it
/// (`SA_ONSTACK`), so a thread stalled deep in recursion, near the end of
/// its own stack, is not pushed over the edge by the capture. Keep the
/// returned value on the thread (it is not `Send`) for as long as the
/// thread is watched: dropping it puts the previous stack back.
pub(crate) fn alt_stack_for_this_thread() -> Option<AltStack> {
    imp::AltStack::install().map(AltStack)
}

/// An alternate signal stack given to one thread; see
/// [`alt_stack_for_this_thread`].
pub(crate) struct AltStack(#[allow(dead_code)] imp::AltStack);

impl std::fmt::Debug for AltStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AltStack")
    }
}

/// The calling thread's own stack (outside any signal handler), to warm
/// the symbolizer up with.
pub(crate) fn own_stack() -> Vec<usize> {
    imp::own_stack()
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{Patience, Unavailable};
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    /// Deepest stack we record; deeper frames are cut (the top is what
    /// matters: where the thread is now).
    const MAX_FRAMES: usize = 128;

    /// Offset from `SIGRTMIN` of the signal we use. glibc keeps the first
    /// two real-time signals for itself (they are already excluded from
    /// `SIGRTMIN()`); profilers commonly use `SIGPROF`, and a few libraries
    /// use `SIGRTMIN` itself, so we stay clear of both.
    const SIGNAL_OFFSET: i32 = 6;

    // Phases of a capture, in the low two bits of `Buffer::state`; the
    // generation of the request fills the other bits so a late handler can
    // never write into a newer request's buffer.
    const IDLE: u64 = 0;
    const REQUESTED: u64 = 1;
    const WRITING: u64 = 2;
    const DONE: u64 = 3;

    /// The process-global capture buffer. One capture runs at a time
    /// (`LOCK`), so one buffer is enough, and it is preallocated so the
    /// handler never allocates.
    struct Buffer {
        /// `generation << 2 | phase`.
        state: AtomicU64,
        /// The thread that must answer the current request.
        target: AtomicI32,
        /// Number of valid entries of `ips`.
        len: AtomicUsize,
        /// Raw instruction pointers, innermost first.
        ips: [AtomicUsize; MAX_FRAMES],
    }

    static BUFFER: Buffer = Buffer {
        state: AtomicU64::new(IDLE),
        target: AtomicI32::new(0),
        len: AtomicUsize::new(0),
        ips: [const { AtomicUsize::new(0) }; MAX_FRAMES],
    };

    /// Serialises captures across every detector of the process; holds the
    /// last generation used. Poisoned-for-good is modelled by `BROKEN`.
    static LOCK: Mutex<u64> = Mutex::new(0);

    /// Set when a handler was seen stuck mid-capture: the buffer may still
    /// be written to, so we stop capturing rather than race it.
    static BROKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// The signal in use, or why none could be installed.
    static INSTALLED: OnceLock<Result<i32, String>> = OnceLock::new();

    pub(super) fn current_tid() -> Option<i32> {
        // SAFETY: `gettid` takes no arguments, cannot fail and touches no
        // memory of ours.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        i32::try_from(tid).ok()
    }

    /// The handler. Async-signal-safety: it touches only atomics and the
    /// static buffer, saves and restores `errno`, and never allocates. The
    /// unwinder (`_Unwind_Backtrace`) is not formally async-signal-safe; see
    /// the design note for that limit.
    extern "C" fn offload_stall_signal_handler(
        _signal: libc::c_int,
        _info: *mut libc::siginfo_t,
        _context: *mut c_void,
    ) {
        // SAFETY: `__errno_location` returns this thread's errno slot, valid
        // for the thread's whole life.
        let errno = unsafe { *libc::__errno_location() };
        let state = BUFFER.state.load(Ordering::Acquire);
        let me = current_tid().unwrap_or(-1);
        if state & 3 == REQUESTED
            && BUFFER.target.load(Ordering::Relaxed) == me
            && BUFFER
                .state
                .compare_exchange(
                    state,
                    (state & !3) | WRITING,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let mut n = 0;
            // SAFETY: `trace_unsynchronized` is `trace` without the crate's
            // global lock, and that lock only guards unwinders that are not
            // thread-safe (Windows' dbghelp). Its real precondition here is
            // that the unwinder may run on this thread at this instant: on
            // Linux, libgcc's `_Unwind_Backtrace` is thread-safe and
            // allocation-free, but it finds unwind tables through
            // `dl_iterate_phdr`, which takes the dynamic loader's lock. That
            // lock is recursive, so interrupting a thread that is itself
            // unwinding (a panic, another backtrace) is fine; interrupting a
            // thread inside `dlopen`/`dlclose` of another thread's making
            // waits for it, and the watchdog then gives up on capturing (see
            // `BROKEN`). That is the documented limit in the design note;
            // nothing else in the process can be waiting on this handler.
            // The closure cannot panic (`n < MAX_FRAMES` is checked before
            // every store) and only stores into preallocated atomics; the
            // WRITING phase makes this handler the buffer's only writer.
            unsafe {
                backtrace::trace_unsynchronized(|frame| {
                    BUFFER.ips[n].store(frame.ip() as usize, Ordering::Relaxed);
                    n += 1;
                    n < MAX_FRAMES
                });
            }
            BUFFER.len.store(n, Ordering::Relaxed);
            BUFFER.state.store((state & !3) | DONE, Ordering::Release);
        }
        // SAFETY: as above; restoring errno keeps the interrupted code's view.
        unsafe { *libc::__errno_location() = errno };
    }

    /// Installs the handler once per process. Refuses to replace a handler
    /// someone else installed on the same signal.
    fn install() -> Result<i32, Unavailable> {
        INSTALLED
            .get_or_init(|| {
                let signal = libc::SIGRTMIN() + SIGNAL_OFFSET;
                if signal > libc::SIGRTMAX() {
                    return Err("no free real-time signal".to_owned());
                }
                // SAFETY: an all-zero `sigaction` is a valid "no handler"
                // value that the kernel fills in.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                // SAFETY: a null new action only queries; `old` is writable.
                if unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) } != 0 {
                    return Err(format!("sigaction({signal}) failed"));
                }
                if old.sa_sigaction != libc::SIG_DFL {
                    return Err(format!(
                        "signal {signal} (SIGRTMIN+{SIGNAL_OFFSET}) already has a handler"
                    ));
                }
                // SAFETY: zeroed is valid (see above); we fill every field we use.
                let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
                action.sa_sigaction = offload_stall_signal_handler as *const () as usize;
                // SA_RESTART: most interrupted syscalls resume by themselves.
                // SA_ONSTACK: run on the thread's alternate stack, which
                // `AltStack::install` makes large enough to unwind on
                // (std's own, 8 KiB, is not: the unwind needs about 8 KB).
                action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
                // SAFETY: `sa_mask` is a valid sigset inside `action`.
                unsafe { libc::sigemptyset(&mut action.sa_mask) };
                // SAFETY: `action` is fully initialised; the handler is an
                // `extern "C"` fn with the SA_SIGINFO signature.
                if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
                    return Err(format!("sigaction({signal}) failed"));
                }
                Ok(signal)
            })
            .clone()
    }

    pub(super) fn capture(
        tid: i32,
        patience: Patience,
        waiting_for_cpu: &dyn Fn() -> bool,
    ) -> Result<Vec<usize>, Unavailable> {
        let signal = install()?;
        // Lock first, then look at BROKEN: a capture that finds a handler
        // stuck sets BROKEN before it lets go of the lock, so the next one
        // in line sees it and never starts a request that the stuck handler
        // could still be writing over.
        let mut generation = crate::sync::lock(&LOCK);
        if BROKEN.load(Ordering::Relaxed) {
            return Err("capture disabled: an earlier handler never finished".to_owned());
        }
        // Someone may have reset the signal to its default action (which
        // terminates the process) or taken it over since we installed our
        // handler: look again right before sending it. (A change between
        // this look and `tgkill` cannot be excluded by any process-wide
        // means; it is no longer a silent, certain kill on the next stall.)
        still_ours(signal)?;
        *generation += 1;
        let base = *generation << 2;
        BUFFER.target.store(tid, Ordering::Relaxed);
        BUFFER.len.store(0, Ordering::Relaxed);
        BUFFER.state.store(base | REQUESTED, Ordering::Release);

        // SAFETY: plain syscall on integers; a stale tid yields ESRCH, never UB.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::c_long::from(libc::getpid()),
                libc::c_long::from(tid),
                libc::c_long::from(signal),
            )
        };
        if sent != 0 {
            BUFFER.state.store(IDLE, Ordering::Release);
            return Err(format!("tgkill to thread {tid} failed (thread gone?)"));
        }

        let sent_at = Instant::now();
        let mut deadline = sent_at + patience.timeout;
        let last_chance = deadline + patience.more_if_runnable;
        let mut next_look = deadline;
        loop {
            let state = BUFFER.state.load(Ordering::Acquire);
            if state == base | DONE {
                let n = BUFFER.len.load(Ordering::Relaxed);
                let ips = BUFFER.ips[..n]
                    .iter()
                    .map(|ip| ip.load(Ordering::Relaxed))
                    .collect();
                BUFFER.state.store(IDLE, Ordering::Release);
                return Ok(ips);
            }
            let now = Instant::now();
            if state == base | REQUESTED && now >= next_look && now < last_chance {
                // Still not run: if the thread is runnable, it has the
                // signal and waits for a CPU; give it more time.
                next_look = now + Duration::from_millis(5);
                if waiting_for_cpu() {
                    deadline = deadline.max(next_look.min(last_chance));
                }
            }
            if now >= deadline {
                if BUFFER
                    .state
                    .compare_exchange(base | REQUESTED, IDLE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    // The signal stays pending; when it is delivered the
                    // handler sees no request for it and returns at once.
                    return Err(format!(
                        "thread {tid} did not run the handler within {:?} (uninterruptible \
                         sleep, signals blocked, or no CPU for it)",
                        now - sent_at
                    ));
                }
                // WRITING: the handler is unwinding right now; give it a
                // little longer, then give up on capturing for good.
                if now >= deadline + Duration::from_millis(200) {
                    BROKEN.store(true, Ordering::Relaxed);
                    return Err("the signal handler did not finish unwinding".to_owned());
                }
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Whether `signal` still runs our handler.
    fn still_ours(signal: i32) -> Result<(), Unavailable> {
        // SAFETY: an all-zero `sigaction` is a valid value for the kernel
        // to fill in.
        let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null new action only queries; `now` is writable.
        if unsafe { libc::sigaction(signal, std::ptr::null(), &mut now) } != 0 {
            return Err(format!("sigaction({signal}) failed"));
        }
        if now.sa_sigaction == offload_stall_signal_handler as *const () as usize {
            Ok(())
        } else {
            Err(format!(
                "signal {signal} no longer runs the capture handler (someone replaced or \
                 reset it): not sending it"
            ))
        }
    }

    /// Size of the alternate stacks we give watched threads: the unwind in
    /// the handler used 7.9 KB, the kernel's signal frame included, when
    /// measured (x86_64, 128 frames); eight times that leaves room for
    /// larger signal frames (AVX-512) and deeper unwinder paths.
    const ALT_STACK_SIZE: usize = 64 * 1024;

    /// An alternate signal stack mapped for one thread, with a guard page
    /// below it, and the stack it replaced.
    pub(crate) struct AltStack {
        /// Start of the mapping (the guard page).
        map: *mut c_void,
        map_len: usize,
        /// The stack's base as given to the kernel (`map` + one page).
        sp: *mut c_void,
        /// The stack in place before ours (disabled if there was none).
        previous: libc::stack_t,
    }

    impl AltStack {
        /// Installs an alternate stack for the calling thread, unless it
        /// has one of at least `ALT_STACK_SIZE` already.
        pub(crate) fn install() -> Option<AltStack> {
            // SAFETY: an all-zero `stack_t` is valid for the kernel to fill.
            let mut previous: libc::stack_t = unsafe { std::mem::zeroed() };
            // SAFETY: a null new stack only queries; `previous` is writable.
            if unsafe { libc::sigaltstack(std::ptr::null(), &mut previous) } != 0 {
                return None;
            }
            let enabled = previous.ss_flags & libc::SS_DISABLE == 0;
            if enabled && previous.ss_size >= ALT_STACK_SIZE {
                return None;
            }
            if previous.ss_flags & libc::SS_ONSTACK != 0 {
                // Running on the alternate stack right now (inside a signal
                // handler): not the moment to swap it.
                return None;
            }
            // SAFETY: `sysconf` has no memory effects.
            let page =
                usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
            let map_len = ALT_STACK_SIZE + page;
            // SAFETY: an anonymous private mapping at an address of the
            // kernel's choosing; the result is checked below.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if map == libc::MAP_FAILED {
                return None;
            }
            // SAFETY: `map` is the page-aligned start of our own mapping of
            // `map_len > page` bytes: the lowest page becomes the guard, so
            // an overflow of the handler faults instead of writing below.
            let guarded = unsafe { libc::mprotect(map, page, libc::PROT_NONE) } == 0;
            // SAFETY: `page < map_len`, so the pointer stays inside the
            // mapping.
            let sp: *mut c_void = unsafe { map.cast::<u8>().add(page) }.cast();
            let stack = libc::stack_t {
                ss_sp: sp,
                ss_flags: 0,
                ss_size: ALT_STACK_SIZE,
            };
            // SAFETY: `stack` describes readable, writable memory of ours
            // that stays mapped until `Drop` has taken it out of use.
            if !guarded || unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) } != 0 {
                // SAFETY: our own mapping, not in use.
                unsafe { libc::munmap(map, map_len) };
                return None;
            }
            Some(AltStack {
                map,
                map_len,
                sp,
                previous,
            })
        }
    }

    impl Drop for AltStack {
        /// Runs on the thread that installed the stack (the value is not
        /// `Send`). If our stack is still the current one, the previous one
        /// is put back: it is still mapped, because whoever owns it (std,
        /// for its stack-overflow handler) disables the current stack
        /// before freeing theirs, and has not, since ours is current. If
        /// ours is no longer current, someone else changed or disabled it
        /// and we leave theirs alone. Either way ours is out of use before
        /// it is unmapped.
        fn drop(&mut self) {
            // SAFETY: as in `install`.
            let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
            // SAFETY: a null new stack only queries; `current` is writable.
            let queried = unsafe { libc::sigaltstack(std::ptr::null(), &mut current) } == 0;
            if !queried || current.ss_flags & libc::SS_ONSTACK != 0 {
                // Cannot tell, or a handler is running on it right now:
                // leaking 68 KiB beats unmapping a stack in use.
                return;
            }
            if current.ss_flags & libc::SS_DISABLE == 0 && current.ss_sp == self.sp {
                // SAFETY: `previous` is what the kernel gave us (disabled or
                // a stack that its owner still keeps mapped, see above).
                unsafe { libc::sigaltstack(&self.previous, std::ptr::null_mut()) };
            }
            // SAFETY: our own mapping, no longer any thread's signal stack.
            unsafe { libc::munmap(self.map, self.map_len) };
        }
    }

    pub(super) fn own_stack() -> Vec<usize> {
        // Walking a stack once also initialises the unwinder's caches
        // outside of any signal handler. Not `backtrace::trace`: it takes
        // the crate's global lock, which symbol resolution holds for long
        // stretches, and this runs on a runtime worker.
        let mut ips = Vec::new();
        // SAFETY: on Linux the unwinder (libgcc's `_Unwind_Backtrace`) is
        // thread-safe; the crate's lock exists for platforms whose
        // unwinders are not (Windows' dbghelp). The closure only pushes to
        // a local vector.
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                ips.push(frame.ip() as usize);
                ips.len() < MAX_FRAMES
            });
        }
        ips
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::{Patience, Unavailable};

    pub(super) fn current_tid() -> Option<i32> {
        None
    }

    pub(super) fn capture(
        _tid: i32,
        _patience: Patience,
        _waiting_for_cpu: &dyn Fn() -> bool,
    ) -> Result<Vec<usize>, Unavailable> {
        Err("stack capture is implemented on Linux only".to_owned())
    }

    pub(crate) struct AltStack;

    impl AltStack {
        pub(crate) fn install() -> Option<AltStack> {
            None
        }
    }

    pub(super) fn own_stack() -> Vec<usize> {
        Vec::new()
    }
}
