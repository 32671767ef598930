//! Keeps every frame the server sends within the `max_frame` it announced (PROTOCOL.md §2.1):
//! listings and queues that would not fit are cut at an entry boundary, and listings say so
//! with their `truncated` flag.

use crate::protocol::{Response, LENGTH_PREFIX_LEN};

/// Encodes `response` into `out`, trimming its lists until the frame fits `max_frame`.
pub(super) fn encode_within(response: &Response, request_id: u32, max_frame: u32, out: &mut Vec<u8>) {
    let start = out.len();
    response.encode(request_id, out);
    if frame_len(out, start) <= max_frame as usize {
        return;
    }
    let mut trimmed = response.clone();
    loop {
        out.truncate(start);
        if !halve(&mut trimmed) {
            // Nothing left to cut: a fixed-size frame always fits the smallest legal limit.
            response.encode(request_id, out);
            return;
        }
        trimmed.encode(request_id, out);
        if frame_len(out, start) <= max_frame as usize {
            return;
        }
    }
}

fn frame_len(out: &[u8], start: usize) -> usize {
    out.len() - start - LENGTH_PREFIX_LEN
}

/// Drops the second half of the response's longest list. False when there is nothing to drop.
fn halve(response: &mut Response) -> bool {
    fn cut<T>(list: &mut Vec<T>) -> bool {
        if list.is_empty() {
            return false;
        }
        list.truncate(list.len() / 2);
        true
    }
    match response {
        Response::Locks { locks, truncated } => {
            *truncated = true;
            if locks.len() == 1 {
                return cut(&mut locks[0].queue);
            }
            cut(locks)
        }
        Response::Connections { connections, truncated } => {
            *truncated = true;
            if connections.len() == 1 {
                let c = &mut connections[0];
                return if c.held.len() >= c.waiting.len() { cut(&mut c.held) } else { cut(&mut c.waiting) };
            }
            cut(connections)
        }
        Response::TimedOut { queue } | Response::QueueMaxed { queue } => cut(queue),
        Response::MyLocks { held, waiting } => {
            if held.len() >= waiting.len() {
                cut(held)
            } else {
                cut(waiting)
            }
        }
        Response::Stats(entries) => cut(entries),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{split_frame, LockInfo};

    #[test]
    fn long_listings_are_cut_and_flagged() {
        let locks: Vec<LockInfo> = (0..1000)
            .map(|i| LockInfo { name: format!("lock-{i:04}"), queue: vec!["127.0.0.1:5000".into(); 3] })
            .collect();
        let mut out = Vec::new();
        encode_within(&Response::Locks { locks, truncated: false }, 9, 4096, &mut out);
        let (frame, used) = split_frame(&out, 4096).unwrap().unwrap();
        assert_eq!(used, out.len());
        match Response::decode(&frame).unwrap() {
            Response::Locks { locks, truncated } => {
                assert!(truncated);
                assert!(!locks.is_empty() && locks.len() < 1000);
                assert_eq!(locks[0].name, "lock-0000");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_responses_are_untouched() {
        let response = Response::TimedOut { queue: vec!["a".into(), "b".into()] };
        let mut out = Vec::new();
        encode_within(&response, 3, 4096, &mut out);
        let (frame, _) = split_frame(&out, 4096).unwrap().unwrap();
        assert_eq!(Response::decode(&frame).unwrap(), response);
    }

    #[test]
    fn a_huge_queue_is_cut_to_fit() {
        let response = Response::TimedOut { queue: vec!["127.0.0.1:40000".into(); 10_000] };
        let mut out = Vec::new();
        encode_within(&response, 3, 1024, &mut out);
        assert!(out.len() <= 1024 + 4);
        let (frame, _) = split_frame(&out, 1024).unwrap().unwrap();
        assert!(
            matches!(Response::decode(&frame).unwrap(), Response::TimedOut { queue } if !queue.is_empty())
        );
    }
}
