//! The control channel and environment of worker processes: what another
//! user or process could reach, and what a worker is given.
//! See `crates/offload/src/proc/SECURITY.md`.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use common::{block, fixture};
use offload_tests::{EnvVars, OpenFds, Sockets, Sum};

/// Unix socket files directly under `dir`.
fn sockets_in(dir: &Path) -> BTreeSet<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                e.file_type().ok()?.is_socket().then(|| e.path())
            })
            .collect()
        })
        .unwrap_or_default()
}

/// This process's open descriptors and their targets.
fn open_fds() -> std::collections::BTreeMap<u32, String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, target.to_string_lossy().into_owned()))
            })
            .collect()
        })
        .unwrap_or_default()
}

#[test]
fn smoke() {
    let pool = fixture().workers(1).build().unwrap();
    assert_eq!(block(pool.call::<Sum>(vec![1, 2])).unwrap(), 3);
}

#[test]
fn the_channels_are_unnamed_private_sockets() {
    let cwd = std::env::current_dir().unwrap();
    let tmp = std::env::temp_dir();
    let before = (sockets_in(&cwd), sockets_in(&tmp));
    let pool = fixture().workers(2).build().unwrap();
    for _ in 0..2 {
        // The worker's channels are Unix sockets bound to no path: only a
        // process that was handed them can talk to the worker. Its fd 0
        // is /dev/null, so a subprocess of a task inherits nothing of them.
        let (stdin, sockets) = block(pool.call::<Sockets>(())).unwrap();
        assert_eq!(stdin, "/dev/null");
        assert!(!sockets.is_empty());
        assert!(
            sockets.iter().all(|(fd, path)| *fd > 2 && path.is_empty()),
            "{sockets:?}"
        );
        // The worker holds stdin (/dev/null), stdout and stderr (pipes to
        // its parent), and nothing else of its parent's: not the other
        // workers' channels, not the parent's files.
        let fds = block(pool.call::<OpenFds>(())).unwrap();
        let std_fds: Vec<_> = fds.iter().filter(|(fd, _)| *fd <= 2).collect();
        assert_eq!(std_fds.len(), 3, "{fds:?}");
        assert_eq!(std_fds[0].1, "/dev/null", "{fds:?}");
        assert!(std_fds[1].1.starts_with("pipe:["), "{fds:?}");
        assert!(std_fds[2].1.starts_with("pipe:["), "{fds:?}");
        // Beyond 0-2: the worker's own channels, the directory handle used
        // to list them, and descriptors that this test process itself
        // inherited without close-on-exec from whoever started it (std
        // passes those to every child; see SECURITY.md). Nothing that
        // offload opened in the parent: the parent's ends of the channels
        // are close-on-exec.
        let ours = open_fds();
        let channels: BTreeSet<u32> = sockets.iter().map(|(fd, _)| *fd).collect();
        let others: Vec<_> = fds
            .iter()
            .filter(|(fd, t)| {
                *fd > 2
                    && !channels.contains(fd)
                    && !t.starts_with("/proc/")
                    && ours.get(fd) != Some(t)
            })
            .collect();
        assert!(
            others.is_empty(),
            "descriptors leaked into the worker: {fds:?}"
        );
    }
    // No socket file appeared in the working directory or the temp dir.
    let after = (sockets_in(&cwd), sockets_in(&tmp));
    assert!(after.0.is_subset(&before.0), "{:?}", after.0);
    assert!(after.1.is_subset(&before.1), "{:?}", after.1);
}

#[test]
fn workers_inherit_the_environment_by_default() {
    let pool = fixture().workers(1).build().unwrap();
    let theirs = block(pool.call::<EnvVars>(())).unwrap();
    for (k, v) in std::env::vars() {
        assert!(
            theirs.iter().any(|(tk, tv)| *tk == k && *tv == v),
            "{k} not inherited"
        );
    }
}

#[test]
fn env_clear_with_gives_exactly_the_listed_variables() {
    let pool = fixture()
        .workers(1)
        .env_clear_with([("ONLY_THIS", "1")])
        .build()
        .unwrap();
    let theirs = block(pool.call::<EnvVars>(())).unwrap();
    let names: Vec<&str> = theirs.iter().map(|(k, _)| k.as_str()).collect();
    // The listed variable plus the one offload sets for the worker (its
    // settings travel on its channel, not in the environment).
    assert_eq!(names, ["OFFLOAD_PROC_WORKER", "ONLY_THIS"], "{theirs:?}");
    assert!(theirs.contains(&("ONLY_THIS".into(), "1".into())));
}
