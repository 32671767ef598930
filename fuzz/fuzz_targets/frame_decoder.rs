//! Fuzz target: arbitrary bytes through `split_frame`, `Request::decode` and `Response::decode`.
//! Nothing a peer sends may panic the decoder, and a frame never claims more bytes than it has.
//! The first two bytes pick the limits, so small and huge limits (above the ceiling) are covered.

#![no_main]

use libfuzzer_sys::fuzz_target;
use officer::protocol::{split_frame, Request, Response, FRAME_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&[frame_sel, name_sel], mut buf)) = data.split_first_chunk::<2>() else { return };
    let max_frame = match frame_sel {
        0 => u32::MAX,
        n => u32::from(n) * 64,
    };
    let max_name = u32::from(name_sel) * 4;
    // Decode frames back to back, as the server does with its input buffer.
    while let Ok(Some((frame, used))) = split_frame(buf, max_frame) {
        assert!(used >= FRAME_HEADER_LEN && used <= buf.len());
        assert_eq!(frame.payload.len(), used - FRAME_HEADER_LEN);
        let _ = Request::decode(&frame, max_name);
        let _ = Response::decode(&frame);
        buf = &buf[used..];
    }
});
