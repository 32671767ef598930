//! The session in JSON mode: the sniff's outcome (served or refused, PROTOCOL.md §7.1), line
//! framing with its length limit, and the activity rule for lines. The codec is `json.rs`.

use super::json::{JsonSession, Parsed, Scratch};
use super::{fail, scans_the_table, Cause, CloseReason, Next, Phase, Session, Step};
use crate::protocol::{DecodeError, ErrorCode, Response};
use crate::server::Config;
use crate::wheel::Tick;

impl Session {
    /// The first byte was `{`: serve JSON lines, or refuse them with one JSON error line and
    /// close where the original protocol is not allowed (`--no-compat`, or a secret is set and
    /// this is not the compat listener).
    pub(super) fn begin_json<'a>(
        &mut self,
        input: &'a [u8],
        now: Tick,
        config: &Config,
        scratch: &'a mut Scratch,
    ) -> Option<Next<'a>> {
        self.phase = Phase::Json;
        self.json = Some(JsonSession::new(config.json_tokens));
        let Some((code, message, reason)) = self.json_refusal(config) else {
            // No AUTH will come: the compat listener's JSON clients are served without one.
            self.auth_deadline = None;
            return self.next_line(input, now, config, scratch);
        };
        let response = Response::error(code, message);
        let step = Step::Close { reason, response, cause: Cause::JsonRefused(code) };
        Some(Next { step, used: input.len(), request: false, scans: false })
    }

    fn json_refusal(&self, config: &Config) -> Option<(ErrorCode, &'static str, CloseReason)> {
        if !config.compat {
            let message = "this server does not serve the original JSON-lines protocol (--no-compat)";
            return Some((ErrorCode::BadHandshake, message, CloseReason::Protocol));
        }
        if config.auth_secret.is_some() && !self.compat {
            let message = if config.compat_listen.is_some() {
                "this port requires authentication, which the original JSON-lines protocol cannot give: \
                 connect to the server's --compat-listen address instead"
            } else {
                "this port requires authentication, which the original JSON-lines protocol cannot give, \
                 and the server has no --compat-listen address for such clients"
            };
            return Some((ErrorCode::AuthRequired, message, CloseReason::Auth));
        }
        None
    }

    /// The step for the complete line at the front of `input`.
    pub(super) fn next_line<'a>(
        &mut self,
        input: &'a [u8],
        now: Tick,
        config: &Config,
        scratch: &'a mut Scratch,
    ) -> Option<Next<'a>> {
        let max = config.max_frame;
        let too_large = |len: usize| {
            let step = fail(DecodeError::FrameTooLarge { len: len as u32, max });
            Some(Next { step, used: input.len(), request: false, scans: false })
        };
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return if input.len() > max as usize { too_large(input.len()) } else { None };
        };
        let used = end + 1;
        // Only a complete line is activity, however long it took to arrive.
        self.last_active = now;
        if end > max as usize {
            return too_large(end);
        }
        let line = input[..end].strip_suffix(b"\r").unwrap_or(&input[..end]);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Some(Next { step: Step::Activity, used, request: false, scans: false });
        }
        let json = self.json.get_or_insert_with(|| JsonSession::new(config.json_tokens));
        let (step, scans) = match json.parse(line, config.max_name, scratch) {
            // A listing walks the whole table: it ends this connection's turn.
            Parsed::Request { rid, request } => {
                let scans = scans_the_table(request.opcode());
                (Step::Execute { rid, request }, scans)
            }
            Parsed::KeepAlive => (Step::Activity, false),
            Parsed::Invalid((code, message)) => (Step::Invalid { rid: 0, code, message, quiet: true }, false),
        };
        Some(Next { step, used, request: true, scans })
    }
}
