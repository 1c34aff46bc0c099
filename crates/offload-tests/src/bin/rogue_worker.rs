//! A worker program that breaks the protocol on purpose, one way per mode
//! (first argument), to test that the pool turns each into a typed error
//! and never hangs or panics. If `ROGUE_LOG` names a file, each start
//! appends a line to it (to count how often the pool starts it).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A postcard varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A well-formed hello (protocol 2) announcing the task `sum` with its
/// real fingerprint, encoded by hand: magic, version, then postcard of
/// `{ build, tasks: [{ name, fingerprint }], pid }`.
fn valid_hello() -> Vec<u8> {
    let mut p = b"OFLD".to_vec();
    p.extend_from_slice(&2u32.to_le_bytes());
    p.push(5);
    p.extend_from_slice(b"rogue");
    p.push(1);
    p.push(3);
    p.extend_from_slice(b"sum");
    varint(offload::proc::fingerprint::<offload_tests::Sum>(), &mut p);
    p.push(1);
    frame(&p)
}

/// Writes `bytes` one at a time, `gap` apart (a worker that trickles).
fn trickle(s: &mut UnixStream, bytes: &[u8], gap: Duration) {
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            std::process::exit(0);
        }
        std::thread::sleep(gap);
    }
}

fn read_call(s: &mut UnixStream) {
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        std::process::exit(0);
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    let _ = s.read_exact(&mut body);
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if let Some(log) = std::env::var_os("ROGUE_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let _ = writeln!(f, "{}", std::process::id());
    }
    let fd = std::io::stdin().as_fd().try_clone_to_owned().expect("fd 0");
    let mut s = UnixStream::from(fd);
    // The first byte carries the control channel (its descriptor is
    // dropped by a plain read, which is all a rogue needs).
    let mut tag = [0u8; 1];
    let _ = s.read_exact(&mut tag);
    // Then the parent's settings frame, written at spawn. Read here, so
    // that the first frame the modes below read is the call: a rogue that
    // took the settings for its call answered (and exited) before the
    // call was written, and the call found its worker gone instead.
    read_call(&mut s);
    match mode.as_str() {
        "wrong-version" => {
            let mut p = b"OFLD".to_vec();
            p.extend_from_slice(&999u32.to_le_bytes());
            p.extend_from_slice(b"whatever");
            let _ = s.write_all(&frame(&p));
        }
        "garbage-hello" => {
            let _ = s.write_all(&frame(b"HTTP/1.1 200 OK\r\n"));
        }
        "oversized-hello" => {
            let _ = s.write_all(&0xFFFF_FFF0u32.to_le_bytes());
        }
        "silent" => {}
        "die-at-start" => std::process::exit(3),
        "bad-reply" => {
            let _ = s.write_all(&valid_hello());
            read_call(&mut s);
            let _ = s.write_all(&frame(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
        }
        "oversized-reply" => {
            let _ = s.write_all(&valid_hello());
            read_call(&mut s);
            let _ = s.write_all(&0x7FFF_FFFFu32.to_le_bytes());
        }
        "trickle-hello" => {
            let hello = valid_hello();
            trickle(&mut s, &hello, Duration::from_millis(100));
        }
        "trickle-reply" => {
            let _ = s.write_all(&valid_hello());
            read_call(&mut s);
            // A reply of 200 bytes at 10 bytes a second: 20 s in all.
            let _ = s.write_all(&200u32.to_le_bytes());
            trickle(&mut s, &[0u8; 200], Duration::from_millis(100));
        }
        "truncated-reply" => {
            let _ = s.write_all(&valid_hello());
            read_call(&mut s);
            let _ = s.write_all(&100u32.to_le_bytes());
            let _ = s.write_all(b"short");
            std::process::exit(0);
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
    // Linger (bounded) so the parent sees the bad bytes, not just an exit.
    std::thread::sleep(Duration::from_secs(30));
}
