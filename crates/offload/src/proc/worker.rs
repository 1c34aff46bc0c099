//! The worker side: what a worker process runs after
//! [`run_worker_if_child`] recognises it as one.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use super::protocol::{FromWorker, Hello, ToWorker, build_id, encode_hello};
use super::task::Registry;
use super::wire::{DEFAULT_MAX_FRAME, FrameError, read_frame, write_frame};

/// Set in a worker's environment: its name (`offload-proc-3`).
pub(crate) const WORKER_ENV: &str = "OFFLOAD_PROC_WORKER";
/// Set in a worker's environment: the frame limit, in bytes.
pub(crate) const MAX_FRAME_ENV: &str = "OFFLOAD_PROC_MAX_FRAME";

/// How often a busy worker checks that its parent is alive.
const PARENT_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Exit codes of a worker that gives up, so the parent can tell why.
pub(crate) mod exit_code {
    /// The control channel (fd 0) is not usable.
    pub(crate) const NO_CHANNEL: i32 = 70;
    /// The registry's `init` hook panicked.
    pub(crate) const INIT_PANICKED: i32 = 71;
    /// The parent sent something that is not a call.
    pub(crate) const PROTOCOL: i32 = 72;
}

/// Turns this process into a worker if it was started as one, and never
/// returns in that case; otherwise returns at once.
///
/// Call it first thing in `main`, before anything else runs (threads,
/// runtimes, logging to stdout), with the same registry the parent uses:
///
/// ```no_run
/// # struct Sum;
/// # impl offload::proc::Task for Sum {
/// #     const NAME: &'static str = "sum";
/// #     type Input = Vec<u64>;
/// #     type Output = u64;
/// #     fn run(v: Vec<u64>) -> u64 { v.iter().sum() }
/// # }
/// fn registry() -> offload::proc::Registry {
///     offload::proc::Registry::new().with::<Sum>()
/// }
///
/// fn main() {
///     offload::proc::run_worker_if_child(&registry());
///     // ... the parent's own code: build a ProcessPool, call tasks.
/// }
/// ```
///
/// A worker serves calls one at a time on a thread named after it, and
/// exits when its control channel closes or, in the middle of a call,
/// within 50 ms of its parent's death: when the parent dies, however it
/// dies, its workers follow.
pub fn run_worker_if_child(registry: &Registry) {
    let Some(name) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    let max_frame = std::env::var(MAX_FRAME_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_FRAME);
    std::process::exit(serve(registry, &name, max_frame));
}

thread_local! {
    /// Where the last panic on this thread happened, recorded by the hook
    /// installed in [`serve`] and read by [`take_panic`].
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The message and location of a caught panic.
pub(crate) fn take_panic(payload: Box<dyn std::any::Any + Send>) -> (String, Option<String>) {
    let message = crate::error::Error::panic(payload)
        .panic_message()
        .unwrap_or_default()
        .to_owned();
    (message, PANIC_LOCATION.with(|l| l.borrow_mut().take()))
}

fn serve(registry: &Registry, name: &str, max_frame: usize) -> i32 {
    // The parent hands the worker one end of a socket pair as its stdin.
    let stream = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("{name}: no control channel on fd 0: {e}");
            return exit_code::NO_CHANNEL;
        }
    };
    let (mut reader, mut writer) = match stream.try_clone() {
        // Buffered reads: a frame's header and body in one `read`.
        Ok(w) => (std::io::BufReader::new(stream), w),
        Err(e) => {
            eprintln!("{name}: cannot clone the control channel: {e}");
            return exit_code::NO_CHANNEL;
        }
    };

    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| l.to_string());
        PANIC_LOCATION.with(|l| *l.borrow_mut() = location);
        default_hook(info);
    }));

    if catch_unwind(AssertUnwindSafe(|| registry.run_init())).is_err() {
        eprintln!("{name}: the registry's init hook panicked; exiting");
        return exit_code::INIT_PANICKED;
    }

    let hello = Hello {
        build: build_id(),
        tasks: registry.names().map(str::to_owned).collect(),
        pid: std::process::id(),
    };
    if write_frame(&mut writer, &encode_hello(&hello), max_frame).is_err() {
        // The parent is gone already.
        return 0;
    }

    // Parent death: EOF on the control channel ends the loop below when
    // the worker is idle; while a call runs, nobody reads the channel, so
    // a watchdog notices the worker being re-parented (its parent died,
    // however it died) and exits at once.
    let parent = std::os::unix::process::parent_id();
    let watchdog = std::thread::Builder::new()
        .name(format!("{name}-watch"))
        .spawn(move || {
            loop {
                std::thread::sleep(PARENT_CHECK_INTERVAL);
                if std::os::unix::process::parent_id() != parent {
                    std::process::exit(0);
                }
            }
        });
    if let Err(e) = watchdog {
        eprintln!("{name}: cannot start the parent watchdog: {e}");
        return exit_code::NO_CHANNEL;
    }

    // Calls run on a thread named after the worker, so that stack traces
    // and `top -H` show `offload-proc-N`. It reads its own calls: no hand-off
    // between threads on the hot path.
    let registry = registry.clone();
    let exec_name = name.to_owned();
    let executor = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            loop {
                let frame = match read_frame(&mut reader, max_frame) {
                    Ok(frame) => frame,
                    // The parent closed the channel: it is done with us, or gone.
                    Err(FrameError::Closed) => std::process::exit(0),
                    Err(e) => {
                        eprintln!("{exec_name}: control channel failed: {e}; exiting");
                        std::process::exit(exit_code::PROTOCOL);
                    }
                };
                let call = match postcard::from_bytes::<ToWorker>(&frame) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{exec_name}: undecodable call ({e}); exiting");
                        std::process::exit(exit_code::PROTOCOL);
                    }
                };
                let ToWorker::Call { id, task, input } = call;
                let mut result = registry.dispatch(&task, &input);
                if let Ok(out) = &result {
                    if out.len() + 64 > max_frame {
                        result = Err(super::protocol::Failure::BadOutput(format!(
                            "output of {} bytes exceeds the {max_frame}-byte frame limit",
                            out.len()
                        )));
                    }
                }
                let reply =
                    postcard::to_stdvec(&FromWorker::Done { id, result }).unwrap_or_default();
                if write_frame(&mut writer, &reply, max_frame).is_err() {
                    std::process::exit(0);
                }
            }
        });
    match executor {
        Ok(handle) => {
            let _ = handle.join();
            0
        }
        Err(e) => {
            eprintln!("{name}: cannot start the executor thread: {e}");
            exit_code::NO_CHANNEL
        }
    }
}
