//! [`Budget`]: decide cheaply when a loop should yield.

use super::epoch;
use super::slice::SliceClock;
use super::yielder::Yielder;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Tells a CPU-bound loop in async code when to yield to the executor: every
/// `n` steps ([`Budget::every`]) or when the task has run for a time slice
/// since it last yielded ([`Budget::slice`]).
///
/// Call [`tick`](Budget::tick) once per step and await it. Most ticks only
/// decrement a counter and return a future that is `Ready` at once (no
/// allocation, no clock read); the tick that spends the budget returns a
/// future that yields once, like [`yield_now`](super::yield_now). Prefer
/// [`Budget::slice`]: see the [module docs](super) for why.
///
/// A budget is not tied to a task or a runtime; keep one per loop (or per
/// task) and reuse it.
///
/// # Examples
///
/// ```
/// use offload::coop::Budget;
/// use std::time::Duration;
///
/// # futures::executor::block_on(async {
/// let mut budget = Budget::slice(Duration::from_millis(1));
/// let mut n = 5_000_000u64;
/// while n > 0 {
///     n -= 1;
///     budget.tick().await; // yields about once per millisecond
/// }
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Budget {
    /// Ticks left before the slow path runs; always at least 1 between calls.
    /// A slice budget also takes the slow path when the epoch moves.
    countdown: u32,
    kind: Kind,
    /// How a spent tick yields, and the yield in progress.
    yielder: Yielder,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Yield every `n` ticks.
    Every(u32),
    /// Yield when the slice is spent; the countdown is the clock-read stride,
    /// and a moved epoch triggers a read too.
    Slice(SliceClock),
}

impl Budget {
    /// A budget that yields exactly every `n` ticks: the `n`-th, `2n`-th, …
    /// tick yields, the others never do. `every(1)` yields on every tick.
    ///
    /// This is Python's `await asyncio.sleep(0)` every N steps. Its
    /// trouble is choosing `n`: the right value depends on how long a step
    /// takes, on this machine, for this input, and a count that suits cheap
    /// steps lets costly ones stall the executor. [`Budget::slice`] yields
    /// by time instead. A count budget never reads the clock and never
    /// starts the clock thread.
    ///
    /// # Panics
    ///
    /// Panics if `n` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use offload::coop::Budget;
    ///
    /// # futures::executor::block_on(async {
    /// let mut budget = Budget::every(1_000);
    /// for i in 0..10_000u32 {
    ///     std::hint::black_box(i);
    ///     budget.tick().await; // yields on ticks 1000, 2000, …
    /// }
    /// # });
    /// ```
    pub const fn every(n: u32) -> Self {
        assert!(n > 0, "Budget::every(n) needs n > 0");
        Budget {
            countdown: n,
            kind: Kind::Every(n),
            yielder: Yielder::agnostic(),
        }
    }

    /// A budget that yields once the task has run for `slice` since it last
    /// yielded (or since its first tick).
    ///
    /// It does not read the clock on every tick: a tick compares a counter
    /// that a background thread advances every millisecond while budgets
    /// tick, and reads the clock when it moved, or when a stride learned
    /// from the loop's rate runs out (about 8 reads per slice). A slice ends
    /// late by at most about a millisecond plus one step (a single step is
    /// never interrupted), whatever the steps cost before; in a steady loop,
    /// by a small fraction of the slice. See the [module
    /// docs](super#how-a-slice-budget-reads-the-clock).
    ///
    /// 1 ms is a good default for services: it keeps the executor's other
    /// tasks within about a millisecond while the loop keeps nearly all of its
    /// speed.
    ///
    /// Every `Duration` is accepted, none panics or overflows:
    /// `Duration::ZERO` yields on every tick; a slice shorter than the time
    /// between two ticks (say 1 ns) yields on every tick but the first (the
    /// tick that opens a slice never yields; with
    /// [`should_yield`](Budget::should_yield), whose yields the budget does
    /// not see end, on every other tick); a slice longer than the loop (up
    /// to `Duration::MAX`) never yields.
    ///
    /// # Examples
    ///
    /// ```
    /// use offload::coop::Budget;
    /// use std::time::Duration;
    ///
    /// # futures::executor::block_on(async {
    /// let mut budget = Budget::slice(Duration::from_micros(500));
    /// let mut digest = 0u64;
    /// for byte in vec![7u8; 1 << 20] {
    ///     digest = digest.rotate_left(5) ^ u64::from(byte);
    ///     budget.tick().await;
    /// }
    /// # std::hint::black_box(digest);
    /// # });
    /// ```
    pub fn slice(slice: Duration) -> Self {
        Budget {
            countdown: 1,
            kind: Kind::Slice(SliceClock::new(slice)),
            yielder: Yielder::agnostic(),
        }
    }

    /// Makes a spent tick yield by awaiting `yield_fn()` instead of
    /// [`yield_now`](super::yield_now); the adaptors ([`for_each`](Budget::for_each),
    /// [`wrap`](Budget::wrap)) use it too.
    ///
    /// The runtime-agnostic [`yield_now`](super::yield_now) suits every executor, but on a
    /// tokio runtime `tokio::task::yield_now` also lets tokio's timers and
    /// sockets run before the task is polled again, which matters for a
    /// spawned task on a current-thread runtime (see the [module
    /// docs](super#on-tokio)). The future is boxed once per yield (never on a
    /// tick that does not yield) and must be `Send`, so that ticking stays
    /// possible in tasks that move between threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use offload::coop::Budget;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let mut budget =
    ///     Budget::slice(Duration::from_millis(1)).yield_with(tokio::task::yield_now);
    /// let work = tokio::spawn(async move {
    ///     let mut n = 10_000_000u64;
    ///     while n > 0 {
    ///         n = std::hint::black_box(n - 1);
    ///         budget.tick().await; // tokio's timers keep firing on time
    ///     }
    /// });
    /// work.await.unwrap();
    /// # });
    /// ```
    pub fn yield_with<F, Fut>(mut self, yield_fn: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.yielder = Yielder::custom(yield_fn);
        self
    }

    /// Counts one step and returns a future that yields once if that step
    /// spent the budget, and is `Ready` at once otherwise.
    ///
    /// The step is counted when `tick` is called, not when the future is
    /// polled; a spent budget starts over (a new count, or a new slice
    /// starting at the next tick) whether or not the future is awaited.
    ///
    /// # Cancellation
    ///
    /// Dropping the future only skips the yield; nothing else is lost.
    #[inline]
    pub fn tick(&mut self) -> Tick<'_> {
        if self.should_yield() {
            self.yielder.begin();
            Tick(Some(self))
        } else {
            Tick(None)
        }
    }

    /// Ticks that do not run out the countdown: the caller may run that many
    /// steps without checking it (a slice budget's caller must still watch
    /// the epoch, see [`watched_epoch`](Budget::watched_epoch)), then
    /// [`take_free`](Budget::take_free).
    #[inline]
    pub(crate) fn free_ticks(&self) -> u32 {
        self.countdown - 1
    }

    /// Counts `ticks` (at most [`free_ticks`](Budget::free_ticks)) at once.
    #[inline]
    pub(crate) fn take_free(&mut self, ticks: u32) {
        debug_assert!(ticks < self.countdown);
        self.countdown -= ticks;
    }

    /// Begins the yield of a spent budget (see [`Budget::poll_yield`]).
    pub(crate) fn begin_yield(&mut self) {
        self.yielder.begin();
    }

    /// Polls the yield begun by [`Budget::begin_yield`].
    ///
    /// When the yield ends, a slice budget opens its next slice: the time
    /// the task waited to be polled again is not charged to it, and the
    /// step that follows is. Never inlined: it must not bloat the poll of a
    /// tick that does not yield, which every step of a loop runs.
    #[inline(never)]
    pub(crate) fn poll_yield(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let poll = self.yielder.poll(cx);
        if poll.is_ready() {
            if let Kind::Slice(clock) = &mut self.kind {
                self.countdown = clock.open();
            }
        }
        poll
    }

    /// Counts one step and tells whether the caller should yield now: the
    /// decision of [`tick`](Budget::tick) without the yield.
    ///
    /// When it returns `true` the budget starts over, assuming the caller
    /// yields at once (or does not need to: a loop may also use it to
    /// return early and let its caller yield); a slice budget opens its next
    /// slice at the next tick, since it does not see the yield end.
    ///
    /// # Examples
    ///
    /// ```
    /// use offload::coop::Budget;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let mut budget = Budget::slice(Duration::from_millis(1));
    /// for i in 0..1_000_000u64 {
    ///     std::hint::black_box(i);
    ///     if budget.should_yield() {
    ///         tokio::task::yield_now().await;
    ///     }
    /// }
    /// # });
    /// ```
    #[inline]
    pub fn should_yield(&mut self) -> bool {
        self.countdown -= 1;
        if self.countdown != 0 && !self.epoch_moved() {
            return false;
        }
        self.spent()
    }

    /// For a slice budget, whether the clock thread advanced the epoch since
    /// the budget last read the clock: one load of a rarely written line.
    #[inline(always)]
    fn epoch_moved(&self) -> bool {
        match &self.kind {
            Kind::Every(_) => false,
            Kind::Slice(clock) => epoch::now() != clock.seen(),
        }
    }

    /// The epoch a slice budget's ticks compare against (`None` for a count
    /// budget): [`for_each`](Budget::for_each) watches it between checks.
    #[inline]
    pub(crate) fn watched_epoch(&self) -> Option<u64> {
        match &self.kind {
            Kind::Every(_) => None,
            Kind::Slice(clock) => Some(clock.seen()),
        }
    }

    /// Starts over as if the task had just yielded: a fresh count, or a new
    /// slice from the next tick. Useful when the loop also awaits something
    /// that may have yielded already.
    pub fn reset(&mut self) {
        match &mut self.kind {
            Kind::Every(n) => self.countdown = *n,
            Kind::Slice(clock) => {
                clock.restart();
                self.countdown = 1;
            }
        }
    }

    /// The slow path of [`should_yield`](Budget::should_yield): the count is
    /// spent, or it is time to read the clock.
    #[cold]
    #[inline(never)]
    fn spent(&mut self) -> bool {
        match &mut self.kind {
            Kind::Every(n) => {
                self.countdown = *n;
                true
            }
            Kind::Slice(clock) => {
                let (yield_now, next_check) = clock.check(self.countdown);
                self.countdown = next_check;
                yield_now
            }
        }
    }
}

/// The future of [`Budget::tick`]: `Ready` at once, or after yielding once
/// when the tick spent the budget.
///
/// It is a single pointer (null when the tick does not yield): the state of a
/// yield lives in the budget.
#[derive(Debug)]
#[must_use = "a tick that spent the budget yields only when awaited"]
pub struct Tick<'a>(Option<&'a mut Budget>);

impl Future for Tick<'_> {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            None => Poll::Ready(()),
            Some(budget) => budget.poll_yield(cx),
        }
    }
}
