//! One program, three roles: a local `nats-server`, two workers, a caller.
//!
//! ```text
//! cargo run -p offload-nats --example word_count
//! ```
//!
//! It starts a throwaway `nats-server` (see `LocalServer`), runs two
//! workers (this program again, `--worker URL`), and counts words through
//! them in each delivery mode. On real machines, run the workers with
//! `--worker nats://your-server:4222` on each one.

use std::time::{Duration, Instant};

use offload::proc::{Registry, Task};
use offload_nats::{LocalServer, Mode, RemotePool, Worker};

/// Counts the words of a text.
struct WordCount;
impl Task for WordCount {
    const NAME: &'static str = "word_count";
    type Input = String;
    type Output = usize;
    fn run(text: String) -> usize {
        text.split_whitespace().count()
    }
}

fn registry() -> Registry {
    Registry::new().with::<WordCount>()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    offload::proc::run_worker_if_child(&registry()); // first line of main
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args: Vec<String> = std::env::args().collect();
    if let Some(url) = args
        .iter()
        .position(|a| a == "--worker")
        .and_then(|i| args.get(i + 1))
    {
        // A worker: serves until SIGTERM (or until its parent kills it).
        return Ok(rt.block_on(
            Worker::builder()
                .url(url.as_str())
                .registry(registry())
                .processes(1)
                .serve(),
        )?);
    }

    let server = LocalServer::start()?;
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(
            std::process::Command::new(std::env::current_exe()?)
                .args(["--worker", &server.url()])
                .spawn()?,
        );
    }
    let outcome = rt.block_on(async {
        for mode in [Mode::Direct, Mode::Durable] {
            let pool = RemotePool::builder()
                .url(server.url())
                .mode(mode)
                .build()
                .await?;
            // The workers may still be starting: "no workers" is retryable.
            let started = Instant::now();
            let n = loop {
                match pool.call::<WordCount>("to be or not to be".into()).await {
                    Err(e) if e.is_no_workers() && started.elapsed() < Duration::from_secs(20) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => break other?,
                }
            };
            println!("{mode:?}: {n} words");
            pool.shutdown().await;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    outcome
}
