//! A recorded history of lock operations from many clients, and the checker that judges it
//! (Jepsen-style): each client logs an invoke when it first sends an operation and a complete
//! when it has the final answer, with monotonic `Instant`s; reconnects (SESSION_RESUME) are
//! operations of their own, logged between the invoke and the complete of whatever was in
//! flight. The checker rebuilds every hold from those events and reports each violation.
//!
//! What a client's clock proves (the soundness argument every check rests on):
//! - A hold is certainly held, on the server, from the moment its grant was *received*
//!   (ACQUIRED, a replayed ACQUIRED, or the first ALREADY_ACQUIRED naming it) to the *send* of
//!   the latest request whose answer confirmed it (CHECK answered held, a resent LOCK answered
//!   ALREADY_ACQUIRED with its token, the UNLOCK answered RELEASED). The server granted before
//!   the client received, and still held when it read a request sent later; a grant is one
//!   contiguous interval on the server, so everything between is held. A hold with no
//!   confirmation after its grant (its holder lost it, or gave up the session) proves no
//!   interval at all: the server may have ended it the instant it was granted.
//! - A grant happened on the server after the first LOCK for it was sent, and before it was
//!   received.
//! - A LOCK was queued on the server before the answer to a request sent after it on the same
//!   connection (the fence, a PING) was received: one connection's requests are served in order.
//!   Queued on a connection that then stayed up until the grant, the wait kept its place (a
//!   leader that loses the lead closes its clients; a change is answered only once committed).
//!
//! Hence the checks, none of which can fire on a correct server:
//! - `Overlap`: two certain intervals of one name overlap.
//! - `TokenOrder`: per name, a hold with a smaller token was confirmed after a hold with a
//!   larger one was received: grants of a name are serialized in token order, so the smaller
//!   one had ended (on the server) before the larger was granted. Stronger than `Overlap`.
//! - `TokenNotIncreasing`: hold A received before hold B's LOCK was even sent, yet A's token is
//!   not smaller (any names: tokens increase across the whole server, failovers and restarts).
//! - `DuplicateToken`: two grants with one token.
//! - `LostGrant`: a client whose session was resumed after a reconnect (or never lost) found an
//!   acknowledged grant gone: CHECK answered not held, or UNLOCK answered RELEASE_FAILED, with
//!   no UNLOCK of it possibly served before.
//! - `Fifo`: per name, waiter A was queued (fence answered while still waiting, connection up
//!   until its grant) before waiter B's LOCK was sent, yet B's token is smaller (B was granted
//!   first). Without the fence the order of two waits is unknown and nothing is asserted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a client asked for. Names are owned: a history is small and built once per test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Lock {
        name: String,
    },
    Unlock {
        name: String,
        token: u64,
    },
    Check {
        name: String,
        token: u64,
    },
    /// The request sent after a LOCK on the same connection: its answer proves the LOCK queued.
    Fence {
        name: String,
    },
    /// A new connection taking the client's session over (SESSION_RESUME).
    Resume,
}

/// The final answer of an operation, whatever happened on the way (resends after reconnects).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Acquired(u64),
    AlreadyAcquired(u64),
    Released,
    ReleaseFailed,
    Held(bool),
    /// A fence answered, or a session resumed.
    Done,
    /// An error answer (a resume answered `bad_session`, ...).
    Refused(String),
    /// The session is gone (its resume was refused): the result is unknown.
    Abandoned,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Invoke(Op),
    Complete(Outcome),
}

#[derive(Clone, Debug)]
pub struct Event {
    pub client: u32,
    /// Pairs an invoke with its complete; unique per client.
    pub op: u64,
    pub at: Instant,
    pub kind: Kind,
}

/// The shared log all client threads append to.
#[derive(Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<Event>>>,
}

/// One client's handle on the log: it numbers its operations.
pub struct Recorder {
    history: History,
    client: u32,
    next_op: u64,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn recorder(&self, client: u32) -> Recorder {
        Recorder { history: self.clone(), client, next_op: 1 }
    }

    pub fn push(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub fn check(&self) -> Report {
        check(&self.events())
    }
}

impl Recorder {
    /// Logs the invoke of `op` now and returns its id for `complete`.
    pub fn invoke(&mut self, op: Op) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        self.history.push(Event { client: self.client, op: id, at: Instant::now(), kind: Kind::Invoke(op) });
        id
    }

    pub fn complete(&mut self, op: u64, outcome: Outcome) {
        self.history.push(Event {
            client: self.client,
            op,
            at: Instant::now(),
            kind: Kind::Complete(outcome),
        });
    }
}

/// One grant as the checker rebuilt it.
#[derive(Clone, Debug)]
pub struct Hold {
    pub client: u32,
    pub name: String,
    pub token: u64,
    /// When the first LOCK for it was sent.
    pub lock_sent: Instant,
    /// When the client first learned of the grant.
    pub granted: Instant,
    /// The send of the latest confirming request; `None`: no certain interval.
    pub confirmed: Option<Instant>,
    /// The fence answered while the LOCK still waited, on a connection that stayed up until
    /// the grant: the wait certainly queued by then, and kept its place.
    pub queued: Option<Instant>,
}

impl Hold {
    /// The certain interval, if the hold has one.
    fn interval(&self) -> Option<(Instant, Instant)> {
        self.confirmed.filter(|end| *end > self.granted).map(|end| (self.granted, end))
    }
}

#[derive(Clone, Debug)]
pub enum Violation {
    Overlap { name: String, first: (u32, u64), second: (u32, u64) },
    TokenOrder { name: String, smaller: (u32, u64), larger: (u32, u64) },
    TokenNotIncreasing { earlier: (u32, u64), later: (u32, u64) },
    DuplicateToken { token: u64, clients: (u32, u32) },
    LostGrant { client: u32, name: String, token: u64, how: &'static str },
    Fifo { name: String, queued_first: (u32, u64), granted_first: (u32, u64) },
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    pub holds: Vec<Hold>,
    pub violations: Vec<Violation>,
    pub resumes: usize,
    pub abandoned_sessions: usize,
}

impl Report {
    /// Holds with a certain interval (those the exclusion checks could judge).
    pub fn judged_holds(&self) -> usize {
        self.holds.iter().filter(|h| h.interval().is_some()).count()
    }

    pub fn queued_holds(&self) -> usize {
        self.holds.iter().filter(|h| h.queued.is_some()).count()
    }
}

/// Rebuilds the holds of every client, then runs the cross-client checks.
pub fn check(events: &[Event]) -> Report {
    let mut report = Report::default();
    let mut by_client: HashMap<u32, Vec<&Event>> = HashMap::new();
    for e in events {
        by_client.entry(e.client).or_default().push(e);
    }
    let mut clients: Vec<_> = by_client.into_iter().collect();
    clients.sort_by_key(|(c, _)| *c);
    for (client, evs) in clients {
        replay_client(client, &evs, &mut report);
    }
    check_overlap(&report.holds, &mut report.violations);
    check_token_order(&report.holds, &mut report.violations);
    check_tokens_increase(&report.holds, &mut report.violations);
    check_fifo(&report.holds, &mut report.violations);
    report
}

// ---------------------------------------------------------------------------------------------
// One client's events, in the order it logged them

/// A LOCK not answered yet.
struct Wait {
    sent: Instant,
    /// Reconnects of the client when it was sent.
    epoch: u64,
    queued: Option<Instant>,
}

/// An UNLOCK not answered yet, and whether a reconnect came since it was sent (then an answer
/// to it may have been lost, and the hold may be gone by its doing).
struct PendingUnlock {
    name: String,
    token: u64,
    epoch: u64,
}

#[derive(Default)]
struct ClientState {
    ops: HashMap<u64, (Op, Instant)>,
    waits: HashMap<String, Wait>,
    /// Current holds: name -> index in the report's holds.
    holds: HashMap<String, usize>,
    unlocks: Vec<PendingUnlock>,
    epoch: u64,
}

fn replay_client(client: u32, events: &[&Event], report: &mut Report) {
    let mut st = ClientState::default();
    for e in events {
        match &e.kind {
            Kind::Invoke(op) => invoke(&mut st, op, e.at),
            Kind::Complete(outcome) => {
                let Some((op, sent)) = st.ops.remove(&e.op) else { continue };
                complete(client, &mut st, report, &op, sent, outcome, e.at);
            }
        }
        if let Kind::Invoke(op) = &e.kind {
            st.ops.insert(e.op, (op.clone(), e.at));
        }
    }
}

fn invoke(st: &mut ClientState, op: &Op, at: Instant) {
    match op {
        Op::Lock { name } => {
            let epoch = st.epoch;
            st.waits.entry(name.clone()).or_insert(Wait { sent: at, epoch, queued: None });
        }
        Op::Unlock { name, token } => {
            st.unlocks.push(PendingUnlock { name: name.clone(), token: *token, epoch: st.epoch });
        }
        _ => {}
    }
}

fn complete(
    client: u32,
    st: &mut ClientState,
    report: &mut Report,
    op: &Op,
    sent: Instant,
    outcome: &Outcome,
    at: Instant,
) {
    match (op, outcome) {
        (Op::Lock { name }, Outcome::Acquired(token) | Outcome::AlreadyAcquired(token)) => {
            granted(client, st, report, name, *token, sent, at);
        }
        (Op::Lock { name }, _) => {
            st.waits.remove(name);
        }
        (Op::Fence { name }, Outcome::Done) => {
            if let Some(w) = st.waits.get_mut(name) {
                if w.epoch == st.epoch {
                    w.queued = Some(at);
                }
            }
        }
        (Op::Check { name, token }, Outcome::Held(true)) => confirm(st, report, name, *token, sent),
        (Op::Check { name, token }, Outcome::Held(false)) => {
            if !unlock_maybe_served(st, name, *token) {
                report.violations.push(lost(client, name, *token, "CHECK answered not held"));
            }
            st.holds.remove(name);
        }
        (Op::Unlock { name, token }, result) => unlocked(client, st, report, name, *token, sent, result),
        (Op::Resume, Outcome::Done) => {
            report.resumes += 1;
            st.epoch += 1;
        }
        (Op::Resume, _) => {
            // The session is gone, and with it whatever it held or waited for: nothing about
            // those can be asserted any more.
            report.abandoned_sessions += 1;
            st.epoch += 1;
            st.holds.clear();
            st.waits.clear();
            st.unlocks.clear();
        }
        _ => {}
    }
}

fn granted(
    client: u32,
    st: &mut ClientState,
    report: &mut Report,
    name: &str,
    token: u64,
    sent: Instant,
    at: Instant,
) {
    if let Some(&i) = st.holds.get(name) {
        if report.holds[i].token == token {
            // A resent LOCK repeating the grant: a confirmation.
            confirm(st, report, name, token, sent);
            return;
        }
    }
    let wait = st.waits.remove(name);
    let clean = wait.as_ref().is_some_and(|w| w.epoch == st.epoch);
    let hold = Hold {
        client,
        name: name.to_owned(),
        token,
        lock_sent: wait.as_ref().map_or(sent, |w| w.sent),
        granted: at,
        confirmed: None,
        queued: if clean { wait.and_then(|w| w.queued) } else { None },
    };
    report.holds.push(hold);
    st.holds.insert(name.to_owned(), report.holds.len() - 1);
}

fn confirm(st: &ClientState, report: &mut Report, name: &str, token: u64, sent: Instant) {
    if let Some(&i) = st.holds.get(name) {
        let hold = &mut report.holds[i];
        if hold.token == token {
            hold.confirmed = Some(hold.confirmed.map_or(sent, |c| c.max(sent)));
        }
    }
}

/// An UNLOCK of this grant is pending and a reconnect came since it was sent: it may have been
/// served, its answer lost with the connection.
fn unlock_maybe_served(st: &ClientState, name: &str, token: u64) -> bool {
    st.unlocks.iter().any(|u| u.name == name && u.token == token && u.epoch < st.epoch)
}

#[allow(clippy::too_many_arguments)]
fn unlocked(
    client: u32,
    st: &mut ClientState,
    report: &mut Report,
    name: &str,
    token: u64,
    sent: Instant,
    result: &Outcome,
) {
    match result {
        Outcome::Released => confirm(st, report, name, token, sent),
        Outcome::ReleaseFailed if !unlock_maybe_served(st, name, token) => {
            report.violations.push(lost(client, name, token, "UNLOCK answered RELEASE_FAILED"));
        }
        _ => {}
    }
    st.unlocks.retain(|u| !(u.name == name && u.token == token));
    if st.holds.get(name).is_some_and(|&i| report.holds[i].token == token) {
        st.holds.remove(name);
    }
}

fn lost(client: u32, name: &str, token: u64, how: &'static str) -> Violation {
    Violation::LostGrant { client, name: name.to_owned(), token, how }
}

// ---------------------------------------------------------------------------------------------
// Cross-client checks

fn id(h: &Hold) -> (u32, u64) {
    (h.client, h.token)
}

fn by_name(holds: &[Hold]) -> HashMap<&str, Vec<&Hold>> {
    let mut map: HashMap<&str, Vec<&Hold>> = HashMap::new();
    for h in holds {
        map.entry(h.name.as_str()).or_default().push(h);
    }
    map
}

/// Sweep by start: a certain interval starting before the latest end seen so far overlaps it.
fn check_overlap(holds: &[Hold], out: &mut Vec<Violation>) {
    for (name, list) in by_name(holds) {
        let mut certain: Vec<(&Hold, (Instant, Instant))> =
            list.into_iter().filter_map(|h| h.interval().map(|i| (h, i))).collect();
        certain.sort_by_key(|(_, (start, _))| *start);
        let mut latest: Option<(&Hold, Instant)> = None;
        for (h, (start, end)) in certain {
            if let Some((prev, prev_end)) = latest {
                if start < prev_end {
                    out.push(Violation::Overlap { name: name.to_owned(), first: id(prev), second: id(h) });
                }
            }
            if latest.is_none_or(|(_, e)| end > e) {
                latest = Some((h, end));
            }
        }
    }
}

/// Per name in token order: the latest confirmation among smaller tokens must come before
/// each grant's receipt.
fn check_token_order(holds: &[Hold], out: &mut Vec<Violation>) {
    for (name, mut list) in by_name(holds) {
        list.sort_by_key(|h| h.token);
        let mut latest: Option<(&Hold, Instant)> = None;
        for h in list {
            if let Some((prev, end)) = latest {
                if prev.token < h.token && end > h.granted {
                    out.push(Violation::TokenOrder {
                        name: name.to_owned(),
                        smaller: id(prev),
                        larger: id(h),
                    });
                }
            }
            if let Some((_, end)) = h.interval() {
                if latest.is_none_or(|(_, e)| end > e) {
                    latest = Some((h, end));
                }
            }
        }
    }
}

/// Over all names, in descending token order: no hold with a larger token may have been
/// received before this one's LOCK was sent. Also finds tokens granted twice.
fn check_tokens_increase(holds: &[Hold], out: &mut Vec<Violation>) {
    let mut sorted: Vec<&Hold> = holds.iter().collect();
    sorted.sort_by_key(|h| std::cmp::Reverse(h.token));
    let mut earliest_larger: Option<&Hold> = None;
    let mut i = 0;
    while i < sorted.len() {
        // The holds of one token: more than one is a duplicate.
        let mut j = i;
        while j < sorted.len() && sorted[j].token == sorted[i].token {
            j += 1;
        }
        for dup in &sorted[i + 1..j] {
            out.push(Violation::DuplicateToken { token: dup.token, clients: (sorted[i].client, dup.client) });
        }
        for h in &sorted[i..j] {
            if let Some(larger) = earliest_larger {
                if larger.granted < h.lock_sent {
                    out.push(Violation::TokenNotIncreasing { earlier: id(larger), later: id(h) });
                }
            }
        }
        for h in &sorted[i..j] {
            if earliest_larger.is_none_or(|e| h.granted < e.granted) {
                earliest_larger = Some(h);
            }
        }
        i = j;
    }
}

/// Per name: a wait certainly queued before another's LOCK was sent is granted first.
fn check_fifo(holds: &[Hold], out: &mut Vec<Violation>) {
    for (name, mut list) in by_name(holds) {
        // Descending token: the earliest `queued` among larger tokens, against each LOCK send.
        list.sort_by_key(|h| std::cmp::Reverse(h.token));
        let mut earliest: Option<(&Hold, Instant)> = None;
        for h in list {
            if let Some((first, queued)) = earliest {
                if first.token > h.token && queued < h.lock_sent {
                    out.push(Violation::Fifo {
                        name: name.to_owned(),
                        queued_first: id(first),
                        granted_first: id(h),
                    });
                }
            }
            if let Some(q) = h.queued {
                if earliest.is_none_or(|(_, e)| q < e) {
                    earliest = Some((h, q));
                }
            }
        }
    }
}
