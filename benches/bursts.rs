//! `cargo bench --bench bursts`: the cost of one bounded batch of a burst, in-process on the
//! lock table. One `Expire` command when 15,000 waits on one name time out together (it answers
//! `EXPIRE_BATCH` of them, each TIMED_OUT with at most `REFUSAL_QUEUE_MAX` labels), and one
//! release step (`Expire` again) of a connection that held 20,000 locks (it releases `RELEASE_BATCH` holds,
//! with and without a waiter to grant on each). These are the per-turn costs a bystander can
//! wait behind (README "Limits and guarantees").

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use officer::locks::{
    Command, LockOpts, LockTable, Name, Output, SessionId, TableLimits, EXPIRE_BATCH, RELEASE_BATCH,
};

const WAITERS: u32 = 15_000;
const HOLDS: u32 = 20_000;
const DEADLINE: u64 = 3_000;

fn id(slot: u32) -> SessionId {
    SessionId(u64::from(slot))
}

fn attach(table: &mut LockTable, slot: u32) {
    table.apply(0, &Command::Attach { session: id(slot), label: label(slot) }, &mut Vec::new());
}

fn lock(slot: u32, request_id: u32, name: &str, timeout_ms: Option<u32>) -> Command {
    Command::Lock {
        session: id(slot),
        request_id,
        name: Name::from(name),
        timeout_ms,
        queue_max: None,
        opts: LockOpts::default(),
    }
}

fn label(slot: u32) -> String {
    format!("10.1.{}.{}:{}", slot / 250, slot % 250, 40_000 + slot % 20_000)
}

/// One holder and `WAITERS` waits on "hot", all due at `DEADLINE`.
fn timeout_burst() -> (LockTable, Vec<Output>) {
    let mut table = LockTable::new(1, TableLimits::default());
    let mut out = Vec::new();
    for slot in 0..=WAITERS {
        attach(&mut table, slot);
    }
    table.apply(0, &lock(0, 1, "hot", None), &mut out);
    for slot in 1..=WAITERS {
        table.apply(0, &lock(slot, 2, "hot", Some(DEADLINE as u32)), &mut out);
    }
    out.clear();
    (table, out)
}

/// Connection 0 held `HOLDS` locks and just disconnected (its first inline batch is done);
/// with `waiters`, connection 1 waits on every one of them.
fn release_burst(waiters: bool) -> (LockTable, Vec<Output>) {
    let mut table = LockTable::new(1, TableLimits::default());
    let mut out = Vec::new();
    attach(&mut table, 0);
    attach(&mut table, 1);
    let names: Vec<String> = (0..HOLDS).map(|i| format!("jobs/{i:08}")).collect();
    for name in &names {
        table.apply(0, &lock(0, 1, name, None), &mut out);
    }
    if waiters {
        for name in &names {
            table.apply(0, &lock(1, 2, name, None), &mut out);
        }
    }
    table.apply(1, &Command::Detach { session: id(0) }, &mut out);
    out.clear();
    (table, out)
}

fn bursts(c: &mut Criterion) {
    let mut g = c.benchmark_group("bursts");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(EXPIRE_BATCH as u64));
    g.bench_function("expire_batch_of_15000_simultaneous_timeouts", |b| {
        b.iter_batched(
            timeout_burst,
            |(mut table, mut out)| {
                // No release is pending: the command's release step finds nothing to do.
                table.apply(DEADLINE, &Command::Expire, &mut out);
                assert_eq!(out.len(), EXPIRE_BATCH);
                black_box((table, out))
            },
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(RELEASE_BATCH as u64));
    for (name, waiters) in
        [("release_step_of_20000_holds", false), ("release_step_of_20000_holds_each_granted", true)]
    {
        g.bench_function(name, |b| {
            b.iter_batched(
                || release_burst(waiters),
                |(mut table, mut out)| {
                    let before = table.stats().released;
                    // No wait can time out here: the command's expire finds nothing to do.
                    table.apply(2, &Command::Expire, &mut out);
                    assert_eq!(table.stats().released - before, RELEASE_BATCH as u64);
                    black_box((table, out))
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bursts);
criterion_main!(benches);
