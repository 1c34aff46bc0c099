//! Cooperative yielding: keep CPU-bound loops from stalling the executor.
//!
//! # Why yield, and why by time
//!
//! An async executor runs a task until the task returns `Pending`; it cannot
//! interrupt it. A loop that counts down fifty million steps inside a task
//! therefore freezes every other task on that thread for as long as it
//! runs: a ticker that should print every second falls silent, timers fire
//! late, requests wait. The usual workaround (Python's
//! `await asyncio.sleep(0)`) yields every N steps to hand the loop back to
//! the scheduler, and runs into a dilemma: with N = 1,000 the
//! work becomes much slower, because each trip through the scheduler costs
//! far more than a thousand cheap steps; with N = 1,000,000 the work keeps its
//! speed but the ticker slips past its deadline. No N is right, because the
//! right N is "as many steps as take about a millisecond", which depends on
//! the step, the input and the machine, and the step's cost can change in
//! the middle of the loop. [`Budget::slice`] asks the question directly: it
//! yields when the task has run for a time slice (say 1 ms) since it last
//! yielded. The loop keeps nearly all of its speed and the executor's other
//! tasks wait about one slice, at most a slice plus a millisecond plus one
//! step, whatever the steps cost and however that changes.
//! [`Budget::every`] is the count-based way, for when the step
//! really is uniform, and [`yield_now`] is the single yield both are made of.
//!
//! Yielding still runs the work on the executor's threads: it shares them
//! fairly, it does not add any. Move the work to a thread pool instead
//! when it is long (more than a few milliseconds per request, multiplied
//! by the requests in flight, is time every other task on those threads
//! waits for), when it should run in parallel with the async code, or when
//! you cannot put a tick in its inner loop (a call into a library that
//! parses a whole document or compresses a whole file in one go, a blocking
//! system call). Rust has no global interpreter lock, so unlike Python,
//! threads really do run CPU work in parallel. Yield when the work is
//! short, or must stay on the task (it borrows the task's state), or when a
//! single-threaded runtime is all there is.
//!
//! ```
//! use offload::coop::Budget;
//! use std::time::Duration;
//!
//! # futures::executor::block_on(async {
//! let mut budget = Budget::slice(Duration::from_millis(1));
//! let mut n = 5_000_000u64;
//! while n > 0 {
//!     n -= 1;
//!     budget.tick().await; // usually a decrement; a yield about every ms
//! }
//!
//! // The same, faster for steps of a few nanoseconds (see "Cost" below):
//! let mut x = 0u64;
//! budget.for_each((0..5_000_000u64).rev(), |n| x ^= n).await;
//! # std::hint::black_box(x);
//! # });
//! ```
//!
//! # The tools
//!
//! - [`yield_now`]: yields once, on any executor.
//! - [`Budget`]: [`Budget::every`]`(n)` or [`Budget::slice`]`(duration)`;
//!   [`Budget::tick`] once per step and await it. [`Budget::yield_with`]
//!   picks the executor's own yield (tokio's, see [below](#on-tokio));
//!   [`Budget::should_yield`] gives the decision alone.
//! - [`Budget::for_each`] runs a closure over an iterator with a tick after
//!   each item; [`Budget::wrap`] turns an iterator into a [`Budgeted`] one
//!   with an async `next` (usable with `while let`, `break` and `?`) that is
//!   also a `Stream`.
//!
//! # How a slice budget reads the clock
//!
//! Reading the clock (`Instant::now`, 20 to 30 ns) costs more than one step
//! of a tight loop (which can be under a nanosecond), so a tick does not
//! read it. A background thread, the *clock* (`offload-coop`), advances a
//! shared counter every millisecond while slice budgets tick; a tick
//! compares it with the value it saw at its last clock read (one load of a
//! line that changes once a millisecond) and reads the clock only when it
//! moved. So whatever the steps cost before, and however suddenly that
//! changes, a slice ends at most about a millisecond plus one step after it
//! is spent (a step is never interrupted). Between two moves the budget also
//! reads the clock on a schedule it learns from the loop's own rate, about 8
//! times per slice, the last read aimed at the slice's end: a steady loop's
//! slices end on time, late by a small fraction of the slice, not by up to
//! a millisecond. When a yield ends, a fresh slice starts: time spent
//! waiting in the run queue is not charged to the task, and the step after
//! the yield is (so steps longer than the slice yield after each step).
//!
//! The clock starts at the first tick of the first slice budget (count
//! budgets never start it) and parks once no budget has read the clock for
//! 20 ms: when no budget ticks, it takes no CPU and no wake-up. While budgets
//! tick it wakes once a millisecond, however many budgets on however many
//! threads; each wake-up costs a few microseconds of CPU on bare metal and
//! tens of microseconds on some virtual machines (`offload-lab bench coop`
//! measures it: the `clock_cpu_slice_1ms` line). If the thread cannot be
//! started, budgets run on the learned schedule alone and a warning is
//! logged: a slice then ends late when steps suddenly become much slower,
//! by the ratio of the slowdown.
//!
//! # Cost
//!
//! A tick that does not yield is a decrement, a load and two branches: no
//! clock read, no allocation, and its future is a null pointer. What costs
//! more is the `.await` itself: a loop with an `.await` in its body keeps
//! its variables in the future's memory rather than in registers, which
//! adds a store and a load to each step, a nanosecond or two (`offload-lab
//! bench coop`, the `tick_cost_*` lines); on a step of a hundred nanoseconds
//! it does not show. [`Budget::for_each`] runs the ticks between two checks
//! in a plain inner loop and keeps the full speed (about 97 % or better on a
//! 1 ns step with a 1 ms slice, yields included), so prefer it for tight
//! loops.
//!
//! # On tokio
//!
//! Tokio has a cooperative budget of its own: each time it polls a task it
//! grants 128 units, and its resources (channels, sockets, timers) spend one
//! unit per operation and return `Pending` when they are spent, forcing a
//! yield. It protects loops that await tokio resources that are always ready
//! (a busy socket, a full channel); it cannot see a loop that only computes,
//! which is what [`Budget`] is for. The two compose: a yield from this module
//! ends the poll, so tokio grants a full budget on the next one, and a loop
//! that tokio made yield simply finds its slice budget restarted late.
//!
//! [`yield_now`] (and so [`Budget::tick`]) wakes the task and goes back to
//! the scheduler, which puts the task at the back of its run queue and runs
//! the other ready tasks first. This works on a current-thread runtime, where
//! getting it wrong stalls everything: there a task that never yields leaves
//! no other task, timer or socket any chance to run. But tokio polls its
//! timer and I/O driver only when its run queue is empty or every
//! `event_interval` (61) tasks polled, and a task that wakes itself never
//! leaves the queue empty. So on a current-thread runtime, a *spawned* task
//! that yields this way lets ready tasks run at once but delays timers and
//! sockets by up to 61 yields: 61 ms with a 1 ms slice (`offload-lab bench
//! coop` measures it). `tokio::task::yield_now` defers the wake-up until the
//! driver has been polled, so on tokio give it to the budget with
//! [`Budget::yield_with`]:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! # use offload::coop::Budget;
//! # use std::time::Duration;
//! let mut budget = Budget::slice(Duration::from_millis(1)).yield_with(tokio::task::yield_now);
//! for step in 0..1_000_000u64 {
//!     std::hint::black_box(step);
//!     budget.tick().await; // yields with tokio's yield_now: timers and I/O run too
//! }
//! # });
//! ```
//!
//! The future given to `Runtime::block_on` is not affected: its wake-up makes
//! the runtime poll the driver before polling it again. A multi-thread
//! runtime is no exception either: its workers, too, poll the driver only
//! every `event_interval` tasks while they have work, so use
//! [`Budget::yield_with`] there as well.

mod adaptors;
mod budget;
mod epoch;
mod slice;
mod yield_now;
mod yielder;

pub use adaptors::Budgeted;
pub use budget::{Budget, Tick};
pub use yield_now::{YieldNow, yield_now};
