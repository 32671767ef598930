//! A lock's wait queue, kept out of line: most locks never have a waiter, and a `VecDeque`
//! inline would make every `Lock` 24 bytes larger (32 bytes instead of one pointer), which is
//! memory per held lock and bytes moved on every slab insert and remove. The queue is boxed on
//! the first wait and stays with its lock (a contended lock does not allocate per wait); the
//! methods are the `VecDeque` ones the table uses, so callers read the same.

use std::collections::vec_deque::{self, VecDeque};

use super::store::Waiter;

/// Waiting requests in arrival order. The box is the point (one pointer in the lock, not the
/// deque's 32 bytes), hence the allowed lint.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(super) struct Queue(Option<Box<VecDeque<Waiter>>>);

impl Queue {
    /// An empty queue; allocates nothing.
    pub const fn new() -> Self {
        Queue(None)
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    /// The waiters the queue can hold without growing.
    pub fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.capacity())
    }

    pub fn front(&self) -> Option<&Waiter> {
        self.0.as_ref()?.front()
    }

    pub fn iter(&self) -> vec_deque::Iter<'_, Waiter> {
        const EMPTY: &VecDeque<Waiter> = &VecDeque::new();
        self.0.as_deref().unwrap_or(EMPTY).iter()
    }

    /// The waiters in order, to change in place (a snapshot's decoder gives them their timers).
    #[cfg(feature = "cluster")]
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Waiter> {
        self.0.as_deref_mut().into_iter().flat_map(|queue| queue.iter_mut())
    }

    #[inline]
    pub fn push_back(&mut self, waiter: Waiter) {
        self.0.get_or_insert_default().push_back(waiter);
    }

    pub fn pop_front(&mut self) -> Option<Waiter> {
        self.0.as_mut()?.pop_front()
    }

    pub fn remove(&mut self, pos: usize) -> Option<Waiter> {
        self.0.as_mut()?.remove(pos)
    }

    pub fn shrink_to(&mut self, capacity: usize) {
        if let Some(q) = self.0.as_mut() {
            q.shrink_to(capacity);
        }
    }
}

impl<'a> IntoIterator for &'a Queue {
    type Item = &'a Waiter;
    type IntoIter = vec_deque::Iter<'a, Waiter>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Tests reach into a waiter by position, as they did in the `VecDeque`; out of range panics.
#[cfg(test)]
impl std::ops::Index<usize> for Queue {
    type Output = Waiter;

    fn index(&self, pos: usize) -> &Waiter {
        &self.0.as_deref().expect("a waiter in the queue")[pos]
    }
}

#[cfg(test)]
impl std::ops::IndexMut<usize> for Queue {
    fn index_mut(&mut self, pos: usize) -> &mut Waiter {
        &mut self.0.as_deref_mut().expect("a waiter in the queue")[pos]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::SessionId;

    fn waiter(request_id: u32) -> Waiter {
        Waiter {
            session: SessionId(1),
            request_id,
            weight: 1,
            opts: None,
            since: 0,
            deadline: None,
            timer: None,
        }
    }

    #[test]
    fn a_queue_allocates_on_its_first_wait_and_keeps_fifo_order() {
        let mut queue = Queue::new();
        assert!(queue.is_empty() && queue.capacity() == 0);
        assert_eq!(queue.len(), 0);
        assert!(queue.front().is_none() && queue.pop_front().is_none() && queue.remove(0).is_none());
        assert_eq!(queue.iter().count(), 0);
        for id in 1..=3 {
            queue.push_back(waiter(id));
        }
        assert_eq!((queue.len(), queue.front().map(|w| w.request_id)), (3, Some(1)));
        assert_eq!(queue.remove(1).map(|w| w.request_id), Some(2));
        let ids: Vec<u32> = (&queue).into_iter().map(|w| w.request_id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(queue.pop_front().map(|w| w.request_id), Some(1));
        assert_eq!(queue.pop_front().map(|w| w.request_id), Some(3));
        assert!(queue.is_empty() && queue.capacity() > 0, "the box stays with its lock");
        assert_eq!(std::mem::size_of::<Queue>(), 8);
    }
}
