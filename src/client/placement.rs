//! Which server a lock name lives on: rendezvous (highest-random-weight) hashing over the
//! servers' canonical addresses, pure and without I/O so that every client (the blocking
//! [`ShardedClient`](super::ShardedClient) now, an async one later) places names the same way.
//!
//! The weight of server `s` for name `n` is `mix(fnv1a(s) ^ mix(fnv1a(n)))`: 64-bit FNV-1a
//! (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over the bytes, then the
//! SplitMix64 finaliser (`x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27;
//! x *= 0x94d049bb133111eb; x ^= x >> 31`). FNV-1a alone spreads a change in the last bytes of
//! a name poorly into the high bits; the finaliser makes every input bit reach every output
//! bit, so for one name the servers' weights behave like independent draws. The name is the
//! full name as the server knows it (namespace included). The name wins on the server with
//! the highest weight; equal weights go to the smaller address, so the result never depends
//! on the order of the list. Removing a server moves exactly the names that were on it;
//! adding one moves only the names it now wins (about 1/N of them).
//!
//! The constants are part of the placement: changing them moves names between servers while
//! clients of two versions run side by side, which breaks mutual exclusion. Never change them.

/// FNV-1a's 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a's 64-bit prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// Continues an FNV-1a hash over `bytes`, so a name can be hashed in parts (namespace, then
/// the caller's name) without building the full string.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// SplitMix64's finaliser: a bijection on `u64` with full avalanche.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hash of a server's canonical address, computed once per server.
///
/// ```
/// use officer::client::placement::server_key;
/// assert_eq!(server_key("10.0.0.1:11500"), server_key("10.0.0.1:11500"));
/// assert_ne!(server_key("10.0.0.1:11500"), server_key("10.0.0.2:11500"));
/// ```
pub fn server_key(address: &str) -> u64 {
    fnv1a(FNV_OFFSET, address.as_bytes())
}

/// The hash of a full lock name given in parts (`prefix` is the namespace with its `:`, or
/// empty), computed once per request.
///
/// ```
/// use officer::client::placement::name_key;
/// assert_eq!(name_key("billing:", "invoice"), name_key("", "billing:invoice"));
/// ```
pub fn name_key(prefix: &str, name: &str) -> u64 {
    mix(fnv1a(fnv1a(FNV_OFFSET, prefix.as_bytes()), name.as_bytes()))
}

/// The weight of a server (by [`server_key`]) for a name (by [`name_key`]).
///
/// ```
/// use officer::client::placement::{name_key, server_key, weight};
/// let n = name_key("", "jobs/42");
/// assert_ne!(weight(server_key("a:1"), n), weight(server_key("b:1"), n));
/// ```
pub fn weight(server: u64, name: u64) -> u64 {
    mix(server ^ name)
}

/// The index in `servers` (canonical addresses with their [`server_key`]) of the server
/// `name_key` belongs on, or `None` for an empty list. Ties go to the smaller address.
///
/// ```
/// use officer::client::placement::{name_key, pick, server_key};
/// let servers: Vec<(String, u64)> =
///     ["a:1", "b:1", "c:1"].iter().map(|s| (s.to_string(), server_key(s))).collect();
/// let mut reversed = servers.clone();
/// reversed.reverse();
/// let n = name_key("", "x");
/// assert_eq!(servers[pick(&servers, n).unwrap()].0, reversed[pick(&reversed, n).unwrap()].0);
/// ```
pub fn pick<S: AsRef<str>>(servers: &[(S, u64)], name_key: u64) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, (address, key)) in servers.iter().enumerate() {
        let w = weight(*key, name_key);
        let better = match best {
            None => true,
            Some((j, bw)) => w > bw || (w == bw && address.as_ref() < servers[j].0.as_ref()),
        };
        if better {
            best = Some((i, w));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite: "" and "a" and "foobar" for FNV-1a 64.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn mix_is_splitmix64s_finaliser() {
        // SplitMix64 seeded with 0 yields mix(0x9e3779b97f4a7c15) first.
        assert_eq!(mix(0x9e37_79b9_7f4a_7c15), 0xe220a8397b1dcdaf);
        assert_eq!(mix(0), 0);
    }

    #[test]
    fn placement_is_pinned_so_versions_agree() {
        // Golden values: a change here moves names between servers under running clients.
        let servers: Vec<(&str, u64)> =
            ["a:11500", "b:11500", "c:11500"].iter().map(|s| (*s, server_key(s))).collect();
        let placed: Vec<usize> = ["x", "y", "z", "jobs/1", "jobs/2"]
            .iter()
            .map(|n| pick(&servers, name_key("", n)).unwrap())
            .collect();
        assert_eq!(placed, GOLDEN);
    }

    const GOLDEN: [usize; 5] = [1, 2, 1, 1, 2];

    #[test]
    fn an_empty_list_places_nothing() {
        let none: [(&str, u64); 0] = [];
        assert_eq!(pick(&none, name_key("", "x")), None);
    }
}
