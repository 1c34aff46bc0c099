//! The seed's `io.py` in Rust: a ticker prints the time every second while a
//! worker makes blocking HTTP GETs in a loop, inline or offloaded.
//!
//! ```text
//! cargo run -p offload --example io -- blocking  # one tick, then silence: the loop is blocked
//! cargo run -p offload --example io -- thread    # a tick every second, twice the requests: offload::ThreadPool
//! cargo run -p offload --example io -- default   # the same with offload::run (the `None` executor)
//! ```
//!
//! The seed GETs `https://docs.python.org/3/`; to run offline, this example
//! starts its own service on 127.0.0.1 that answers after 300 ms. The loop
//! is a current-thread runtime: one thread, like asyncio's event loop.
//! (`offload-lab io` measures the same experiment instead of printing it.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long the example runs.
const RUN_FOR: Duration = Duration::from_secs(5);

/// The seed's `blocking_task`: a blocking HTTP GET, read to the end.
fn blocking_task(addr: SocketAddr) -> usize {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = Vec::new();
    conn.read_to_end(&mut response).expect("receive");
    response.len()
}

/// `while True: blocking_task()`: never awaits, so nothing else runs.
async fn blocking_worker(addr: SocketAddr, until: Instant) -> u32 {
    let mut n = 0;
    while Instant::now() < until {
        blocking_task(addr);
        n += 1;
    }
    n
}

/// `await loop.run_in_executor(pool, blocking_task)` in a loop: on `pool`,
/// or on the default pool (the seed's `None` executor) if there is none.
async fn async_thread_worker(
    pool: Option<&offload::ThreadPool>,
    addr: SocketAddr,
    until: Instant,
) -> u32 {
    let mut n = 0;
    while Instant::now() < until {
        match pool {
            Some(pool) => pool.run(move || blocking_task(addr)).await,
            None => offload::run(move || blocking_task(addr)).await,
        }
        .expect("the GET panicked");
        n += 1;
    }
    n
}

/// The seed's `ticker`: prints the time every second.
async fn ticker(start: Instant) {
    loop {
        println!("tick at {:>6.3} s", start.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A slow service: answers every request after 300 ms, one thread each.
fn start_slow_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
            });
        }
    });
    addr
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "thread".into());
    let addr = start_slow_service();
    let start = Instant::now();
    let until = start + RUN_FOR;
    tokio::spawn(ticker(start));
    tokio::task::yield_now().await; // let the ticker print its first line
    let requests = match mode.as_str() {
        "blocking" => blocking_worker(addr, until).await,
        // Two workers share the pool, so two GETs wait at once: twice the
        // requests of `blocking`, and the ticker keeps time.
        "thread" => {
            let pool = offload::ThreadPool::builder()
                .name("io")
                .threads(2)
                .build()
                .expect("pool");
            let (a, b) = tokio::join!(
                async_thread_worker(Some(&pool), addr, until),
                async_thread_worker(Some(&pool), addr, until)
            );
            a + b
        }
        "default" => {
            let (a, b) = tokio::join!(
                async_thread_worker(None, addr, until),
                async_thread_worker(None, addr, until)
            );
            a + b
        }
        "process" => return eprintln!("process pool: not built yet"),
        other => return eprintln!("unknown mode {other:?}: use blocking, thread or default"),
    };
    println!(
        "{mode}: {requests} requests in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
