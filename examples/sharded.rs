//! `ShardedClient`: spread lock names over several servers. Each name lives on exactly one
//! server (rendezvous hashing), so a client with the list in another order agrees; listings ask
//! every server and merge; a server that is down fails only its own names.
//!
//! ```text
//! for p in 11501 11502 11503; do officer run -p $p --state-file /tmp/officer-$p.state & done
//! cargo run --example sharded -- 127.0.0.1:11501 127.0.0.1:11502 127.0.0.1:11503
//! ```

use officer::client::{LockOptions, ShardedClient};

fn main() -> Result<(), officer::client::Error> {
    let mut servers: Vec<String> = std::env::args().skip(1).collect();
    if servers.is_empty() {
        servers = (11501..=11503).map(|port| format!("localhost:{port}")).collect();
    }
    // Connects to every server now; one that is down does not fail the client.
    let client = ShardedClient::builder().servers(&servers).namespace("example").connect()?;

    // Another process with the list in a different order places every name the same way.
    servers.reverse();
    let rival = ShardedClient::builder().servers(&servers).namespace("example").connect()?;

    for name in ["invoices", "reports", "reindex", "backup"] {
        match client.try_lock(name) {
            // Fencing tokens compare only between grants of the same name (same server).
            Ok(lock) => println!("{name}: held on {} with token {}", client.server_for(name), lock.token()),
            // A down server fails only its own names, and the error names it.
            Err(e) => println!("{name}: {e} (server {:?})", e.server_address()),
        }
        if let Err(refused) = rival.try_lock(name) {
            println!("  rival refused: {refused}");
        }
    }

    // Listings ask every server and come back as one, sorted by name.
    match client.locks() {
        Ok(locks) => {
            for lock in locks.iter() {
                println!(
                    "listed {} on {}, holder {:?}",
                    lock.name,
                    client.server_for(&lock.name),
                    lock.queue.first()
                );
            }
        }
        Err(e) => println!("listing incomplete: {e}"),
    }
    // Or server by server, to see what the reachable ones say while one is down.
    for (server, answer) in client.each_server(|c| c.stats()) {
        match answer {
            Ok(stats) => println!("{server}: {} locks held", stats.get("locks_held").unwrap_or(0)),
            Err(e) => println!("{server}: {e}"),
        }
    }
    client.with_lock("nightly", LockOptions::try_once(), || println!("nightly ran"))?;
    client.reset()?;
    Ok(())
}
