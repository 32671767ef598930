//! The sharded client against three servers in-process on 127.0.0.1:0: placement (stable,
//! balanced, moving only what it must), one server down failing only its names, mutual
//! exclusion between clients whose lists are in different orders, and fanned-out listings.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;

use officer::client::{Client, LockOptions, ShardedClient};
use support::server::TestServer;
use support::WAIT;

/// Names for the placement tests; distinct, and shaped like real ones.
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("jobs/{i}")).collect()
}

/// A client over `servers` that connects nowhere: placement needs no server.
fn placer(servers: &[&str]) -> ShardedClient {
    ShardedClient::builder().servers(servers).connect_lazy().expect("build")
}

fn addresses(servers: &[TestServer]) -> Vec<String> {
    servers.iter().map(|s| format!("127.0.0.1:{}", s.addr().port())).collect()
}

fn sharded(addresses: &[String]) -> ShardedClient {
    ShardedClient::builder().servers(addresses).connect().expect("connect")
}

fn plain(address: &str) -> Client {
    Client::builder()
        .host("127.0.0.1")
        .port(address.rsplit(':').next().unwrap().parse().unwrap())
        .connect()
        .unwrap()
}

/// For each server, the first of `names` placed on it.
fn one_name_per_server(client: &ShardedClient) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for name in names(1000) {
        found.entry(client.server_for(&name).to_owned()).or_insert(name);
    }
    assert_eq!(found.len(), client.servers().count(), "1000 names reach every server");
    found
}

#[test]
fn the_sharded_client_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ShardedClient>();
    check::<officer::client::ShardedBuilder>();
}

#[test]
fn placement_is_the_same_in_any_order_and_balanced() {
    const N: usize = 100_000;
    let a = placer(&["10.0.0.1:11500", "10.0.0.2:11500", "10.0.0.3:11500"]);
    let b = placer(&["10.0.0.3:11500", "10.0.0.1:11500", "10.0.0.2:11500"]);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in names(N) {
        let server = a.server_for(&name);
        assert_eq!(server, b.server_for(&name), "{name}");
        *counts.entry(server).or_default() += 1;
    }
    assert_eq!(counts.len(), 3);
    // Chi-square with 2 degrees of freedom, whose tail is exp(-x/2): a uniform placement
    // exceeds 27.6 with probability 1e-6. A hash that sends even 35% to one server (and 32.5%
    // to the others) scores over 80, one that ignores the server or the name scores ~200,000.
    let expected = N as f64 / 3.0;
    let chi2: f64 = counts.values().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < 27.6, "chi-square {chi2:.1} for {counts:?}");
}

#[test]
fn removing_a_server_moves_only_its_names_and_adding_one_moves_a_quarter() {
    const N: usize = 100_000;
    let four = placer(&["a:1", "b:1", "c:1", "d:1"]);
    let three = placer(&["a:1", "b:1", "c:1"]);
    let (mut moved, mut on_d) = (0, 0);
    for name in names(N) {
        let (before, after) = (four.server_for(&name), three.server_for(&name));
        if before == "d:1" {
            on_d += 1;
        } else {
            assert_eq!(before, after, "{name} left a server that stayed");
        }
        if before != after {
            // Going from three servers to four (d added), these are the names that moved.
            assert_eq!(before, "d:1", "{name} moved to a server other than the added one");
            moved += 1;
        }
    }
    assert_eq!(moved, on_d);
    // A binomial(100000, 1/4) has a standard deviation of 137: 0.24..0.26 is over 7 of them.
    let share = moved as f64 / N as f64;
    assert!((0.24..0.26).contains(&share), "adding a 4th server moved {share:.4} of the names");
}

#[test]
fn a_down_server_fails_only_its_names_and_says_which() {
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    let addrs = addresses(&servers);
    let client = sharded(&addrs);
    let per_server = one_name_per_server(&client);
    for name in per_server.values() {
        client.try_lock(name).expect("lock while all are up");
        client.unlock(name).expect("unlock");
    }
    let mut servers = servers;
    servers.remove(1).stop();
    let down = &addrs[1];
    for (server, name) in &per_server {
        let result = client.try_lock(name);
        if server == down {
            let err = result.expect_err("the stopped server's name must fail");
            assert_eq!(err.server_address(), Some(down.as_str()));
            assert!(err.to_string().contains(down.as_str()), "{err}");
        } else {
            result.unwrap_or_else(|e| panic!("{name} on {server} failed: {e}"));
            client.unlock(name).expect("unlock on a server that is up");
        }
    }
    let err = client.locks().expect_err("a listing over a down server fails");
    assert_eq!(err.server_address(), Some(down.as_str()));
    let answers = client.each_server(|c| c.locks());
    assert_eq!(answers.iter().filter(|(_, r)| r.is_ok()).count(), 2);
}

#[test]
fn a_server_down_when_the_client_is_built_fails_only_its_names() {
    let up = TestServer::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let addrs = vec![format!("127.0.0.1:{}", up.addr().port()), dead.to_string()];
    let client = sharded(&addrs);
    let per_server = one_name_per_server(&client);
    let err = client.try_lock(&per_server[&addrs[1]]).expect_err("nothing listens there");
    assert!(err.is_io(), "{err}");
    assert_eq!(err.server_address(), Some(addrs[1].as_str()));
    client.try_lock(&per_server[&addrs[0]]).expect("the live server still locks");
}

/// One contender: `rounds` times, a name of `names` in turn, checked for exclusion and
/// fencing inside the critical section.
fn contend(client: &ShardedClient, names: &[String], rounds: usize, state: &Mutex<Contention>) {
    for i in 0..rounds {
        let name = &names[i % names.len()];
        let lock = client.lock(name, LockOptions::with_timeout(WAIT)).expect("lock");
        {
            let mut s = state.lock().unwrap();
            let holders = s.holders.entry(name.clone()).or_default();
            assert_eq!(*holders, 0, "{name} has two holders");
            *holders += 1;
            let last = s.last_token.insert(name.clone(), lock.token());
            assert!(last < Some(lock.token()), "{name}: token {} after {last:?}", lock.token());
        }
        // The other contenders get a chance to queue while the lock is held.
        thread::yield_now();
        *state.lock().unwrap().holders.get_mut(name).unwrap() -= 1;
        client.unlock(name).expect("unlock");
    }
}

#[derive(Default)]
struct Contention {
    holders: HashMap<String, u32>,
    last_token: HashMap<String, u64>,
}

#[test]
fn mutual_exclusion_holds_per_name_for_clients_with_the_list_in_different_orders() {
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    let addrs = addresses(&servers);
    let mut reversed = addrs.clone();
    reversed.reverse();
    let clients: Vec<ShardedClient> =
        (0..4).map(|i| sharded(if i % 2 == 0 { &addrs } else { &reversed })).collect();
    let names: Vec<String> = (0..6).map(|i| format!("shared/{i}")).collect();
    for name in &names {
        assert_eq!(clients[0].server_for(name), clients[1].server_for(name));
    }
    let state = Arc::new(Mutex::new(Contention::default()));
    thread::scope(|s| {
        for client in &clients {
            let (names, state) = (&names, &state);
            s.spawn(move || contend(client, names, 300, state));
        }
    });
    let state = state.lock().unwrap();
    assert_eq!(state.last_token.len(), names.len());
    assert!(state.holders.values().all(|&h| h == 0));
}

#[test]
fn listings_fan_out_and_merge_what_each_server_holds() {
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    let addrs = addresses(&servers);
    let client = ShardedClient::builder().servers(&addrs).namespace("ns").connect().expect("connect");
    let mut held: Vec<String> = (0..30).map(|i| format!("n{i:02}")).collect();
    for name in &held {
        client.try_lock(name).expect("lock");
    }
    held.sort();
    let listed: Vec<String> = client.locks().expect("locks").into_iter().map(|l| l.name).collect();
    assert_eq!(listed, held);
    for address in &addrs {
        // Each server holds exactly the names placed on it (with the namespace).
        let on_server: Vec<String> = plain(address).locks().unwrap().into_iter().map(|l| l.name).collect();
        let expected: Vec<String> =
            held.iter().filter(|n| client.server_for(n) == address).map(|n| format!("ns:{n}")).collect();
        assert!(!expected.is_empty(), "30 names reach every server");
        assert_eq!(on_server, expected, "{address}");
    }
    let first = client.locks_matching("n0", 5).expect("locks_matching");
    assert_eq!(
        first.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["n00", "n01", "n02", "n03", "n04"]
    );
    assert!(first.truncated);
    assert_eq!(client.my_locks().expect("my_locks").held, held);
    let connections = client.connections().expect("connections");
    assert_eq!(connections.iter().map(|c| c.held.len()).sum::<usize>(), held.len());
    let stats = client.stats().expect("stats");
    let mut servers_in_stats: Vec<&str> = stats.iter().map(|(s, _)| s.as_str()).collect();
    servers_in_stats.sort();
    let mut sorted = addrs.clone();
    sorted.sort();
    assert_eq!(servers_in_stats, sorted);
    assert_eq!(stats.iter().map(|(_, s)| s.get("locks_held").unwrap()).sum::<u64>(), held.len() as u64);
    assert_eq!(client.ping().expect("ping").len(), 3);
    assert_eq!(client.top(100).expect("top").longest_held.len(), held.len());
    client.reset().expect("reset");
    assert!(client.locks().expect("locks").is_empty());
}

#[test]
fn guards_and_with_lock_release_on_the_names_server() {
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    let client = sharded(&addresses(&servers));
    let guard = client.lock_guard("g", LockOptions::new()).expect("guard");
    let holder = plain(client.server_for("g"));
    assert_eq!(holder.locks().unwrap().len(), 1);
    drop(guard);
    assert!(holder.locks().unwrap().is_empty());
    let value =
        client.with_lock("w", LockOptions::new(), || client.locks().unwrap().len()).expect("with_lock");
    assert_eq!(value, 1);
    assert!(client.locks().unwrap().is_empty());
}

#[test]
fn placement_hashes_the_full_name_with_the_namespace() {
    let servers = ["a:1", "b:1", "c:1"];
    let bare = placer(&servers);
    let ns = ShardedClient::builder().servers(servers).namespace("billing").connect_lazy().expect("build");
    let mut differ = 0;
    for name in names(1000) {
        assert_eq!(ns.server_for(&name), bare.server_for(&format!("billing:{name}")), "{name}");
        differ += usize::from(ns.server_for(&name) != bare.server_for(&name));
    }
    // Two thirds of the names land elsewhere once the namespace is hashed too.
    assert!((500..830).contains(&differ), "{differ} of 1000 moved");
}
