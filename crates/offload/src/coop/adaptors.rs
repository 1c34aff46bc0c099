//! Budgeted loops in their common shapes: [`Budget::for_each`] and the
//! [`Budgeted`] iterator (also a `Stream`).

use super::budget::Budget;
use super::epoch;
use futures_core::Stream;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

impl Budget {
    /// Runs `f` on every item of `iter`, ticking the budget after each one.
    ///
    /// The shape of most CPU loops in async code, and the fastest: as if
    /// [`tick`](Budget::tick) were awaited after each item, but the items
    /// between two checks run in a plain inner loop. A slice budget looks
    /// at its clock's epoch every 8 items there, so when steps suddenly
    /// become costly a slice may end up to 8 steps late, not one. A loop with an
    /// `.await` in its body keeps its variables in the future's memory
    /// rather than in registers, which costs 1 to 2 ns per step; that
    /// matters only for steps of a few nanoseconds. When the body needs
    /// `?`, `break` or `.await`, write the loop yourself with `tick`, or
    /// iterate with [`Budget::wrap`].
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the loop between two items.
    ///
    /// # Examples
    ///
    /// ```
    /// use offload::coop::Budget;
    /// use std::time::Duration;
    ///
    /// # futures::executor::block_on(async {
    /// let mut budget = Budget::slice(Duration::from_millis(1));
    /// let mut total = 0u64;
    /// budget.for_each(0..1_000_000u64, |x| total += x % 7).await;
    /// assert_eq!(total, 2_999_997);
    /// # });
    /// ```
    pub async fn for_each<I, F>(&mut self, iter: I, mut f: F)
    where
        I: IntoIterator,
        F: FnMut(I::Item),
    {
        let mut iter = iter.into_iter();
        loop {
            let free = self.free_ticks();
            let (done, stop);
            (iter, done, stop) = match self.watched_epoch() {
                None => run_free::<_, _, false>(iter, &mut f, free, 0),
                Some(seen) => run_free::<_, _, true>(iter, &mut f, free, seen),
            };
            match stop {
                Stop::Ended => {
                    self.take_free(done);
                    return;
                }
                Stop::Epoch if done > 0 => {
                    // The epoch moved: the last item's tick reads the clock.
                    self.take_free(done - 1);
                    self.tick().await;
                }
                Stop::Epoch | Stop::Free => {
                    self.take_free(done);
                    // The tick that may spend the budget.
                    let Some(item) = iter.next() else { return };
                    f(item);
                    self.tick().await;
                }
            }
        }
    }

    /// Wraps an iterator so that taking each item first ticks this budget:
    /// an async iterator over a sync one, usable with `while let` and as a
    /// [`Stream`].
    ///
    /// # Examples
    ///
    /// ```
    /// use offload::coop::Budget;
    /// use std::time::Duration;
    ///
    /// # futures::executor::block_on(async {
    /// let lines = (0..100_000).map(|i| format!("row {i}"));
    /// let mut rows = Budget::slice(Duration::from_millis(1)).wrap(lines);
    /// let mut longest = 0;
    /// while let Some(row) = rows.next().await {
    ///     if row.ends_with("99999") {
    ///         break; // `break`, `?` and `.await` work in the body
    ///     }
    ///     longest = longest.max(row.len());
    /// }
    /// assert_eq!(longest, 9);
    /// # });
    /// ```
    pub fn wrap<I: IntoIterator>(self, iter: I) -> Budgeted<I::IntoIter> {
        Budgeted {
            iter: iter.into_iter(),
            budget: self,
            yielding: false,
        }
    }
}

/// Why [`run_free`] returned.
enum Stop {
    /// It ran the `free` items.
    Free,
    /// The epoch moved: the budget must read the clock.
    Epoch,
    /// The iterator ran out.
    Ended,
}

/// Items a slice budget's [`run_free`] runs between two looks at the epoch.
///
/// Looking at every item costs a load, a compare and a branch per item: up
/// to 40 % of a loop whose step is a fraction of a nanosecond (measured on
/// a `black_box` per step, 0.3 ns). Every 8 items it is lost in the noise, and a slice
/// whose steps suddenly become costly ends at most 8 steps later than with
/// a look at every item. Steps that are costly already get no such delay:
/// the learned stride is then short, and `free` is below 8.
const EPOCH_EVERY: u32 = 8;

/// Runs `f` on up to `free` items: the ticks that cannot run out the
/// countdown. With `WATCH` (a slice budget) it also stops when the epoch
/// moves, looking every [`EPOCH_EVERY`] items. Returns the iterator, the
/// number of items done, and why it stopped.
///
/// Why a separate function taking the iterator by value: inside the async fn
/// the iterator and whatever the closure captures live in the future's
/// memory, where every store may alias every load, so each step would pay a
/// store and a load on its critical path. Moved into a local of a plain
/// function, the iterator lives in registers and the closure's captures can
/// be kept there too. Not inlined, because inlining into the async fn loses
/// exactly that; one call per check interval costs nothing.
#[inline(never)]
fn run_free<I: Iterator, F: FnMut(I::Item), const WATCH: bool>(
    mut iter: I,
    f: &mut F,
    free: u32,
    seen: u64,
) -> (I, u32, Stop) {
    let mut done = 0;
    if WATCH {
        while free - done >= EPOCH_EVERY {
            if epoch::now() != seen {
                return (iter, done, Stop::Epoch);
            }
            for _ in 0..EPOCH_EVERY {
                let Some(item) = iter.next() else {
                    return (iter, done, Stop::Ended);
                };
                f(item);
                done += 1;
            }
        }
        if epoch::now() != seen {
            return (iter, done, Stop::Epoch);
        }
    }
    while done < free {
        let Some(item) = iter.next() else {
            return (iter, done, Stop::Ended);
        };
        f(item);
        done += 1;
    }
    (iter, done, Stop::Free)
}

/// An iterator paced by a [`Budget`]: made by [`Budget::wrap`].
///
/// Each [`next`](Budgeted::next) ticks the budget (yielding when it is
/// spent), then takes the next item. It is also a [`Stream`] of the items, so
/// stream combinators and `select!` loops can consume it.
#[derive(Debug, Clone)]
#[must_use = "streams do nothing unless polled"]
pub struct Budgeted<I> {
    iter: I,
    budget: Budget,
    /// The budget was spent: finish its yield, then take the item.
    yielding: bool,
}

// The iterator is never pinned: `Budgeted` only uses it by `&mut`.
impl<I> Unpin for Budgeted<I> {}

impl<I: Iterator> Budgeted<I> {
    /// Ticks the budget (yielding once if it is spent), then returns the next
    /// item of the iterator.
    ///
    /// # Cancellation
    ///
    /// Cancel-safe: the item is taken only when the future completes, so
    /// dropping it (say, in a `select!` branch) loses nothing.
    pub async fn next(&mut self) -> Option<I::Item> {
        poll_fn(|cx| self.poll_item(cx)).await
    }

    /// The budget and the iterator, back.
    pub fn into_inner(self) -> (Budget, I) {
        (self.budget, self.iter)
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
        if !self.yielding && self.budget.should_yield() {
            self.budget.begin_yield();
            self.yielding = true;
        }
        if self.yielding {
            if self.budget.poll_yield(cx).is_pending() {
                return Poll::Pending;
            }
            self.yielding = false;
        }
        Poll::Ready(self.iter.next())
    }
}

impl<I: Iterator> Stream for Budgeted<I> {
    type Item = I::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
        self.get_mut().poll_item(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}
