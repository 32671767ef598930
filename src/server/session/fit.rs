//! Keeps every frame the server sends within the `max_frame` it announced (PROTOCOL.md §2.1).
//!
//! Listings are built by the lock table within that many bytes (`LockTable::*_within`), so
//! they arrive here fitting and carrying their own `truncated` flag. What still needs cutting
//! (the queues of TIMED_OUT and QUEUE_MAXED, an over-long message) is cut by
//! [`Response::encode_within`] in the same single pass that encodes it: lists stop at the
//! entry that would not fit and their counts are back-patched. Nothing is ever encoded twice.

use crate::protocol::Response;

/// Encodes `response` into `out` as one frame of at most `max_frame` bytes (length field).
pub(super) fn encode_within(response: &Response, request_id: u32, max_frame: u32, out: &mut Vec<u8>) {
    response.encode_within(request_id, max_frame, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{split_frame, LockInfo};

    fn decode(out: &[u8], max_frame: u32) -> Response {
        let (frame, used) = split_frame(out, max_frame).unwrap().expect("one whole frame");
        assert_eq!(used, out.len(), "exactly one frame");
        Response::decode(&frame).unwrap()
    }

    #[test]
    fn long_listings_are_cut_at_an_entry_and_flagged() {
        let locks: Vec<LockInfo> = (0..1000)
            .map(|i| LockInfo { name: format!("lock-{i:04}"), queue: vec!["127.0.0.1:5000".into(); 3] })
            .collect();
        let mut out = Vec::new();
        encode_within(&Response::Locks { locks: locks.clone(), truncated: false }, 9, 4096, &mut out);
        assert!(out.len() <= 4096 + 4);
        let Response::Locks { locks: got, truncated } = decode(&out, 4096) else { panic!("not LOCKS_LIST") };
        assert!(truncated);
        // Each entry is 2 + 9 + 4 + 3 * 16 = 63 bytes; 4096 - 10 bytes of room hold 64 of them.
        assert_eq!(got.len(), 64);
        assert_eq!(got[..], locks[..64], "whole entries, in order");
    }

    #[test]
    fn small_responses_are_untouched() {
        let response = Response::TimedOut { queue: vec!["a".into(), "b".into()] };
        let mut out = Vec::new();
        encode_within(&response, 3, 4096, &mut out);
        let mut plain = Vec::new();
        response.encode(3, &mut plain);
        assert_eq!(out, plain);
    }

    #[test]
    fn a_huge_queue_is_cut_to_fit_with_its_count_back_patched() {
        let response = Response::TimedOut { queue: vec!["127.0.0.1:40000".into(); 10_000] };
        let mut out = Vec::new();
        encode_within(&response, 3, 1024, &mut out);
        assert!(out.len() <= 1024 + 4);
        let Response::TimedOut { queue } = decode(&out, 1024) else { panic!("not TIMED_OUT") };
        // 1024 - 5 (opcode, id) - 4 (count) = 1015 bytes hold 59 labels of 17 bytes.
        assert_eq!(queue.len(), 59);
    }

    #[test]
    fn a_single_entry_too_big_for_the_frame_keeps_its_name_and_part_of_its_queue() {
        let lock = LockInfo { name: "big".into(), queue: vec!["127.0.0.1:40000".into(); 1000] };
        let mut out = Vec::new();
        encode_within(&Response::Locks { locks: vec![lock], truncated: false }, 3, 512, &mut out);
        assert!(out.len() <= 512 + 4);
        let Response::Locks { locks, truncated } = decode(&out, 512) else { panic!("not LOCKS_LIST") };
        assert!(truncated);
        assert_eq!(locks.len(), 1);
        assert_eq!(locks[0].name, "big");
        assert!(!locks[0].queue.is_empty() && locks[0].queue.len() < 1000);
    }
}
