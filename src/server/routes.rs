//! Where the lock table's outputs go: the slab key of each live session. The table names
//! sessions by its own ids (stable across replicas, not tied to a socket), so the server keeps
//! this one map from them to its connections.

use hashbrown::HashMap;

use crate::locks::SessionId;

/// Below this capacity the map is never shrunk.
const SHRINK_FLOOR: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Routes {
    keys: HashMap<SessionId, usize>,
}

impl Routes {
    /// `session` is served by the connection in slab slot `key`.
    pub fn insert(&mut self, session: SessionId, key: usize) {
        self.keys.insert(session, key);
    }

    /// The session is detached: the table never answers it again.
    pub fn remove(&mut self, session: SessionId) {
        self.keys.remove(&session);
    }

    /// The slab key of `session`'s connection: one lookup of a u64 per output delivered.
    pub fn get(&self, session: SessionId) -> Option<usize> {
        self.keys.get(&session).copied()
    }

    /// Housekeeping: gives back the map's memory once it is at most a quarter full (above a
    /// floor), like the server's other containers after a burst of connections. True when it
    /// shrank.
    pub fn shrink_if_sparse(&mut self) -> bool {
        let (len, capacity) = (self.keys.len(), self.keys.capacity());
        if capacity <= SHRINK_FLOOR || len * 4 > capacity {
            return false;
        }
        self.keys.shrink_to(len * 2);
        self.keys.capacity() < capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_sessions_and_shrink_after_a_burst() {
        let mut routes = Routes::default();
        for i in 0..10_000u64 {
            routes.insert(SessionId(i + 1), i as usize);
        }
        assert_eq!(routes.get(SessionId(77)), Some(76));
        assert!(!routes.shrink_if_sparse(), "full: nothing to give back");
        for i in 0..9_990u64 {
            routes.remove(SessionId(i + 1));
        }
        assert_eq!(routes.get(SessionId(77)), None);
        assert!(routes.shrink_if_sparse());
        assert!(routes.keys.capacity() < 1024, "{}", routes.keys.capacity());
        assert_eq!(routes.get(SessionId(10_000)), Some(9_999));
    }
}
