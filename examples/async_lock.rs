//! The async client: tasks of one program share one connection, take turns on a lock with
//! guards, give up a wait by dropping it (the server forgets the wait at once), and learn from
//! a guard that the server ended its grant (a lease not renewed).
//!
//! ```text
//! officer run &
//! cargo run --example async_lock -F tokio -- 127.0.0.1:11500
//! ```

use std::sync::Arc;
use std::time::Duration;

use officer::client::tokio::AsyncClient;
use officer::client::LockOptions;

fn main() -> Result<(), officer::client::Error> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "localhost:11500".to_owned());
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "11500"));
    let port: u16 = port.parse().unwrap_or(11500);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(host, port))
}

async fn run(host: &str, port: u16) -> Result<(), officer::client::Error> {
    let connect = || AsyncClient::builder().host(host).port(port).namespace("example").connect();
    // Locks belong to the connection: tasks sharing a client share its locks, so tasks that
    // must exclude each other use a client each (a process-wide lock needs only one).
    let mut workers = Vec::new();
    for worker in 0..3 {
        let client = connect().await?;
        workers.push(tokio::spawn(async move {
            let guard =
                client.lock_guard("report", LockOptions::with_timeout(Duration::from_secs(10))).await?;
            println!("worker {worker} holds {:?}, fencing token {}", guard.name(), guard.token());
            tokio::time::sleep(Duration::from_millis(50)).await;
            guard.unlock().await
        }));
    }
    for worker in workers {
        worker.await.expect("worker task")?;
    }

    // Many tasks on one connection: each locks its own name, all pipelined on one socket.
    let shared = Arc::new(connect().await?);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { shared.lock(&format!("item-{i}"), LockOptions::new()).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task")?;
    }
    println!("one connection holds {} locks", shared.my_locks().await?.held.len());
    shared.reset().await?;

    // Giving up a wait: dropping the future (here by a timeout) withdraws it on the server.
    let holder = connect().await?;
    let impatient = connect().await?;
    holder.try_lock("busy").await?;
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), impatient.lock("busy", LockOptions::new())).await;
    assert!(gave_up.is_err(), "the lock is held");
    println!("gave up waiting; still waiting for: {:?}", impatient.my_locks().await?.waiting);
    holder.unlock("busy").await?;

    // A lease the holder does not renew: the server ends the grant, and the guard's `lost()`
    // (a future to race the work against) says why.
    let leased = holder.lock_guard("leased", LockOptions::new().lease(Duration::from_millis(200))).await?;
    match leased.lost().await {
        Some(reason) => println!("the server ended the grant: {reason:?}"),
        None => println!("the connection went, and the lock with it"),
    }
    assert!(leased.is_lost());
    Ok(())
}
