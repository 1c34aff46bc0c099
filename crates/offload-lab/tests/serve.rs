//! `offload-lab serve`: prints its URL, answers a GET, and dies when killed.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn smoke_serve_answers_a_get() {
    let mut child = lab()
        .args(["serve", "--latency", "10ms", "--duration", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn offload-lab serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let result = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|e| format!("no URL on stdout: {e}"))
        .and_then(|line| get(&line));
    let _ = child.kill();
    let _ = wait_bounded(&mut child, Duration::from_secs(10));
    let response = result.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("slow service"), "{response}");
}

/// One GET of the URL printed by `serve`, e.g. `http://127.0.0.1:4321/`.
fn get(url_line: &str) -> Result<String, String> {
    let port: u16 = url_line
        .trim()
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("bad URL line {url_line:?}: {e}"))?;
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    c.read_to_string(&mut response).map_err(|e| e.to_string())?;
    Ok(response)
}
