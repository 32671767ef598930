//! Frame builders for tests that write the wire themselves: any opcode, id and payload (for
//! malformed input), encoded requests, and the few requests and replies the suites use most.

use officer::protocol::{Hello, ListRequest, LockRequest, Request, Response, PROTOCOL_VERSION};

/// One frame with any opcode, id and payload (length prefix computed).
pub fn frame(opcode: u8, request_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = ((5 + payload.len()) as u32).to_be_bytes().to_vec();
    f.push(opcode);
    f.extend_from_slice(&request_id.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn encode(request: &Request<'_>, request_id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(request_id, &mut out);
    out
}

pub fn hello_frame(request_id: u32) -> Vec<u8> {
    encode(&Request::Hello(Hello { version: PROTOCOL_VERSION }), request_id)
}

pub fn lock_req(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None })
}

pub fn try_lock_req(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: Some(0), queue_max: None })
}

pub fn locks_req(prefix: &str) -> Request<'_> {
    Request::Locks(ListRequest { prefix, max: 0 })
}

pub fn token_of(response: &Response) -> u64 {
    match response {
        Response::Acquired { token } => *token,
        other => panic!("expected ACQUIRED, got {other:?}"),
    }
}
