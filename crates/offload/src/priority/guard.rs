//! The starvation guard behind [`Priority::Background`](super::Priority):
//! background threads live in the idle scheduling class, where any waking
//! normal thread (the loop's) takes the core at once, and a thread that the
//! idle class starves gets its nice +10 floor back.
//!
//! The idle class has no floor: against normal threads that keep a core
//! busy (a neighbour's CPU work) an idle-class thread gets a weight of 3
//! against 1,024, a third of a percent. So one thread per process (the
//! guard, at normal priority) looks every [`TICK`] at how each guarded
//! thread fared, from its `schedstat` (time on a core, time waiting for
//! one) and its state:
//!
//! - when a thread that wanted a core for at least [`MIN_DEMAND`] of the
//!   tick got less than [`STARVED`] of what it wanted, *every* guarded
//!   thread of the process falls back: it leaves the idle class and
//!   competes at its nice level (+10: a tenth of a normal thread's weight),
//!   the old `Background`. Contention is a property of the machine: a
//!   sibling that was asleep would starve as soon as it got a job (judged
//!   one by one, a pool taking one job at a time under foreign load had a
//!   p99 of 3–4 ms against 0.1 ms at plain nice +10);
//! - they go back to the idle class together once every thread that wanted
//!   a core got at least [`FREE`] of it and the hold has passed. The hold
//!   starts at [`FIRST_HOLD`] and doubles (up to [`MAX_HOLD`]) each time
//!   they starve again soon after going back, so a load that only a nice
//!   +10 thread can beat (a neighbour at nice 19) does not make them flap.
//!
//! Idle-class threads do not starve each other: they share fairly, each
//! getting far more than [`STARVED`] of what it wants unless there are five
//! times more of them than cores.
//!
//! Leaving the idle class needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that
//! allows the thread's nice level: a one-way door for most unprivileged
//! programs. [`available`] tries the door once per process on a throwaway
//! thread; where it is shut, `Background` is nice +10 alone.
//!
//! Thread pools register each thread ([`register_current_thread`]); a
//! worker process puts its main thread and every thread started after it
//! under the guard ([`adopt_process`]), so that threads a task starts are
//! guarded too; its control thread stays out.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::readings::{
    CpuTimes, Sample, normal_share, read_cpu_times, read_schedstat, threads_of_this_process,
};
use super::sys::{self, Tid};
use crate::sync::{lock, wait};

/// How often the guard looks at its threads while any of them wants a
/// core, or the machine is busy with normal-priority work.
const TICK: Duration = Duration::from_millis(100);
/// The longest look interval while the guarded threads sleep on a quiet
/// machine (an idle worker process keeps its guard): the interval doubles
/// from [`TICK`] up to this, and drops back at the first sign of work.
const QUIET_TICK_MAX: Duration = Duration::from_secs(1);
/// A thread that wanted a core for less than this share of a tick is not
/// judged (it mostly slept).
const MIN_DEMAND: f64 = 0.25;
/// An idle-class thread that got less than this share of the time it
/// wanted a core is starved.
const STARVED: f64 = 0.2;
/// A fallen-back thread that gets at least this share of what it wants
/// may go back to the idle class.
const FREE: f64 = 0.5;
/// Fallen-back threads go back only when normal-priority work (user and
/// system time at nice 0 or below, anyone's) used at most this share of
/// all CPUs over the tick: a thread that sleeps between short jobs gets
/// its share of a contended core at nice +10 (the scheduler credits a
/// waking thread), and would go back only to starve again.
const NORMAL_LOAD_TO_RETURN: f64 = 0.5;
/// How long a thread stays fallen back at first.
const FIRST_HOLD: Duration = Duration::from_millis(200);
/// The longest hold.
const MAX_HOLD: Duration = Duration::from_secs(10);
/// Starving again within this time of going back doubles the hold.
const RELAPSE: Duration = Duration::from_secs(2);

/// The share of the time a thread wanted a core that it got, over the
/// span between two readings; `None` if it wanted a core for less than
/// [`MIN_DEMAND`] of the span (it mostly slept: nothing to judge).
fn share(prev: Sample, now: Sample) -> Option<f64> {
    let span = now.at.saturating_duration_since(prev.at).as_nanos() as f64;
    let run = now.run_ns.saturating_sub(prev.run_ns) as f64;
    let wait = now.wait_ns.saturating_sub(prev.wait_ns) as f64;
    // Runnable at both readings: as far as we can tell it wanted a core
    // all along, though a wait that has not ended is not counted yet.
    let wanted = if prev.runnable && now.runnable {
        (run + wait).max(span)
    } else {
        run + wait
    };
    (span > 0.0 && wanted >= MIN_DEMAND * span).then(|| run / wanted)
}

/// How the guard got a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A pool thread registered itself; it deregisters before it exits.
    Registered,
    /// A thread of a guarded worker process.
    Adopted,
}

/// Moves thread `tid` into (`true`) or out of the idle class.
type Mover<'a> = dyn FnMut(Tid, bool) -> std::io::Result<()> + 'a;

/// The guard's view of one thread.
#[derive(Debug)]
struct Watch {
    origin: Origin,
    last: Option<Sample>,
}

/// Where the guarded threads are, and since when. Contention for the
/// cores is a property of the machine, not of one thread: when one
/// guarded thread starves, they all fall back (a sibling that was asleep
/// would starve as soon as it got a job), and they go back together.
#[derive(Debug)]
struct Class {
    fallen_back: bool,
    /// Fallen-back threads go back no earlier than this.
    hold_until: Instant,
    /// The length of the next hold.
    hold: Duration,
    /// When they last went back to the idle class.
    returned_at: Option<Instant>,
    /// The OS refused a move: the guard stops moving threads.
    stuck: bool,
}

impl Default for Class {
    fn default() -> Self {
        Class {
            fallen_back: false,
            hold_until: Instant::now(),
            hold: FIRST_HOLD,
            returned_at: None,
            stuck: false,
        }
    }
}

impl Class {
    /// Whether the guarded threads should now be in the idle class
    /// (`Some(true)`) or out of it (`Some(false)`), given the shares of
    /// the threads that wanted a core in the last tick and the share of
    /// all CPUs that normal-priority work used in it (`None`: unknown);
    /// `None`: stay.
    fn decide(&mut self, shares: &[f64], normal_load: Option<f64>, now: Instant) -> Option<bool> {
        if self.stuck {
            return None;
        }
        if !self.fallen_back {
            if !shares.iter().any(|&s| s < STARVED) {
                return None;
            }
            let relapse = self
                .returned_at
                .is_some_and(|t| now.saturating_duration_since(t) < RELAPSE);
            self.hold = if relapse {
                (self.hold * 2).min(MAX_HOLD)
            } else {
                FIRST_HOLD
            };
            self.fallen_back = true;
            self.hold_until = now + self.hold;
            tracing::debug!(hold = ?self.hold, "offload: background threads starved in the idle class; they compete at their nice level");
            return Some(false);
        }
        let free = shares.iter().all(|&s| s >= FREE)
            && normal_load.is_some_and(|l| l <= NORMAL_LOAD_TO_RETURN);
        if now < self.hold_until || !free {
            return None;
        }
        self.fallen_back = false;
        self.returned_at = Some(now);
        tracing::debug!("offload: background threads are back in the idle class");
        Some(true)
    }

    /// Moves `tid` where the class is (after [`decide`](Self::decide), or
    /// when a thread joins). `false` if the OS refused: the guard stops.
    fn place(&mut self, tid: Tid, mover: &mut Mover<'_>) {
        if self.stuck {
            return;
        }
        match mover(tid, !self.fallen_back) {
            // Gone between the reading and now: ESRCH.
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                self.stuck = true;
                tracing::warn!(tid, error = %e, "offload: the OS refused to move a background thread between scheduling classes; background threads are no longer guarded");
            }
        }
    }
}

#[derive(Default)]
struct State {
    watches: HashMap<Tid, Watch>,
    class: Class,
    /// The machine's CPU times at the last tick.
    last_cpu: Option<CpuTimes>,
    /// Adopt every thread of the process but these (a worker process: its
    /// control thread stays out).
    whole_process_but: Option<Vec<Tid>>,
}

struct Guard {
    state: Mutex<State>,
    /// Signalled when the guard gets its first thread to watch.
    work: Condvar,
    /// The guard's own thread, never adopted.
    tid: Tid,
}

static GUARD: OnceLock<Option<&'static Guard>> = OnceLock::new();

/// Starts the guard's thread if it is not running. Call it before the
/// calling thread lowers itself: the guard inherits its creator's
/// priority. `false` if the OS refused the thread.
fn guard() -> Option<&'static Guard> {
    *GUARD.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("offload-guard".into())
            .spawn(move || {
                // Born of a background thread? Compete as an equal: the
                // guard must see starvation, not suffer it.
                let _ = sys::leave_idle_class();
                let guard: &'static Guard = Box::leak(Box::new(Guard {
                    state: Mutex::new(State::default()),
                    work: Condvar::new(),
                    tid: sys::current_tid(),
                }));
                let _ = tx.send(guard);
                guard.run();
            });
        match spawned {
            Ok(_) => rx.recv().ok(),
            Err(e) => {
                tracing::warn!(error = %e, "offload: cannot start the background threads' starvation guard; they run at nice +10");
                None
            }
        }
    })
}

impl Guard {
    fn run(&self) {
        let mut interval = TICK;
        loop {
            {
                let mut st = lock(&self.state);
                while st.watches.is_empty() && st.whole_process_but.is_none() {
                    interval = TICK;
                    st = wait(&self.work, st);
                }
            }
            std::thread::sleep(interval);
            interval = next_interval(interval, self.tick());
        }
    }

    /// One look at every thread. Under the lock, so that a registered
    /// thread cannot exit (and its id be reused) between reading and
    /// moving it. Returns whether there is anything to watch closely: a
    /// thread that wanted a core or is runnable, threads fallen back, or
    /// normal-priority work holding more than half of the machine (or no
    /// reading of it).
    fn tick(&self) -> bool {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if st.whole_process_but.is_some() {
            self.adopt_new_threads(st);
        }
        let mut shares = Vec::new();
        let mut runnable = false;
        st.watches.retain(|&tid, watch| match read_schedstat(tid) {
            Some(now) => {
                runnable |= now.runnable;
                if let Some(prev) = watch.last.replace(now) {
                    shares.extend(share(prev, now));
                }
                true
            }
            // An adopted thread that is gone; a registered one
            // deregisters itself.
            None => watch.origin == Origin::Registered,
        });
        let cpu = read_cpu_times();
        let normal_load = match (st.last_cpu, cpu) {
            (Some(prev), Some(now)) => normal_share(prev, now),
            _ => None,
        };
        st.last_cpu = cpu;
        if let Some(idle) = st.class.decide(&shares, normal_load, Instant::now()) {
            for &tid in st.watches.keys() {
                st.class.place(tid, &mut sys::set_idle_class_of);
            }
            export(idle);
        }
        runnable
            || !shares.is_empty()
            || st.class.fallen_back
            || normal_load.is_none_or(|l| l > NORMAL_LOAD_TO_RETURN)
    }

    fn adopt_new_threads(&self, st: &mut State) {
        let but = st.whole_process_but.as_deref().unwrap_or_default();
        let new: Vec<Tid> = threads_of_this_process()
            .filter(|tid| *tid != self.tid && !but.contains(tid) && !st.watches.contains_key(tid))
            .collect();
        for tid in new {
            st.class.place(tid, &mut sys::set_idle_class_of);
            st.watches.insert(
                tid,
                Watch {
                    origin: Origin::Adopted,
                    last: None,
                },
            );
        }
    }
}

/// Tells the `metrics` facade (feature `metrics`) that the background
/// threads went back to the idle class (`idle`) or left it.
fn export(idle: bool) {
    #[cfg(feature = "metrics")]
    {
        use crate::metrics_export::{BACKGROUND_FALLBACKS, BACKGROUND_FALLEN_BACK};
        if !idle {
            metrics::counter!(BACKGROUND_FALLBACKS).increment(1);
        }
        metrics::gauge!(BACKGROUND_FALLEN_BACK).set(if idle { 0.0 } else { 1.0 });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = idle;
}

/// The next look interval: [`TICK`] while there is something to watch,
/// else twice the last, up to [`QUIET_TICK_MAX`].
fn next_interval(last: Duration, busy: bool) -> Duration {
    if busy {
        TICK
    } else {
        (last * 2).min(QUIET_TICK_MAX)
    }
}

/// Whether background threads at nice level `nice` can be guarded here:
/// the kernel lets a thread at that level leave the idle class, and
/// `schedstat` is readable. Tried once per process (per level) on a
/// throwaway thread.
pub(super) fn available(nice: i32) -> bool {
    static TRIED: Mutex<Vec<(i32, bool)>> = Mutex::new(Vec::new());
    let mut tried = lock(&TRIED);
    if let Some(&(_, ok)) = tried.iter().find(|(n, _)| *n == nice) {
        return ok;
    }
    let probe = std::thread::Builder::new()
        .name("offload-probe".into())
        .spawn(move || {
            (sys::current_nice() == Some(nice) || sys::set_current_nice(nice).is_ok())
                && std::fs::read_to_string("/proc/thread-self/schedstat").is_ok()
                && sys::enter_idle_class().is_ok()
                && sys::leave_idle_class().is_ok()
        });
    let ok = probe.is_ok_and(|t| t.join().unwrap_or(false));
    if !ok {
        tracing::debug!(
            nice,
            "offload: background threads cannot leave the idle class here (CAP_SYS_NICE or RLIMIT_NICE); they run at nice +10 only"
        );
    }
    tried.push((nice, ok));
    ok
}

/// Keeps the calling thread under the guard until dropped; dropped on the
/// thread itself before it exits.
#[must_use]
pub(crate) struct Registration {
    tid: Tid,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A registration exists only once the guard runs.
        if let Some(guard) = GUARD.get().copied().flatten() {
            lock(&guard.state).watches.remove(&self.tid);
        }
    }
}

/// Starts the guard if needed; `false` if it could not be started. Call
/// before the calling thread lowers itself (see [`guard`]).
pub(super) fn start() -> bool {
    guard().is_some()
}

/// Puts the calling thread, already in the idle class, under the guard
/// (out of the class again at once if the guarded threads are fallen
/// back).
pub(super) fn register_current_thread() -> Option<Registration> {
    let guard = guard()?;
    let tid = sys::current_tid();
    let mut st = lock(&guard.state);
    if st.class.fallen_back {
        st.class.place(tid, &mut sys::set_idle_class_of);
    }
    st.watches.insert(
        tid,
        Watch {
            origin: Origin::Registered,
            last: None,
        },
    );
    guard.work.notify_one();
    Some(Registration { tid })
}

/// Puts the calling thread and every thread the process starts from now
/// on under the guard (a worker process, whose tasks may start threads of
/// their own); the threads that exist already, other than the caller (the
/// worker's control thread), stay out.
pub(super) fn adopt_process() -> bool {
    let Some(guard) = guard() else {
        return false;
    };
    let me = sys::current_tid();
    let others: Vec<Tid> = threads_of_this_process().filter(|&tid| tid != me).collect();
    lock(&guard.state).whole_process_but = Some(others);
    guard.work.notify_one();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, run_ms: u64, wait_ms: u64) -> Sample {
        Sample {
            at,
            run_ns: run_ms * 1_000_000,
            wait_ns: wait_ms * 1_000_000,
            runnable: false,
        }
    }

    #[test]
    fn shares() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(100);
        let start = sample(t0, 1_000, 1_000);
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        // Waited the whole tick, ran a third of a percent.
        assert!(near(share(start, sample(t1, 1_000, 1_100)), 0.0));
        // Shared a core fairly with a sibling.
        assert!(near(share(start, sample(t1, 1_050, 1_050)), 0.5));
        // Mostly asleep: not judged, however the little it wanted went.
        assert_eq!(share(start, sample(t1, 1_000, 1_010)), None);
        // A clock that did not move.
        assert_eq!(share(start, sample(t0, 1_000, 1_100)), None);
        // Runnable at both readings and hardly ran: starved, though the
        // kernel has not counted the wait yet (it does when the wait ends).
        let runnable = |s: Sample| Sample {
            runnable: true,
            ..s
        };
        assert!(near(
            share(runnable(start), runnable(sample(t1, 1_001, 1_000))),
            0.01
        ));
        // Runnable at one reading only: no more than what was counted
        // (here too little to judge).
        assert_eq!(share(start, runnable(sample(t1, 1_001, 1_000))), None);
    }

    #[test]
    fn one_starved_thread_takes_all_out_they_go_back_after_the_hold_and_hold_longer_on_relapse() {
        let mut at = Instant::now();
        let mut c = Class::default();
        let mut tick = |c: &mut Class, shares: &[f64]| {
            at += TICK;
            c.decide(shares, Some(0.1), at)
        };
        assert_eq!(tick(&mut c, &[1.0, 0.5]), None, "running freely");
        assert_eq!(tick(&mut c, &[]), None, "asleep");
        assert_eq!(tick(&mut c, &[1.0, 0.01]), Some(false), "one starved: out");
        // Free at once, but the first hold (200 ms) has not passed.
        assert_eq!(tick(&mut c, &[1.0]), None);
        assert_eq!(tick(&mut c, &[1.0]), Some(true), "back after the hold");
        // Starves again soon after: out, and the hold doubles.
        assert_eq!(tick(&mut c, &[0.0]), Some(false));
        assert_eq!(c.hold, FIRST_HOLD * 2);
        for _ in 0..3 {
            assert_eq!(tick(&mut c, &[1.0]), None, "held");
        }
        assert_eq!(tick(&mut c, &[1.0]), Some(true));
        // A relapse long after going back starts over from the first hold.
        for _ in 0..30 {
            assert_eq!(tick(&mut c, &[1.0]), None);
        }
        assert_eq!(tick(&mut c, &[0.0]), Some(false));
        assert_eq!(c.hold, FIRST_HOLD);
        // Still short of cores at nice +10 (a busy neighbour): stays out.
        for shares in [&[0.1][..], &[0.9, 0.3]] {
            for _ in 0..5 {
                assert_eq!(tick(&mut c, shares), None, "{shares:?}");
            }
        }
        assert!(c.fallen_back);
        // Its threads ran freely, but normal-priority work held most of
        // the machine (they slept between short jobs and were credited on
        // waking): stays out; so too when the machine's load is unknown.
        for load in [Some(0.9), Some(0.51), None] {
            at += TICK;
            assert_eq!(c.decide(&[1.0], load, at), None, "{load:?}");
        }
        // The machine is quiet and nothing of ours wanted a core: back.
        at += TICK;
        assert_eq!(c.decide(&[], Some(0.2), at), Some(true));
    }

    #[test]
    fn the_guard_looks_less_often_while_nothing_happens_and_at_once_again_when_it_does() {
        let mut i = TICK;
        let mut seen = vec![];
        for _ in 0..6 {
            i = next_interval(i, false);
            seen.push(i.as_millis());
        }
        assert_eq!(seen, [200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(next_interval(i, true), TICK);
    }

    #[test]
    fn the_hold_doubles_up_to_its_cap() {
        let mut at = Instant::now();
        let mut c = Class::default();
        for _ in 0..12 {
            at += TICK;
            assert_eq!(c.decide(&[0.0], Some(0.1), at), Some(false));
            let back = (0..200).any(|_| {
                at += TICK;
                c.decide(&[1.0], Some(0.1), at) == Some(true)
            });
            assert!(back, "back within the longest hold");
        }
        assert_eq!(c.hold, MAX_HOLD);
    }

    #[test]
    fn a_refused_move_stops_the_guard_and_a_gone_thread_does_not() {
        let mut c = Class::default();
        let mut asked = 0;
        let mut gone = |_: Tid, _: bool| {
            asked += 1;
            Err(std::io::Error::from_raw_os_error(libc::ESRCH))
        };
        c.place(1, &mut gone);
        assert!(!c.stuck);
        let mut refusing = |_: Tid, _: bool| {
            asked += 1;
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        };
        c.place(1, &mut refusing);
        assert!(c.stuck);
        c.place(2, &mut refusing);
        assert_eq!(asked, 2, "not asked again");
        assert_eq!(c.decide(&[0.0], Some(0.1), Instant::now()), None);
    }
}
