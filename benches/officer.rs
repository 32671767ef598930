//! `cargo bench`: the codec, the lock table in-process, listings over a 1,000,000-lock table,
//! the timer wheel, and end-to-end round trips over loopback with the bundled client.
//! Throughput is in elements so reports read as operations per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use officer::locks::{Command, LockOpts, LockTable, Mode, Name, Output, SessionId, TableLimits};
use officer::protocol::{split_frame, LockRequest, Request, Response};
use officer::wheel::Wheel;

const LIMITS: TableLimits = TableLimits {
    max_locks_per_conn: 0,
    max_waiters_per_lock: 0,
    list_max_default: 10_000,
    max_lock_delay_ms: 0,
};

fn lock_req(name: &str) -> LockRequest<'_> {
    LockRequest { name, timeout_ms: None, queue_max: None }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let request =
        Request::Lock(LockRequest { name: "bench:0000012345", timeout_ms: Some(5000), queue_max: None });
    let mut buf = Vec::with_capacity(64);
    g.bench_function("encode_lock_request", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&request).encode(7, &mut buf);
        })
    });
    let mut encoded = Vec::new();
    request.encode(7, &mut encoded);
    g.bench_function("decode_lock_request", |b| {
        b.iter(|| {
            let (frame, _) = split_frame(black_box(&encoded), 65536).unwrap().unwrap();
            black_box(Request::decode(&frame, 1024).unwrap());
        })
    });
    let response = Response::Acquired { token: 123_456_789 };
    g.bench_function("encode_acquired", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&response).encode(7, &mut buf);
        })
    });
    let mut encoded = Vec::new();
    response.encode(7, &mut encoded);
    g.bench_function("decode_acquired", |b| {
        b.iter(|| {
            let (frame, _) = split_frame(black_box(&encoded), 65536).unwrap().unwrap();
            black_box(Response::decode(&frame).unwrap());
        })
    });
    g.finish();
}

fn conn(slot: u32) -> SessionId {
    SessionId(u64::from(slot))
}

fn attach(table: &mut LockTable, slot: u32, label: &str) {
    table.apply(0, &Command::Attach { session: conn(slot), label: label.into() }, &mut Vec::new());
}

/// The commands as the server builds them from a decoded request: the name is copied out of
/// the read buffer into a shared `Name`, so that cost is measured too.
fn lock(slot: u32, request_id: u32, req: &LockRequest<'_>) -> Command {
    let LockRequest { name, timeout_ms, queue_max } = *req;
    Command::Lock {
        session: conn(slot),
        request_id,
        name: Name::from(name),
        timeout_ms,
        queue_max,
        opts: LockOpts::default(),
    }
}

/// A LOCK in `mode` that waits forever, as the server builds it from a LOCK_EXT.
fn lock_in(slot: u32, request_id: u32, name: &str, mode: Mode) -> Command {
    let opts = LockOpts { mode, ..LockOpts::default() };
    Command::Lock {
        session: conn(slot),
        request_id,
        name: Name::from(name),
        timeout_ms: None,
        queue_max: None,
        opts,
    }
}

fn unlock(slot: u32, request_id: u32, name: &str) -> Command {
    Command::Unlock { session: conn(slot), request_id, name: Name::from(name), token: None }
}

fn lock_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_table");
    g.throughput(Throughput::Elements(1));
    let mut out: Vec<Output> = Vec::with_capacity(16);

    g.bench_function("uncontended_acquire_release", |b| {
        let mut table = LockTable::new(1, LIMITS);
        attach(&mut table, 0, "127.0.0.1:1");
        b.iter(|| {
            table.apply(0, &lock(0, 1, &lock_req("bench:0000000001")), &mut out);
            table.apply(0, &unlock(0, 2, "bench:0000000001"), &mut out);
            out.clear();
        })
    });

    g.bench_function("contended_handoff", |b| {
        // Two connections pass one lock back and forth: every release grants the waiter.
        let mut table = LockTable::new(1, LIMITS);
        attach(&mut table, 0, "127.0.0.1:1");
        attach(&mut table, 1, "127.0.0.1:2");
        table.apply(0, &lock(0, 1, &lock_req("hot")), &mut out);
        let mut holder = 0;
        b.iter(|| {
            let other = 1 - holder;
            table.apply(0, &lock(other, 3, &lock_req("hot")), &mut out);
            table.apply(0, &unlock(holder, 4, "hot"), &mut out);
            holder = other;
            out.clear();
        })
    });

    g.bench_function("wait_with_timeout_then_cancel", |b| {
        let mut table = LockTable::new(1, LIMITS);
        attach(&mut table, 0, "127.0.0.1:1");
        attach(&mut table, 1, "127.0.0.1:2");
        table.apply(0, &lock(0, 1, &lock_req("held")), &mut out);
        let waiting = LockRequest { name: "held", timeout_ms: Some(60_000), queue_max: None };
        b.iter(|| {
            table.apply(0, &lock(1, 5, &waiting), &mut out);
            table.apply(0, &unlock(1, 6, "held"), &mut out);
            out.clear();
        })
    });

    g.bench_function("acquire_release_among_1m_held", |b| {
        let mut table = LockTable::new(1, LIMITS);
        attach(&mut table, 0, "127.0.0.1:1");
        attach(&mut table, 1, "127.0.0.1:2");
        for i in 0..1_000_000u64 {
            table.apply(0, &lock(0, 1, &lock_req(&format!("bench:{i:010}"))), &mut out);
            out.clear();
        }
        let names: Vec<String> = (0..4096u64).map(|i| format!("free:{:011}", i * 7919)).collect();
        let mut i = 0;
        b.iter(|| {
            let name = &names[i & 4095];
            i += 1;
            table.apply(0, &lock(1, 1, &lock_req(name)), &mut out);
            table.apply(0, &unlock(1, 2, name), &mut out);
            out.clear();
        })
    });
    g.finish();
}

/// The shared and semaphore forms of the `lock_table` benches (issue 13's target: within 1.2x
/// of the exclusive ones), alone and beside other holders, and the hand-off between modes.
fn lock_table_modes(c: &mut Criterion) {
    const SEM: Mode = Mode::Permits { count: 1, limit: 10 };
    let mut g = c.benchmark_group("lock_table");
    g.throughput(Throughput::Elements(1));
    let mut out: Vec<Output> = Vec::with_capacity(16);
    let name = "bench:0000000001";

    for (what, mode) in [("shared", Mode::Shared), ("semaphore", SEM)] {
        g.bench_function(format!("{what}_uncontended_acquire_release"), |b| {
            let mut table = LockTable::new(1, LIMITS);
            attach(&mut table, 0, "127.0.0.1:1");
            b.iter(|| {
                table.apply(0, &lock_in(0, 1, name, mode), &mut out);
                table.apply(0, &unlock(0, 2, name), &mut out);
                out.clear();
            })
        });
        g.bench_function(format!("{what}_acquire_release_beside_4_holders"), |b| {
            let mut table = LockTable::new(1, LIMITS);
            for slot in 0..=4 {
                attach(&mut table, slot, "127.0.0.1:1");
            }
            for slot in 1..=4 {
                table.apply(0, &lock_in(slot, 1, name, mode), &mut out);
            }
            b.iter(|| {
                table.apply(0, &lock_in(0, 1, name, mode), &mut out);
                table.apply(0, &unlock(0, 2, name), &mut out);
                out.clear();
            })
        });
    }

    g.bench_function("semaphore_contended_handoff", |b| {
        // A semaphore of one permit passed back and forth, like `contended_handoff`.
        let one = Mode::Permits { count: 1, limit: 1 };
        let mut table = LockTable::new(1, LIMITS);
        attach(&mut table, 0, "127.0.0.1:1");
        attach(&mut table, 1, "127.0.0.1:2");
        table.apply(0, &lock_in(0, 1, "hot", one), &mut out);
        let mut holder = 0;
        b.iter(|| {
            let other = 1 - holder;
            table.apply(0, &lock_in(other, 3, "hot", one), &mut out);
            table.apply(0, &unlock(holder, 4, "hot"), &mut out);
            holder = other;
            out.clear();
        })
    });

    g.bench_function("writer_reader_handoff", |b| {
        // A writer and a reader take turns: every release grants the other mode.
        let mut table = LockTable::new(1, LIMITS);
        attach(&mut table, 0, "127.0.0.1:1");
        attach(&mut table, 1, "127.0.0.1:2");
        let modes = [Mode::Exclusive, Mode::Shared];
        table.apply(0, &lock_in(0, 1, "hot", modes[0]), &mut out);
        let mut holder = 0;
        b.iter(|| {
            let other = 1 - holder;
            table.apply(0, &lock_in(other as u32, 3, "hot", modes[other]), &mut out);
            table.apply(0, &unlock(holder as u32, 4, "hot"), &mut out);
            holder = other;
            out.clear();
        })
    });
    g.finish();
}

/// A table where connection 0 holds 1,000,000 locks (acquired in `order`) and connection 1
/// holds 10, as a client pipelining MY_LOCKS at a server would have it.
fn million_locks(falling: bool) -> LockTable {
    let mut table = LockTable::new(1, LIMITS);
    let mut out = Vec::new();
    attach(&mut table, 0, "127.0.0.1:1");
    attach(&mut table, 1, "127.0.0.1:2");
    for i in 0..1_000_000u64 {
        let i = if falling { 999_999 - i } else { i };
        table.apply(0, &lock(0, 1, &lock_req(&format!("bench:{i:010}"))), &mut out);
        out.clear();
    }
    for i in 0..10 {
        table.apply(0, &lock(1, 1, &lock_req(&format!("other:{i}"))), &mut out);
    }
    table
}

/// Each listing request over a 1,000,000-lock table, returning the default page within the
/// default frame (issue 10: one such request must cost well under 50 ms).
fn listings(c: &mut Criterion) {
    const FRAME: u32 = officer::protocol::DEFAULT_MAX_FRAME;
    let mut g = c.benchmark_group("listings_1m");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for (order, falling) in [("rising", false), ("falling", true)] {
        let table = million_locks(falling);
        g.bench_function(format!("my_locks_{order}"), |b| {
            b.iter(|| black_box(table.my_locks_within(conn(0), FRAME)))
        });
        g.bench_function(format!("my_locks_matching_{order}"), |b| {
            b.iter(|| black_box(table.my_locks_matching(conn(0), "bench:", 0, FRAME)))
        });
        g.bench_function(format!("locks_{order}"), |b| {
            b.iter(|| black_box(table.locks_within("", 0, FRAME)))
        });
        if falling {
            continue;
        }
        g.bench_function("my_locks_of_a_small_holder", |b| {
            b.iter(|| black_box(table.my_locks_within(conn(1), FRAME)))
        });
        g.bench_function("locks_prefix_few", |b| {
            b.iter(|| black_box(table.locks_within("other:", 0, FRAME)))
        });
        g.bench_function("connections", |b| b.iter(|| black_box(table.connections_within("", 0, FRAME))));
        g.bench_function("top_10", |b| b.iter(|| black_box(table.top_within(0, 10, FRAME))));
        // Connection 2 waits for every lock of connection 0: a million waits to choose from.
        let mut table = table;
        let mut out = Vec::new();
        attach(&mut table, 2, "127.0.0.1:3");
        for i in 0..1_000_000u64 {
            table.apply(0, &lock(2, 1, &lock_req(&format!("bench:{i:010}"))), &mut out);
        }
        g.bench_function("my_locks_of_a_million_waits", |b| {
            b.iter(|| black_box(table.my_locks_within(conn(2), FRAME)))
        });
        g.bench_function("my_locks_matching_a_million_waits_by_prefix", |b| {
            b.iter(|| black_box(table.my_locks_matching(conn(2), "bench:", 0, FRAME)))
        });
        let page = table.locks_within("", 0, FRAME);
        let mut buf = Vec::with_capacity(FRAME as usize + 4);
        g.bench_function("encode_locks_page", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&page).encode_within(1, FRAME, &mut buf);
            })
        });
    }
    g.finish();
}

fn wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");
    g.throughput(Throughput::Elements(1));
    g.bench_function("insert_cancel", |b| {
        let mut wheel: Wheel<u64> = Wheel::new();
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            let h = wheel.insert(t + 5_000, t);
            black_box(wheel.cancel(h));
        })
    });
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("expire_10k", |b| {
        b.iter_batched(
            || {
                let mut wheel: Wheel<u64> = Wheel::new();
                for i in 0..10_000u64 {
                    wheel.insert(1 + i % 3000, i);
                }
                wheel
            },
            |mut wheel| {
                let mut fired = Vec::with_capacity(10_000);
                wheel.poll(3000, &mut fired);
                black_box(fired.len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    use officer::server::{Config, Listen, Server};
    let server =
        Server::bind(Config { listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()), ..Config::default() })
            .expect("bind bench server");
    let addr = match server.local_addr() {
        officer::server::BoundAddr::Tcp(a) => *a,
        officer::server::BoundAddr::Unix(_) => unreachable!(),
    };
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());

    let mut g = c.benchmark_group("end_to_end");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    let client = officer::client::Client::connect(&addr.ip().to_string(), addr.port()).unwrap();
    g.bench_function("lock_unlock_round_trip", |b| {
        b.iter(|| {
            client.lock("e2e", officer::client::LockOptions::new()).unwrap();
            client.unlock("e2e").unwrap();
        })
    });

    // Pipelined: a batch of lock/unlock pairs written at once over a raw connection.
    let batch = 256u32;
    g.throughput(Throughput::Elements(batch as u64));
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_nodelay(true).unwrap();
    let mut frames = Vec::new();
    Request::Hello(officer::protocol::Hello { version: 1 }).encode(1, &mut frames);
    std::io::Write::write_all(&mut raw, &frames).unwrap();
    let mut inbuf = Vec::new();
    read_frames(&mut raw, &mut inbuf, 1);
    frames.clear();
    for i in 0..batch {
        let name = format!("pipe:{i}");
        Request::Lock(lock_req(&name)).encode(2 * i + 1, &mut frames);
        Request::Unlock(&name).encode(2 * i + 2, &mut frames);
    }
    g.bench_function("pipelined_lock_unlock", |b| {
        b.iter(|| {
            std::io::Write::write_all(&mut raw, &frames).unwrap();
            read_frames(&mut raw, &mut inbuf, 2 * batch as usize);
        })
    });
    g.finish();
    drop(client);
    handle.shutdown();
    let _ = thread.join();
}

/// Reads until `n` whole frames arrived (and drops them).
fn read_frames(stream: &mut std::net::TcpStream, buf: &mut Vec<u8>, n: usize) {
    let mut seen = 0;
    let mut chunk = [0u8; 65536];
    while seen < n {
        let mut pos = 0;
        while let Some((_, used)) = split_frame(&buf[pos..], u32::MAX).unwrap() {
            pos += used;
            seen += 1;
        }
        buf.drain(..pos);
        if seen >= n {
            break;
        }
        let got = std::io::Read::read(stream, &mut chunk).unwrap();
        assert!(got > 0, "server closed");
        buf.extend_from_slice(&chunk[..got]);
    }
}

criterion_group!(benches, codec, lock_table, lock_table_modes, listings, wheel, end_to_end);
criterion_main!(benches);
