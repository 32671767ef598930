//! The handshake's steps without I/O (HELLO, the probe PING, AUTH when asked), shared by the
//! blocking connection and the async one: each reads and writes its own way and hands the
//! bytes here, so both accept and refuse the same servers with the same errors.

use std::io;

use super::answer::unexpected;
use super::builder::{Config, Target};
use super::{Error, Result};
use crate::protocol::{
    split_frame, ErrorCode, Hello, HelloOk, Request, Response, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

/// Largest response frame accepted. Listings of a big server can be large, but a length
/// prefix beyond this means the stream is garbage, not a listing.
pub(crate) const MAX_RESPONSE_FRAME: u32 = 64 << 20;
/// Request ids of the handshake, sent before the connection is shared.
pub(crate) const HELLO_ID: u32 = 1;
pub(crate) const AUTH_ID: u32 = 2;
pub(crate) const PROBE_ID: u32 = 3;
/// The first request id after the handshake.
pub(crate) const FIRST_ID: u32 = 4;

/// The payload of the PING sent right behind HELLO. An officer server answers it with PONG;
/// to a line-based peer (an HTTP server, the original JSON-lines officer) the pair looks like
/// one garbled line and an empty one, i.e. a complete request head, which such a server
/// answers or closes at once: the client then names the peer instead of waiting out its
/// connect timeout.
const PROBE_PAYLOAD: &[u8] = b"\r\n\r\n";

/// Largest first frame an officer server sends: HELLO_OK is 29 bytes, and an ERROR or SHUTDOWN
/// before it carries a short message.
const MAX_FIRST_FRAME: u32 = 64 * 1024;

/// The bytes that open a connection: HELLO, then the probe PING.
pub(crate) fn opening() -> Vec<u8> {
    let mut out = Vec::new();
    Request::Hello(Hello { version: PROTOCOL_VERSION }).encode(HELLO_ID, &mut out);
    Request::Ping(PROBE_PAYLOAD).encode(PROBE_ID, &mut out);
    out
}

/// The server's HELLO_OK.
pub(crate) fn hello(resp: Response) -> Result<HelloOk> {
    match resp {
        Response::HelloOk(hello) => Ok(hello),
        Response::Error { code, message } => Err(Error::server(code, message)),
        other => Err(unexpected(&other, "HELLO")),
    }
}

/// Checked after the probe's answer: `hello` names a protocol version this crate speaks.
pub(crate) fn check_version(hello: &HelloOk) -> Result<()> {
    // The server picks the lower of its version and ours; anything outside what this crate
    // speaks means the session cannot go on (PROTOCOL.md §2.5).
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
        let v = hello.version;
        return Err(Error::protocol(format!(
            "server chose protocol version {v}, this client speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
        )));
    }
    Ok(())
}

/// The answer to the probe PING (allowed before AUTH, so it comes next on every officer server).
pub(crate) fn probe(resp: Response) -> Result<()> {
    match resp {
        Response::Pong => Ok(()),
        Response::Error { code, message } => Err(Error::server(code, message)),
        other => Err(unexpected(&other, "PING")),
    }
}

/// The AUTH request's bytes when the server asks for one, or `None`.
pub(crate) fn auth_request(config: &Config, hello: &HelloOk) -> Result<Option<Vec<u8>>> {
    if !hello.auth_required {
        return Ok(None);
    }
    let Some(secret) = &config.secret else {
        return Err(Error::server(
            ErrorCode::AuthRequired,
            "the server requires a secret (ClientBuilder::auth)",
        ));
    };
    let mut out = Vec::new();
    Request::Auth(secret).encode(AUTH_ID, &mut out);
    Ok(Some(out))
}

/// The answer to AUTH.
pub(crate) fn auth(resp: Response) -> Result<()> {
    match resp {
        Response::AuthOk => Ok(()),
        Response::Error { code, message } => Err(Error::server(code, message)),
        other => Err(unexpected(&other, "AUTH")),
    }
}

/// The answer to `id` if `buf` holds it (`None`: read more), consuming the frames before it.
/// With `first_of`, the bytes are the server's very first and are checked to be officer's
/// ([`plausible_first_frame`]).
pub(crate) fn next_reply(buf: &mut Vec<u8>, id: u32, first_of: Option<&Target>) -> Result<Option<Response>> {
    loop {
        if let Some(target) = first_of {
            if !plausible_first_frame(buf) {
                return Err(Error::not_officer(target.to_string(), buf));
            }
        }
        let split = split_frame(buf, MAX_RESPONSE_FRAME).map_err(|e| Error::protocol(e.to_string()))?;
        let Some((frame, len)) = split else { return Ok(None) };
        let resp = Response::decode(&frame).map_err(|e| Error::protocol(e.to_string()))?;
        let rid = frame.request_id;
        buf.drain(..len);
        match resp {
            resp if rid == id => return Ok(Some(resp)),
            // The server may refuse a connection (limits, shutdown) before answering HELLO.
            Response::Error { code, message } => return Err(Error::server(code, message)),
            Response::Shutdown { message } => return Err(Error::server(ErrorCode::ShuttingDown, message)),
            _ => continue,
        }
    }
}

/// The error when the peer closes the connection during the handshake, `buf` unanswered.
pub(crate) fn closed_early(buf: &[u8], first_of: Option<&Target>) -> Error {
    match first_of {
        // A few bytes, then the close: whatever it was, it did not finish a frame.
        Some(target) if !buf.is_empty() => Error::not_officer(target.to_string(), buf),
        _ => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection during the handshake",
        )
        .into(),
    }
}

/// The error when the handshake is not answered within the connect timeout.
pub(crate) fn silent() -> Error {
    // Silence is what an HTTP server or the original Ruby officer (JSON lines only) gives a
    // binary HELLO: say so rather than only "timed out".
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no handshake answer within the connect timeout (is an officer server listening there?)",
    )
    .into()
}

/// Whether `buf`, the start of the server's first answer, can be officer's: frames are below
/// 2^24 bytes, so the first byte is 0 (PROTOCOL.md §2.6), and the first frame answers HELLO or
/// refuses the connection. An SSH banner, an HTTP reply or a JSON line fails on its first byte,
/// so the caller learns at once instead of after a timeout or a "frame length ..." error.
fn plausible_first_frame(buf: &[u8]) -> bool {
    use crate::protocol::op;
    if buf.first().is_some_and(|&b| b != 0) {
        return false;
    }
    if buf.len() < 5 {
        return true;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    len <= MAX_FIRST_FRAME && matches!(buf[4], op::HELLO_OK | op::ERROR | op::SHUTDOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_officer_frames_pass_the_first_bytes_check() {
        let mut hello_ok = Vec::new();
        Response::HelloOk(HelloOk {
            version: 1,
            auth_required: false,
            connection_id: 1,
            max_frame: 65536,
            max_name: 1024,
            idle_timeout_ms: 0,
        })
        .encode(HELLO_ID, &mut hello_ok);
        for n in 0..=hello_ok.len() {
            assert!(plausible_first_frame(&hello_ok[..n]), "HELLO_OK cut at {n}");
        }
        let mut refused = Vec::new();
        Response::Error { code: ErrorCode::LimitExceeded, message: "too many".into() }
            .encode(0, &mut refused);
        assert!(plausible_first_frame(&refused));
        for foreign in
            [&b"SSH-2.0-OpenSSH_9.6\r\n"[..], b"HTTP/1.1 400 Bad Request\r\n", b"{\"result\":\"error\"}\n"]
        {
            assert!(!plausible_first_frame(&foreign[..1]), "{foreign:?}");
        }
        // Zero first byte but an opcode no server sends first, or an absurd length.
        assert!(!plausible_first_frame(&[0, 0, 0, 9, 0x83, 0, 0, 0, 1]));
        assert!(!plausible_first_frame(&[0, 0x10, 0, 0, 0x81]));
    }
}
