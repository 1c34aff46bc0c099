//! A worker program that breaks the protocol on purpose, one way per mode
//! (first argument), to test that the pool turns each into a typed error
//! and never hangs or panics.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A well-formed hello (protocol 1) announcing the task `sum`, encoded by
/// hand: magic, version, then postcard of `{ build, tasks, pid }`.
fn valid_hello() -> Vec<u8> {
    let mut p = b"OFLD".to_vec();
    p.extend_from_slice(&1u32.to_le_bytes());
    p.push(5);
    p.extend_from_slice(b"rogue");
    p.push(1);
    p.push(3);
    p.extend_from_slice(b"sum");
    p.push(1);
    frame(&p)
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
    let fd = std::io::stdin().as_fd().try_clone_to_owned().expect("fd 0");
    let mut s = UnixStream::from(fd);
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
