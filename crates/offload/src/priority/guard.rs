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
//! one):
//!
//! - a thread that wanted a core for at least [`MIN_DEMAND`] of the tick and
//!   got less than [`STARVED`] of what it wanted *falls back*: it leaves the
//!   idle class and competes at its nice level (+10: a tenth of a normal
//!   thread's weight), the old `Background`;
//! - a fallen-back thread that gets at least [`FREE`] of what it wants goes
//!   back to the idle class once its hold has passed. The hold starts at
//!   [`FIRST_HOLD`] and doubles (up to [`MAX_HOLD`]) each time the thread
//!   starves again soon after going back, so a load that only a nice +10
//!   thread can beat (a neighbour at nice 19) does not make it flap.
//!
//! Other idle-class threads (the pool's own, more threads than cores) do
//! not starve each other: they share fairly, each getting a share of what
//! it wants far above [`STARVED`] unless there are five times more of
//! them than cores.
//!
//! Leaving the idle class needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that
//! allows the thread's nice level: a one-way door for most unprivileged
//! programs. [`available`] tries the door once per process on a throwaway
//! thread; where it is shut, `Background` is nice +10 alone.
//!
//! Thread pools register each thread ([`register_current_thread`]); a
//! worker process asks the guard to adopt every idle-class thread of the
//! process ([`adopt_process`]), so that threads a task starts are guarded
//! too.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::sys::{self, Tid};
use crate::sync::{lock, wait};

/// How often the guard looks at its threads.
const TICK: Duration = Duration::from_millis(100);
/// A thread that wanted a core for less than this share of a tick is not
/// judged (it mostly slept).
const MIN_DEMAND: f64 = 0.25;
/// An idle-class thread that got less than this share of the time it
/// wanted a core is starved.
const STARVED: f64 = 0.2;
/// A fallen-back thread that gets at least this share of what it wants
/// may go back to the idle class.
const FREE: f64 = 0.5;
/// How long a thread stays fallen back at first.
const FIRST_HOLD: Duration = Duration::from_millis(200);
/// The longest hold.
const MAX_HOLD: Duration = Duration::from_secs(10);
/// Starving again within this time of going back doubles the hold.
const RELAPSE: Duration = Duration::from_secs(2);

/// One reading of a thread's `schedstat`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// Nanoseconds on a core.
    run_ns: u64,
    /// Nanoseconds runnable, waiting for a core. The kernel adds a wait
    /// when the wait ends (the thread gets a core), so a thread starved
    /// for a whole tick may show none yet: hence `runnable`.
    wait_ns: u64,
    /// Running or waiting for a core at the reading (state `R`).
    runnable: bool,
}

/// What a tick says of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It wanted a core and got less than [`STARVED`] of it.
    Starved,
    /// It wanted a core and got at least [`FREE`] of it.
    Free,
    /// Neither, or it hardly wanted a core.
    Unclear,
}

fn judge(prev: Sample, now: Sample) -> Verdict {
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
    if span <= 0.0 || wanted < MIN_DEMAND * span {
        return Verdict::Unclear;
    }
    let share = run / wanted;
    if share < STARVED {
        Verdict::Starved
    } else if share >= FREE {
        Verdict::Free
    } else {
        Verdict::Unclear
    }
}

/// How the guard got a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A pool thread registered itself; it deregisters before it exits.
    Registered,
    /// Found in the idle class of a guarded worker process.
    Adopted,
}

/// Moves thread `tid` into (`true`) or out of the idle class.
type Mover<'a> = dyn FnMut(Tid, bool) -> std::io::Result<()> + 'a;

/// The guard's view of one thread.
#[derive(Debug)]
struct Watch {
    origin: Origin,
    last: Option<Sample>,
    fallen_back: bool,
    /// A fallen-back thread goes back no earlier than this.
    hold_until: Instant,
    /// The length of the next hold.
    hold: Duration,
    /// When it last went back to the idle class.
    returned_at: Option<Instant>,
    /// The OS refused to move it: no longer judged.
    stuck: bool,
}

impl Watch {
    fn new(origin: Origin) -> Self {
        Watch {
            origin,
            last: None,
            fallen_back: false,
            hold_until: Instant::now(),
            hold: FIRST_HOLD,
            returned_at: None,
            stuck: false,
        }
    }

    /// Moves the thread (through `mover`: the system call, or a test's
    /// record) if the tick says so.
    fn look(&mut self, tid: Tid, now: Sample, mover: &mut Mover<'_>) {
        let Some(prev) = self.last.replace(now) else {
            return;
        };
        if self.stuck {
            return;
        }
        match (judge(prev, now), self.fallen_back) {
            (Verdict::Starved, false) => {
                let relapse = self
                    .returned_at
                    .is_some_and(|t| now.at.saturating_duration_since(t) < RELAPSE);
                self.hold = if relapse {
                    (self.hold * 2).min(MAX_HOLD)
                } else {
                    FIRST_HOLD
                };
                if self.moved(tid, false, mover) {
                    self.fallen_back = true;
                    self.hold_until = now.at + self.hold;
                    tracing::debug!(tid, hold = ?self.hold, "offload: a background thread starved in the idle class; it competes at its nice level");
                }
            }
            (Verdict::Free, true) if now.at >= self.hold_until && self.moved(tid, true, mover) => {
                self.fallen_back = false;
                self.returned_at = Some(now.at);
                tracing::debug!(
                    tid,
                    "offload: a background thread is back in the idle class"
                );
            }
            _ => {}
        }
    }

    fn moved(&mut self, tid: Tid, idle: bool, mover: &mut Mover<'_>) -> bool {
        match mover(tid, idle) {
            Ok(()) => true,
            // Gone between the reading and now.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => false,
            Err(e) => {
                self.stuck = true;
                tracing::warn!(tid, error = %e, "offload: the OS refused to move a background thread between scheduling classes; it is no longer guarded");
                false
            }
        }
    }
}

#[derive(Default)]
struct State {
    watches: HashMap<Tid, Watch>,
    /// Adopt every idle-class thread of the process (a worker process).
    whole_process: bool,
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
        loop {
            {
                let mut st = lock(&self.state);
                while st.watches.is_empty() && !st.whole_process {
                    st = wait(&self.work, st);
                }
            }
            std::thread::sleep(TICK);
            self.tick();
        }
    }

    /// One look at every thread. Under the lock, so that a registered
    /// thread cannot exit (and its id be reused) between reading and
    /// moving it.
    fn tick(&self) {
        let mut st = lock(&self.state);
        if st.whole_process {
            self.adopt_new_threads(&mut st);
        }
        st.watches.retain(|&tid, watch| match read_schedstat(tid) {
            Some(sample) => {
                watch.look(tid, sample, &mut sys::set_idle_class_of);
                true
            }
            // An adopted thread that is gone; a registered one
            // deregisters itself.
            None => watch.origin == Origin::Registered,
        });
    }

    fn adopt_new_threads(&self, st: &mut State) {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for tid in dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<Tid>().ok())
        {
            if tid != self.tid
                && !st.watches.contains_key(&tid)
                && sys::in_idle_class(tid) == Some(true)
            {
                st.watches.insert(tid, Watch::new(Origin::Adopted));
            }
        }
    }
}

/// `/proc/self/task/<tid>/schedstat` (time on a core, time waiting for
/// one, in nanoseconds; slices) and the state in `.../stat`.
fn read_schedstat(tid: Tid) -> Option<Sample> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may
    // hold anything.
    let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(Sample {
        at: Instant::now(),
        run_ns: fields.next()??,
        wait_ns: fields.next()??,
        runnable: state == "R",
    })
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
        if let Some(guard) = guard() {
            lock(&guard.state).watches.remove(&self.tid);
        }
    }
}

/// Starts the guard if needed; `false` if it could not be started. Call
/// before the calling thread lowers itself (see [`guard`]).
pub(super) fn start() -> bool {
    guard().is_some()
}

/// Puts the calling thread, already in the idle class, under the guard.
pub(super) fn register_current_thread() -> Option<Registration> {
    let guard = guard()?;
    let tid = sys::current_tid();
    let mut st = lock(&guard.state);
    st.watches.insert(tid, Watch::new(Origin::Registered));
    guard.work.notify_one();
    Some(Registration { tid })
}

/// Puts every idle-class thread of this process, now and later, under the
/// guard (a worker process, whose tasks may start threads of their own).
pub(super) fn adopt_process() -> bool {
    let Some(guard) = guard() else {
        return false;
    };
    lock(&guard.state).whole_process = true;
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
    fn verdicts() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(100);
        let start = sample(t0, 1_000, 1_000);
        // Waited the whole tick, ran a third of a percent: starved.
        assert_eq!(judge(start, sample(t1, 1_000, 1_100)), Verdict::Starved);
        // Shared a core fairly with a sibling: fine.
        assert_eq!(judge(start, sample(t1, 1_050, 1_050)), Verdict::Free);
        // Three idle siblings per core: a third each, not starved.
        assert_eq!(judge(start, sample(t1, 1_033, 1_067)), Verdict::Unclear);
        // Mostly asleep: not judged, however the little it wanted went.
        assert_eq!(judge(start, sample(t1, 1_000, 1_010)), Verdict::Unclear);
        // A clock that did not move.
        assert_eq!(judge(start, sample(t0, 1_000, 1_100)), Verdict::Unclear);
        // Runnable at both readings and hardly ran: starved, though the
        // kernel has not counted the wait yet (it does when the wait ends).
        let runnable = |s: Sample| Sample {
            runnable: true,
            ..s
        };
        assert_eq!(
            judge(runnable(start), runnable(sample(t1, 1_001, 1_000))),
            Verdict::Starved
        );
        // Runnable at one reading only: no more than what was counted.
        assert_eq!(
            judge(start, runnable(sample(t1, 1_001, 1_000))),
            Verdict::Unclear
        );
        // Runnable at both, ran half the tick: sharing, not starved.
        assert_eq!(
            judge(runnable(start), runnable(sample(t1, 1_050, 1_000))),
            Verdict::Free
        );
    }

    /// Feeds `watch` one tick in which the thread ran `run_ms` and waited
    /// `wait_ms`; returns the moves asked for.
    fn tick(watch: &mut Watch, at: &mut Instant, run_ms: u64, wait_ms: u64) -> Vec<bool> {
        let last = watch.last.unwrap_or(sample(*at, 0, 0));
        *at += TICK;
        let mut moves = Vec::new();
        let mut mover = |_: Tid, idle: bool| {
            moves.push(idle);
            Ok(())
        };
        let next = Sample {
            at: *at,
            run_ns: last.run_ns + run_ms * 1_000_000,
            wait_ns: last.wait_ns + wait_ms * 1_000_000,
            runnable: false,
        };
        watch.look(1, next, &mut mover);
        moves
    }

    #[test]
    fn a_starved_thread_falls_back_goes_back_after_its_hold_and_holds_longer_on_relapse() {
        let mut at = Instant::now();
        let mut w = Watch::new(Origin::Registered);
        assert!(tick(&mut w, &mut at, 100, 0).is_empty(), "first reading");
        assert!(tick(&mut w, &mut at, 100, 0).is_empty(), "running freely");
        assert_eq!(tick(&mut w, &mut at, 0, 100), vec![false], "starved: out");
        assert!(w.fallen_back);
        // Free at once, but the first hold (200 ms) has not passed.
        assert!(tick(&mut w, &mut at, 100, 0).is_empty());
        assert_eq!(
            tick(&mut w, &mut at, 100, 0),
            vec![true],
            "back after the hold"
        );
        // Starves again soon after: out, and the hold doubles.
        assert_eq!(tick(&mut w, &mut at, 0, 100), vec![false]);
        assert_eq!(w.hold, FIRST_HOLD * 2);
        for _ in 0..3 {
            assert!(tick(&mut w, &mut at, 100, 0).is_empty(), "held");
        }
        assert_eq!(tick(&mut w, &mut at, 100, 0), vec![true]);
        // A relapse long after going back starts over from the first hold.
        for _ in 0..30 {
            assert!(tick(&mut w, &mut at, 100, 0).is_empty());
        }
        assert_eq!(tick(&mut w, &mut at, 0, 100), vec![false]);
        assert_eq!(w.hold, FIRST_HOLD);
        // Still starved at nice +10 (a busy neighbour): stays out.
        for _ in 0..10 {
            assert!(tick(&mut w, &mut at, 9, 91).is_empty());
        }
        assert!(w.fallen_back);
    }

    #[test]
    fn the_hold_doubles_up_to_its_cap() {
        let mut at = Instant::now();
        let mut w = Watch::new(Origin::Registered);
        tick(&mut w, &mut at, 100, 0);
        for _ in 0..12 {
            assert_eq!(tick(&mut w, &mut at, 0, 100), vec![false]);
            let back = (0..200).any(|_| tick(&mut w, &mut at, 100, 0).contains(&true));
            assert!(back, "back within the longest hold");
        }
        assert_eq!(w.hold, MAX_HOLD);
    }

    #[test]
    fn a_thread_the_os_will_not_move_is_left_alone() {
        let mut at = Instant::now();
        let mut w = Watch::new(Origin::Registered);
        tick(&mut w, &mut at, 100, 0);
        at += TICK;
        let mut asked = 0;
        let mut refusing = |_: Tid, _: bool| {
            asked += 1;
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        };
        let last = w.last.unwrap();
        let starved = Sample {
            at,
            run_ns: last.run_ns,
            wait_ns: last.wait_ns + 100_000_000,
            runnable: false,
        };
        w.look(1, starved, &mut refusing);
        assert!(w.stuck && !w.fallen_back);
        let later = Sample {
            at: at + TICK,
            run_ns: last.run_ns,
            wait_ns: last.wait_ns + 200_000_000,
            runnable: false,
        };
        w.look(1, later, &mut refusing);
        assert_eq!(asked, 1, "not asked again");
    }
}
