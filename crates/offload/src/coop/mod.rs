//! Cooperative yielding: keep CPU-bound loops from stalling the executor.
//!
//! # Why yield, and why by time
//!
//! An async executor runs a task until the task returns `Pending`; it cannot
//! interrupt it. A loop that counts down fifty million steps inside a task
//! (the seed's `cpu.py`) therefore freezes every other task on that thread
//! for as long as it runs: a ticker that should print every second falls
//! silent, timers fire late, requests wait. The seed's workaround
//! (`cpu_workaround.py`) awaits `asyncio.sleep(0)` every N steps to hand the
//! loop back to the scheduler, and runs into a dilemma: with N = 1,000 the
//! work becomes much slower, because each trip through the scheduler costs
//! far more than a thousand cheap steps; with N = 1,000,000 the work keeps its
//! speed but the ticker slips past its deadline. No N is right, because the
//! right N is "as many steps as take about a millisecond", which depends on
//! the step, the input and the machine. [`Budget::slice`] asks the question
//! directly: it yields when the task has run for a time slice (say 1 ms)
//! since it last yielded, and learns how often it must look at the clock to
//! notice. The loop keeps nearly all of its speed and the executor's other
//! tasks wait at most about one slice, whatever the step costs.
//! [`Budget::every`] is the seed's count-based way, for when the step
//! really is uniform, and [`yield_now`] is the single yield both are made of.
//!
//! Yielding still runs the work on the executor's threads: it shares them
//! fairly, it does not add any. Move the work to a thread pool instead
//! when it is long (more than a few milliseconds per request, multiplied
//! by the requests in flight, is time every other task on those threads
//! waits for), when it should run in parallel with the async code, or when
//! you cannot put a tick in its inner loop (a call into a library that
//! parses a whole document or compresses a whole file in one go, a blocking
//! system call). Rust has no global interpreter lock, so unlike the seed's
//! Python, threads really do run CPU work in parallel. Yield when the work is
//! short, or must stay on the task (it borrows the task's state), or when a
//! single-threaded runtime is all there is.
//!
//! ```
//! use offload::coop::Budget;
//! use std::time::Duration;
//!
//! # futures::executor::block_on(async {
//! let mut budget = Budget::slice(Duration::from_millis(1));
//! let mut n = 5_000_000u64; // the seed counts down from 50,000,000
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
//! Reading the clock (`Instant::now`, about 20 ns) costs more than one step
//! of a tight loop (which can be under a nanosecond), so a slice budget reads
//! it only every *stride* ticks. Between two reads a tick is a decrement and a
//! compare, exactly like a count budget. At each read it measures how many
//! ticks passed in how much time and sets the stride so that the next read
//! comes about one eighth of a slice later: 8 to 10 clock reads per slice
//! whatever the loop's speed. The stride grows by at most 4× per read, so one
//! noisy measurement cannot push the next read far out, and it shrinks at
//! once when a read finds that its interval overran (the steps became
//! slower). When less than an eighth of the slice is left, the next read is
//! aimed at the end of the slice, so a slice ends late by a small fraction at
//! most, plus one step (a step is never interrupted). After a yield the next
//! tick starts a fresh slice: time spent waiting in the run queue is not
//! charged to the task.
//!
//! The price of not reading the clock: when the steps suddenly become much
//! slower (a run of tiny items, then huge ones), the read armed for the fast
//! steps comes late by the ratio of the slowdown, and only then is the
//! stride re-learned (in one read). When step costs vary by orders of
//! magnitude, tick in proportion to the work (once per row, once per
//! kilobyte) rather than once per item.
//!
//! # Cost
//!
//! A tick that does not yield is a decrement and a branch: no clock read,
//! no allocation, and its future is a null pointer. What costs more is the
//! `.await` itself: a loop with an `.await` in its body keeps its variables
//! in the future's memory rather than in registers, which adds a store and
//! a load to each step: about 1.7 ns in `offload-lab bench coop`, where a
//! 1 ns step then runs at 40 % of its bare speed. On a step of a hundred
//! nanoseconds it does not show. [`Budget::for_each`] runs the ticks between
//! two checks in a plain inner loop and keeps the full speed (99 % on the
//! same step, with a 1 ms slice, yields included), so prefer it for tight
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
