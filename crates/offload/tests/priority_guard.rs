//! The starvation guard of `Priority::Background`: a background thread
//! lives in the idle scheduling class, leaves it when normal threads starve
//! it (a neighbour's CPU work), and goes back once they stop; its own
//! siblings never make it leave. Where the process may not take a thread
//! out of the idle class (unprivileged, `RLIMIT_NICE` 0), `Background` is
//! nice +10 alone.
//!
//! One binary of its own: the tests here load every core.
#![cfg(target_os = "linux")]

use std::time::Duration;

use offload::ThreadPool;
use offload_test_support::{
    Hogs, SCHED_IDLE, block_on, may_leave_idle_class, spin_until_policy, thread_nice, thread_policy,
};

/// How long a job spins waiting for the guard: generous, the guard looks
/// every 100 ms.
const PATIENCE: Duration = Duration::from_secs(30);

/// The tests of this file load the cores or measure shares: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `pool`'s threads are in the idle class: the guard's state
/// is the process's, and a test before may have left it fallen back (it
/// goes back once the machine is quiet and its hold has passed).
fn in_idle_class(pool: &ThreadPool) {
    let back = block_on(pool.run(|| spin_until_policy(SCHED_IDLE, PATIENCE))).unwrap();
    assert!(back.is_some(), "a background thread is in the idle class");
}

fn background_pool(threads: usize) -> ThreadPool {
    ThreadPool::builder()
        .name("guarded")
        .threads(threads)
        .build()
        .unwrap()
}

#[test]
fn a_starved_background_thread_competes_at_nice_ten_and_goes_back_when_the_load_ends() {
    let _serial = one_at_a_time();
    let pool = background_pool(1);
    if !may_leave_idle_class() {
        // The door out of the idle class is shut here: nice +10 alone.
        assert_eq!(block_on(pool.run(thread_policy)).unwrap(), Some(0));
        return;
    }
    in_idle_class(&pool);

    let hogs = Hogs::on_every_core();
    let out = block_on(pool.run(|| {
        (
            spin_until_policy(0, PATIENCE),
            // Still nice +10 once out of the idle class.
            thread_nice(),
        )
    }))
    .unwrap();
    drop(hogs);
    let waited = out.0.expect("the starved thread left the idle class");
    let base = thread_nice().unwrap();
    assert_eq!(out.1, Some((base + 10).min(19)));
    eprintln!("left the idle class after {waited:?} under load");

    let back = block_on(pool.run(|| spin_until_policy(SCHED_IDLE, PATIENCE))).unwrap();
    let back = back.expect("back in the idle class once the load ended");
    eprintln!("back in the idle class {back:?} after the load ended");
}

#[test]
fn a_sleeping_sibling_falls_back_with_the_starved_thread() {
    let _serial = one_at_a_time();
    if !may_leave_idle_class() {
        return;
    }
    let pool = background_pool(2);
    in_idle_class(&pool);
    let hogs = Hogs::on_every_core();
    let starved = pool.run(|| spin_until_policy(0, PATIENCE));
    // Asleep (it wants no core, so it is never judged itself) until the
    // starved one is out, then reads its own class.
    let sleeper = pool.run(|| {
        let start = std::time::Instant::now();
        while start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(50));
            if thread_policy() == Some(0) {
                return Some(start.elapsed());
            }
        }
        None
    });
    let (starved, sleeper) = block_on(futures::future::join(starved, sleeper));
    drop(hogs);
    assert!(
        starved.unwrap().is_some(),
        "the starved thread left the idle class"
    );
    assert!(
        sleeper.unwrap().is_some(),
        "its sleeping sibling left with it"
    );
}

#[test]
fn siblings_sharing_the_cores_do_not_make_a_thread_leave_the_idle_class() {
    let _serial = one_at_a_time();
    if !may_leave_idle_class() {
        return;
    }
    // Twice as many busy background threads as cores, and nothing else:
    // each gets half of what it wants, not starved.
    let cores = std::thread::available_parallelism().unwrap().get();
    let pool = background_pool(2 * cores);
    in_idle_class(&pool);
    let jobs: Vec<_> = (0..2 * cores)
        .map(|_| pool.run(|| spin_until_policy(0, Duration::from_millis(1500))))
        .collect();
    for left in block_on(futures::future::join_all(jobs)) {
        assert_eq!(left.unwrap(), None, "a thread left the idle class");
    }
}

/// Runs this binary again without `CAP_SYS_NICE` (as a container would),
/// only the child half below.
#[test]
fn without_cap_sys_nice_background_is_nice_ten_alone() {
    let _serial = one_at_a_time();
    if !may_leave_idle_class() {
        // Already unprivileged: the first test covered it.
        return;
    }
    if std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("CapEff:") && l.trim().ends_with("0000000000000000"))
    {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let spawned = std::process::Command::new("setpriv")
        .args(["--bounding-set=-sys_nice", "--inh-caps=-sys_nice", "--"])
        .arg(exe)
        .args(["--exact", "unprivileged_child", "--nocapture"])
        .env("OFFLOAD_GUARD_TEST_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = spawned.expect(
        "`setpriv` runs this test without CAP_SYS_NICE; install it with `apt-get install util-linux`",
    );
    let status = offload_test_support::wait_bounded(&mut child, Duration::from_secs(60))
        .expect("the child test finished in time");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("policy=0 nice_step=10"), "{out}");
}

/// The child half of the test above (does nothing in a normal run).
#[test]
fn unprivileged_child() {
    if std::env::var_os("OFFLOAD_GUARD_TEST_CHILD").is_none() {
        return;
    }
    assert!(!may_leave_idle_class(), "setpriv dropped CAP_SYS_NICE");
    let base = thread_nice().unwrap();
    let pool = background_pool(1);
    let (policy, nice) = block_on(pool.run(|| (thread_policy(), thread_nice()))).unwrap();
    println!(
        "policy={} nice_step={}",
        policy.unwrap(),
        nice.unwrap() - base
    );
}
