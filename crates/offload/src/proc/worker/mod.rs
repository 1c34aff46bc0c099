//! The worker side: what a worker process runs after
//! [`run_worker_if_child`] recognises it as one.
//!
//! Three threads: the executor (named after the worker) reads a call,
//! runs it, answers, and reads the next; the control and deadline threads
//! (`control.rs`) may stop the running call. Which call is running is
//! decided in `running.rs`.

mod channel;
mod control;
pub(crate) mod marker;
mod memory;
mod running;

use std::cell::RefCell;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

pub(crate) use channel::CONTROL_TAG;
use running::{Begin, Running};

use super::codec::{Encoded, Input};
use super::protocol::{
    Hello, MAX_SETTINGS_FRAME, ReplyHead, Settings, build_id, decode_call, encode_head,
    encode_hello,
};
use super::task::Registry;
use super::wire::{FrameError, read_frame, spin_for_bytes, write_frame, write_frame_parts};
use crate::error::{CancelReason, Error};
use crate::sync::lock;

/// Exit codes of a worker that gives up, so the parent can tell why.
pub(crate) mod exit_code {
    /// The control channel (fd 0) is not usable.
    pub(crate) const NO_CHANNEL: i32 = 70;
    /// The registry's `init` hook panicked.
    pub(crate) const INIT_PANICKED: i32 = 71;
    /// The parent sent something that is not a call.
    pub(crate) const PROTOCOL: i32 = 72;
    /// A thread the worker needs could not be started.
    pub(crate) const NO_THREAD: i32 = 73;
}

/// The most bytes a reply's header takes besides the output (an id and a
/// tag); the output may use the rest of a frame.
const REPLY_HEAD_ROOM: usize = 32;

/// Turns this process into a worker if it was started as one, and never
/// returns in that case; otherwise returns at once.
///
/// Call it first thing in `main`, before anything else runs (argument
/// parsing, threads, runtimes, logging to stdout), with the same registry
/// the parent uses:
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
///     // ... the parent's own code: parse arguments, build a ProcessPool, call tasks.
/// }
/// ```
///
/// A worker serves calls one at a time on a thread named after it. It
/// exits when its parent closes its channel, and at once, busy or not,
/// when its parent dies, however it dies. A process is a worker only if
/// its own parent started it as one: a task that runs the same program
/// again starts an ordinary process.
pub fn run_worker_if_child(registry: &Registry) {
    let Some(me) = marker::current() else {
        return;
    };
    std::process::exit(serve(registry, &me.name));
}

thread_local! {
    /// Where the last panic on this thread happened, recorded by the hook
    /// installed in [`serve`] and read by [`take_panic`].
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The message and location of a caught panic.
pub(crate) fn take_panic(payload: Box<dyn std::any::Any + Send>) -> (String, Option<String>) {
    // A payload whose destructor panics must not escape: drop it under
    // `catch_unwind` too.
    let message = catch_unwind(AssertUnwindSafe(move || {
        Error::panic(&*payload)
            .panic_message()
            .unwrap_or_default()
            .to_owned()
    }))
    .unwrap_or_else(|_| "a panic whose payload panicked when dropped".to_owned());
    (message, PANIC_LOCATION.with(|l| l.borrow_mut().take()))
}

fn serve(registry: &Registry, name: &str) -> i32 {
    let channels = match channel::take() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: no control channel: {e}");
            return exit_code::NO_CHANNEL;
        }
    };
    let (mut reader, replies) = match channels.calls.try_clone() {
        Ok(w) => (BufReader::new(channels.calls), Arc::new(Mutex::new(w))),
        Err(e) => {
            eprintln!("{name}: cannot clone the call channel: {e}");
            return exit_code::NO_CHANNEL;
        }
    };
    let settings = match read_frame(&mut reader, MAX_SETTINGS_FRAME, None)
        .map_err(|e| e.to_string())
        .and_then(|f| postcard::from_bytes::<Settings>(&f).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        // The parent is gone, or is not an offload pool of this version.
        Err(e) => {
            eprintln!("{name}: no settings from the parent: {e}");
            return exit_code::NO_CHANNEL;
        }
    };
    let max_frame = usize::try_from(settings.max_frame).unwrap_or(usize::MAX);
    memory::apply(name, &settings);
    let running = Arc::new(Running::default());

    // Watch the parent before `init`: a parent that dies during a long
    // init takes its worker with it.
    if let Err(e) = control::start(
        name,
        channels.control,
        running.clone(),
        replies.clone(),
        max_frame,
    ) {
        eprintln!("{name}: cannot start the control thread: {e}");
        return exit_code::NO_THREAD;
    }
    // After the control thread (which stays at the inherited priority, so
    // a cancel is heard at once) and before `init` and the executor, which
    // inherit it.
    if let Some(sched) = settings.sched {
        sched.apply_to_current_process(name);
    }

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
        tasks: registry.task_infos(),
        pid: std::process::id(),
    };
    let said_hello = {
        let mut out = lock(&replies);
        write_frame(&mut *out, &encode_hello(&hello), &[], max_frame)
    };
    if said_hello.is_err() {
        // The parent is gone already.
        return 0;
    }

    // Calls run on a thread named after the worker, so that stack traces
    // and `top -H` show `offload-proc-N`. It reads its own calls: no
    // hand-off between threads on the hot path.
    let registry = registry.clone();
    let exec_name = name.to_owned();
    let executor = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let limits = Limits {
                max_frame,
                soft_memory: settings.soft_memory,
                spin: std::time::Duration::from_micros(u64::from(settings.spin_us))
                    .min(super::wire::MAX_SPIN),
            };
            execute(&registry, &exec_name, reader, &replies, &running, limits)
        });
    match executor {
        Ok(handle) => {
            let _ = handle.join();
            0
        }
        Err(e) => {
            eprintln!("{name}: cannot start the executor thread: {e}");
            exit_code::NO_THREAD
        }
    }
}

/// What the executor checks around each call.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame: usize,
    /// Ask to be retired when the resident set passes this after a call.
    soft_memory: Option<u64>,
    /// How long to look for the next call before blocking.
    spin: std::time::Duration,
}

/// The executor loop: read a call, run it, answer; exit when the parent
/// closes the channel.
fn execute(
    registry: &Registry,
    name: &str,
    mut reader: BufReader<UnixStream>,
    replies: &Mutex<UnixStream>,
    running: &Running,
    limits: Limits,
) -> ! {
    let max_frame = limits.max_frame;
    let max_output = max_frame.saturating_sub(REPLY_HEAD_ROOM);
    // Once over the soft limit, say so in every reply until the parent
    // stops sending.
    let mut retire = false;
    loop {
        // The next call often follows at once (pipelined, or a caller
        // awaiting calls one at a time): look for it before sleeping.
        spin_for_bytes(&reader, limits.spin);
        let frame = match read_frame(&mut reader, max_frame, None) {
            Ok(frame) => frame,
            // The parent closed the channel: it is done with us, or gone.
            Err(FrameError::Closed) => std::process::exit(0),
            Err(e) => {
                eprintln!("{name}: call channel failed: {e}; exiting");
                std::process::exit(exit_code::PROTOCOL);
            }
        };
        let (head, at) = match decode_call(&frame) {
            Ok((head, input)) => (head, frame.len() - input.len()),
            Err(e) => {
                eprintln!("{name}: undecodable call ({e}); exiting");
                std::process::exit(exit_code::PROTOCOL);
            }
        };
        let (result, output) = match running.begin(head.id, head.timeout) {
            Begin::Skip => (
                Err(Error::cancelled(CancelReason::Dropped)),
                Encoded::default(),
            ),
            Begin::Run => {
                // The input is decoded in the frame it arrived in. The
                // task's panic is caught inside `dispatch`; this also
                // catches one from dropping its input or output.
                let input = Input::Owned { frame, at };
                // With a subscriber in the worker (installed by the
                // registry's `init`), the task's events nest under a span
                // that names the call and the caller's span.
                let span = tracing::info_span!(
                    target: "offload::worker",
                    "offload.call",
                    task = %head.task,
                    call = head.id,
                    caller_span = head.span,
                );
                let out = catch_unwind(AssertUnwindSafe(|| {
                    let _entered = span.enter();
                    registry.dispatch_limited(&head.task, input, max_output)
                }))
                .unwrap_or_else(|payload| {
                    let (message, location) = take_panic(payload);
                    Err(Error::remote_panic(message, location))
                });
                running.end();
                if let Some(limit) = limits.soft_memory {
                    retire |= memory::resident().is_some_and(|rss| rss > limit);
                }
                match out {
                    Ok(encoded) => (Ok(()), encoded),
                    Err(e) => (Err(e), Encoded::default()),
                }
            }
        };
        let head = encode_head(&ReplyHead::Done {
            id: head.id,
            result,
            retire,
        });
        let mut out = lock(replies);
        let body = [&output.prefix[..], &output.bytes[..]];
        if write_frame_parts(&mut *out, &head, &body, max_frame).is_err() || out.flush().is_err() {
            std::process::exit(0);
        }
    }
}
