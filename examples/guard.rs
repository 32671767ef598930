//! `lock_guard`: hold a lock for a scope, pass its fencing token on, see a rival refused, and
//! watch the guard release the lock even when the scope panics.
//!
//! ```text
//! officer run &
//! cargo run --example guard -- 127.0.0.1:11500
//! ```

use std::panic;

use officer::client::{Client, LockOptions};

fn main() -> Result<(), officer::client::Error> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "localhost:11500".to_owned());
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "11500"));
    let port: u16 = port.parse().unwrap_or(11500);
    let connect = || Client::builder().host(host).port(port).namespace("example").connect();

    let owner = connect()?;
    let rival = connect()?;
    {
        let guard = owner.lock_guard("report", LockOptions::new())?;
        println!("holding {:?} with fencing token {}", guard.name(), guard.token());

        // A second connection is refused while the guard lives; the error says who holds it.
        let refused = rival.try_lock("report").expect_err("the lock is held");
        println!("rival: {refused}");
        assert!(refused.is_timeout());
    } // the guard unlocks here

    let rival_lock = rival.try_lock("report")?;
    println!("rival got it after the guard dropped, token {}", rival_lock.token());
    rival.unlock("report")?;

    // A panic inside the scope still releases the lock while unwinding. (The hook is muted
    // so the expected panic does not look like a failure.)
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        let _guard = owner.lock_guard("report", LockOptions::new()).expect("lock");
        panic!("the job failed");
    }));
    panic::set_hook(hook);
    assert!(result.is_err());
    let after_panic = rival.try_lock("report")?;
    println!("free again after the panic, rival token {}", after_panic.token());
    Ok(())
}
