//! A client of a three-member cluster: hold a lock with a resumable session, and watch it
//! survive when the leader is killed (the client finds the new leader and resumes there).
//!
//! ```text
//! # start three `officer run --cluster ...` members (docs/CLUSTER.md), then:
//! cargo run --example cluster_failover -- 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
//! # kill -9 the leader while it runs: "resumes" goes up, the hold stays
//! ```

use std::thread;
use std::time::Duration;

use officer::client::{Client, LockOptions};

fn main() -> Result<(), officer::client::Error> {
    let mut members: Vec<String> = std::env::args().skip(1).collect();
    if members.is_empty() {
        members = vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into(), "127.0.0.1:7003".into()];
    }
    let client = Client::builder()
        .cluster(&members)
        .namespace("example")
        .session_grace(Duration::from_secs(15))
        .connect()?;
    let guard = client.lock_guard("failover", LockOptions::new())?;
    println!("holding {:?} with fencing token {}", guard.name(), guard.token());
    for _ in 0..60 {
        thread::sleep(Duration::from_secs(1));
        let held = client.check("failover", guard.token())?;
        let next = client.try_lock("failover-probe")?;
        client.unlock("failover-probe")?;
        println!("held {held}, resumes {}, a new token now: {}", client.resumes(), next.token());
    }
    guard.unlock()
}
