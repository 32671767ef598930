//! Fuzz target: whatever decodes must re-encode to a frame that decodes to the same value, and
//! a request's re-encoding must be byte-identical except where the wire has two spellings of one
//! value (LOCK's `Some(0xFFFFFFFF)` / `Some(0)` sentinels never come out of decoding).

#![no_main]

use libfuzzer_sys::fuzz_target;
use officer::protocol::{split_frame, Request, Response, MAX_FRAME_CEILING, MAX_NAME_CEILING};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((frame, used))) = split_frame(data, MAX_FRAME_CEILING) else { return };
    let bytes = &data[..used];
    if let Ok(req) = Request::decode(&frame, MAX_NAME_CEILING) {
        let mut out = Vec::new();
        req.encode(frame.request_id, &mut out);
        assert_eq!(out, bytes, "a decoded request re-encodes to its own bytes");
    }
    if let Ok(resp) = Response::decode(&frame) {
        let mut out = Vec::new();
        resp.encode(frame.request_id, &mut out);
        let again = split_frame(&out, MAX_FRAME_CEILING).expect("own frame").expect("complete").0;
        assert_eq!(Response::decode(&again).as_ref(), Ok(&resp), "a response survives re-encoding");
    }
});
