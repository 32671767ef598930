//! `with_lock`: four workers, each with its own client, take turns in a critical section.
//!
//! Start a server, then run the example (the address defaults to localhost:11500):
//!
//! ```text
//! officer run &
//! cargo run --example with_lock -- 127.0.0.1:11500
//! ```
//!
//! Each worker does a read-modify-write of a shared counter with a pause in the middle, which
//! would lose updates without the lock. The final count shows none were lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use officer::client::{Client, LockOptions};

const WORKERS: u64 = 4;
const ROUNDS: u64 = 25;

fn main() -> Result<(), officer::client::Error> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "localhost:11500".to_owned());
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "11500"));
    let port: u16 = port.parse().unwrap_or(11500);

    let counter = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let counter = Arc::clone(&counter);
            // Locks belong to a connection: one client per worker makes them exclude each other.
            let client = Client::builder().host(host).port(port).namespace("example").connect();
            thread::spawn(move || -> Result<(), officer::client::Error> {
                let client = client?;
                for _ in 0..ROUNDS {
                    client.with_lock(
                        "counter",
                        LockOptions::with_timeout(Duration::from_secs(30)),
                        || {
                            let seen = counter.load(Ordering::SeqCst);
                            thread::sleep(Duration::from_micros(200)); // widen the race window
                            counter.store(seen + 1, Ordering::SeqCst);
                            // Nested with_lock on the same name runs at once and does not unlock.
                            client.with_lock("counter", LockOptions::new(), || ()).expect("nested");
                        },
                    )?;
                }
                println!("worker {id} done");
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker panicked")?;
    }
    let total = counter.load(Ordering::SeqCst);
    println!("counter = {total} (expected {})", WORKERS * ROUNDS);
    assert_eq!(total, WORKERS * ROUNDS);
    Ok(())
}
