//! One connection's HTTP exchange in sniff mode: the requests and responses
//! its two parsed streams give, paired only where sequence numbers prove
//! which request a response answers.
//!
//! HTTP/1 answers requests in order, so on a connection followed without
//! loss the n-th response answers the n-th request. A loss breaks that
//! count, and then two bounds decide:
//!
//! - from below, the queue: a request leaves it only once it is known to
//!   be answered (its response seen, or known to have begun in a loss), so
//!   a response answers the oldest request queued or a later one;
//! - from above, the acknowledgement number of the response's first
//!   segment: the server had received the client's bytes before it, so the
//!   response answers a request that starts before it.
//!
//! A response is paired when both bounds name the same request: the oldest
//! queued, with no client bytes unknown before it, and no byte of a later
//! request received (the acknowledgement falls inside the oldest request or
//! exactly at its end). Otherwise it answers the oldest or a later one: the
//! oldest is reported with `gap: true` and `status: null`, and the response
//! is not reported — never a guessed pairing. With pipelining the server
//! may have read several requests when it answers the first; such a
//! response after a loss stays unpaired.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::{Cx, Half, MAX_PENDING, at_or_after, request_start, response_start};
use crate::event::{Map, Str, Value};
use crate::sources::http_capture::parser::{Expect, Head, Item, Side};
use crate::sources::http_capture::{Captured, Recording, Request};

/// Why a request is reported without a response.
const NOT_CAPTURED: &str = "response not captured";
const CLOSED: &str = "connection closed before a response";
const INCOMPLETE: &str = "response incomplete";
const NO_RESPONSE: &str = "no response";

/// A request in the client's stream, until its response is accounted for.
pub(super) struct Sent {
    /// The sequence number of its first byte.
    start: u32,
    /// The sequence number after its last byte, once sent whole and
    /// captured without loss.
    end: Option<u32>,
    /// Client bytes just before it were not captured (a loss, or a capture
    /// that joined the connection late): requests unknown here may precede
    /// it.
    after_unknown: bool,
    pub(super) req: Request,
}

/// The requests waiting for an answer, and what is known of the count of
/// responses.
struct Queue {
    client: SocketAddr,
    server: SocketAddr,
    requests: VecDeque<Sent>,
    /// The next response answers the oldest request queued: every response
    /// since the connection began, or since the last proven pairing, was
    /// seen or known to have begun in a loss.
    synced: bool,
    /// Client bytes after the newest request were not captured.
    unknown_tail: bool,
    /// The sequence number after the last client byte delivered.
    client_at: Option<u32>,
    /// The response being received answers the oldest request.
    answering: bool,
    /// A response came while requests unknown here may have been waiting:
    /// how many responses they take is unknown, so no later response can
    /// be proven to answer anything. Requests are reported as they end.
    blind: bool,
}

impl Queue {
    /// Reports the oldest request (answered by a response not seen) and
    /// removes it.
    fn pop_unseen(&mut self, rec: &Recording, out: &mut Vec<Map>, time: i64) {
        if let Some(s) = self.requests.pop_front()
            && !s.req.reported
        {
            out.push(report(rec, (self.client, self.server), &s.req, None, Some(NOT_CAPTURED), time, true));
        }
    }

    /// No response can be paired any more on this connection: the requests
    /// sent whole are reported now rather than at their timeout.
    fn go_blind(&mut self, rec: &Recording, out: &mut Vec<Map>, time: i64) {
        self.blind = true;
        self.answering = false;
        let ends = (self.client, self.server);
        self.requests.retain(|s| {
            if s.req.done && !s.req.reported {
                out.push(report(rec, ends, &s.req, None, Some(NOT_CAPTURED), time, true));
            }
            !s.req.done
        });
    }

    /// The oldest request, if nothing unknown comes before it.
    fn known_front(&self) -> Option<&Sent> {
        self.requests.front().filter(|s| !s.after_unknown)
    }

    /// A response head whose first segment acknowledged `ack`: whether it
    /// answers the oldest request, and what its framing needs to know. A
    /// response known to answer the oldest or a later one, but not which,
    /// takes the oldest out as answered unseen.
    fn head(&mut self, ack: u32, rec: &Recording, out: &mut Vec<Map>, time: i64) -> (bool, Expect) {
        if self.blind {
            return (false, Expect::default());
        }
        let Some(front) = self.known_front() else {
            // It answers a request not captured, or one after it.
            self.synced = false;
            if self.requests.front().is_some() {
                self.go_blind(rec, out, time);
            }
            return (false, Expect::default());
        };
        let expect = Expect::of(&front.req.head);
        if at_or_after(front.start, ack) {
            // The server had not received the oldest: the response answers
            // none that is queued (an unsolicited 408 before a close).
            return (false, expect);
        }
        if self.synced {
            return (true, expect);
        }
        // No byte of a later request can have reached the server.
        let alone = match front.end {
            Some(end) => at_or_after(end, ack),
            None => !front.req.done && self.client_at.is_some_and(|at| at_or_after(at, ack)),
        };
        if alone {
            self.synced = true;
            return (true, expect);
        }
        self.pop_unseen(rec, out, time);
        (false, Expect::default())
    }
}

pub(super) struct Exchange {
    pub(super) up: Half,
    pub(super) down: Half,
    q: Queue,
    /// The head of the response being received.
    response: Option<Head>,
    response_gap: bool,
    request_body: Option<Captured>,
    response_body: Option<Captured>,
    /// The connection switched protocols: nothing more is HTTP.
    upgraded: bool,
    pub(super) last: i64,
}

impl Exchange {
    pub(super) fn new(client: SocketAddr, server: SocketAddr) -> Self {
        Exchange {
            up: Half::new(Side::Request),
            down: Half::new(Side::Response),
            q: Queue {
                client,
                server,
                requests: VecDeque::new(),
                synced: false,
                // Until a SYN shows the connection's start, it may have
                // had requests before the capture saw it.
                unknown_tail: true,
                client_at: None,
                answering: false,
                blind: false,
            },
            response: None,
            response_gap: false,
            request_body: None,
            response_body: None,
            upgraded: false,
            last: 0,
        }
    }

    /// A SYN: the connection starts here, nothing came before.
    pub(super) fn started(&mut self) {
        if self.q.requests.is_empty() && self.q.client_at.is_none() {
            self.q.synced = true;
            self.q.unknown_tail = false;
        }
    }

    pub(super) fn half(&mut self, to_server: bool) -> &mut Half {
        if to_server { &mut self.up } else { &mut self.down }
    }

    /// Requests waiting (tests).
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.q.requests.len()
    }

    pub(super) fn request_gap(&mut self, n: u64, cx: &mut Cx) {
        self.q.client_at = self.q.client_at.map(|c| c.wrapping_add(n as u32));
        let sending = self.q.requests.back_mut().filter(|s| !s.req.done);
        if self.up.gap(n) {
            if let Some(s) = sending {
                s.req.gap = true;
            }
            // A body that ended in the loss ends now.
            self.requests_data(&[], 0, self.last, cx);
            return;
        }
        // The request being sent, if any, ends here as far as we know; what
        // follows may hold requests never seen.
        self.q.unknown_tail = true;
        if let Some(s) = sending {
            s.req.gap = true;
            s.req.done = true;
            s.req.body = self.request_body.take();
            if self.q.blind
                && let Some(s) = self.q.requests.pop_back()
            {
                let ends = (self.q.client, self.q.server);
                cx.out.push(report(cx.rec, ends, &s.req, None, Some(NOT_CAPTURED), self.last, true));
            }
        }
    }

    pub(super) fn response_gap(&mut self, n: u64, cx: &mut Cx) {
        let left = self.down.parser.length_left();
        let so_far = self.down.parser.body_so_far();
        let at_head = self.down.parser.at_head() && !self.down.lost;
        let held = !self.down.buf.is_empty();
        if self.down.gap(n) {
            self.response_gap |= self.response.is_some();
            // A body that ended in the loss ends now.
            self.responses_data(&[], 0, 0, self.last, cx);
            return;
        }
        let synced = std::mem::replace(&mut self.q.synced, false);
        // Whether the lost bytes hold the start of a response. One lost
        // byte alone may be the FIN.
        let began = match self.response.take() {
            Some(head) => {
                // Its head was seen: the status stands, the rest is lost.
                let body = match left {
                    Some(left) if n >= left => so_far + left,
                    _ => so_far,
                };
                let captured = self.response_body.take();
                if std::mem::take(&mut self.q.answering) {
                    self.complete(&head, body, captured.as_ref(), None, true, cx);
                }
                // A message of known length ended in the loss, and more
                // came after it.
                left.is_some_and(|left| n >= left + 2)
            }
            // Between messages: a response began in the loss, or in the
            // bytes held of a head cut by it.
            None => at_head && (n >= 2 || held),
        };
        self.response_body = None;
        if synced && began && !self.q.blind && self.q.known_front().is_some() {
            // That response answers the oldest request.
            self.q.pop_unseen(cx.rec, cx.out, self.last);
        }
    }

    pub(super) fn requests_data(&mut self, bytes: &[u8], seq: u32, time: i64, cx: &mut Cx) {
        if !bytes.is_empty() {
            self.q.client_at = Some(seq.wrapping_add(bytes.len() as u32));
        }
        if self.upgraded {
            return;
        }
        if self.up.lost {
            if !request_start(bytes) {
                return;
            }
            self.up.lost = false;
            self.up.parser.reset();
        }
        let Exchange { up, q, request_body, .. } = self;
        let (rec, out) = (cx.rec, &mut *cx.out);
        let err = up.feed(bytes, seq, time, &mut |_, item, span, at, time| match item {
            Item::Head(head) => {
                let mut after_unknown = std::mem::take(&mut q.unknown_tail);
                if q.requests.len() >= MAX_PENDING
                    && let Some(old) = q.requests.pop_front()
                {
                    // Forgotten unanswered: the next response may answer
                    // it, so what comes first is unknown.
                    q.synced = false;
                    q.answering = false;
                    match q.requests.front_mut() {
                        Some(next) => next.after_unknown = true,
                        None => after_unknown = true,
                    }
                    if !old.req.reported {
                        let ends = (q.client, q.server);
                        out.push(report(rec, ends, &old.req, None, Some(NO_RESPONSE), time, old.req.gap));
                    }
                }
                *request_body = rec.capture(&head);
                let req = Request {
                    head,
                    started: time,
                    body_bytes: 0,
                    done: false,
                    reported: false,
                    gap: false,
                    body: None,
                };
                q.requests.push_back(Sent { start: at, end: None, after_unknown, req });
            }
            Item::Body => {
                if let Some(b) = request_body.as_mut() {
                    b.add(span, rec.max_body());
                }
            }
            Item::End { body_bytes } => {
                if let Some(s) = q.requests.back_mut().filter(|s| !s.req.done) {
                    s.req.body_bytes = body_bytes;
                    s.req.done = true;
                    s.req.body = request_body.take();
                    if !s.req.gap {
                        s.end = Some(at.wrapping_add(span.len() as u32));
                    }
                }
                if q.blind
                    && let Some(s) = q.requests.pop_back()
                {
                    out.push(report(rec, (q.client, q.server), &s.req, None, Some(NOT_CAPTURED), time, true));
                }
            }
        });
        if err.is_some() {
            cx.counts.malformed += 1;
            // What follows the malformed bytes is not known as requests.
            self.q.unknown_tail = true;
        }
    }

    pub(super) fn responses_data(&mut self, bytes: &[u8], seq: u32, ack: u32, time: i64, cx: &mut Cx) {
        if self.upgraded {
            return;
        }
        if self.down.lost {
            if !response_start(bytes) {
                return;
            }
            self.down.lost = false;
            self.down.parser.reset();
            self.response = None;
            self.response_body = None;
            self.q.answering = false;
        }
        let Exchange { down, q, response, response_gap, response_body, upgraded, .. } = self;
        let (rec, out) = (cx.rec, &mut *cx.out);
        let err = down.feed(bytes, seq, time, &mut |parser, item, span, _, time| match item {
            Item::Head(head) => {
                if (100..200).contains(&head.status) && head.status != 101 {
                    return; // interim: the request still waits for its answer
                }
                let (pair, expect) = q.head(ack, rec, out, time);
                if parser.reframe(&head, expect).is_err() {
                    // Framed once already: cannot fail differently.
                    return;
                }
                q.answering = pair;
                *response_gap = false;
                *response_body = if pair { rec.capture(&head) } else { None };
                if head.status == 101 || parser.upgraded() {
                    // The connection switched protocols (or tunnels): the
                    // exchange ends with the head.
                    *upgraded = true;
                    if std::mem::take(&mut q.answering) {
                        complete_front(q, rec, out, &head, 0, None, None, false, time);
                    }
                } else {
                    *response = Some(head);
                }
            }
            Item::Body => {
                if let Some(b) = response_body.as_mut() {
                    b.add(span, rec.max_body());
                }
            }
            Item::End { body_bytes } => {
                if let Some(head) = response.take()
                    && std::mem::take(&mut q.answering)
                {
                    let body = response_body.take();
                    let gap = std::mem::take(response_gap);
                    complete_front(q, rec, out, &head, body_bytes, body.as_ref(), None, gap, time);
                }
                *response_body = None;
            }
        });
        if err.is_some() {
            cx.counts.malformed += 1;
            self.q.synced = false;
            self.response = None;
            self.q.answering = false;
        }
    }

    /// The oldest request is answered by `head`.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &mut self,
        head: &Head,
        body_bytes: u64,
        body: Option<&Captured>,
        error: Option<&str>,
        gap: bool,
        cx: &mut Cx,
    ) {
        let gap = gap || std::mem::take(&mut self.response_gap);
        complete_front(&mut self.q, cx.rec, cx.out, head, body_bytes, body, error, gap, self.last);
    }

    /// The server's stream ended (nothing of it missing): a body read
    /// until close ends here.
    pub(super) fn end_of_responses(&mut self, cx: &mut Cx) {
        if let Some(Item::End { body_bytes }) = self.down.parser.close()
            && let Some(head) = self.response.take()
        {
            let body = self.response_body.take();
            if std::mem::take(&mut self.q.answering) {
                self.complete(&head, body_bytes, body.as_ref(), None, false, cx);
            }
        }
    }

    /// The connection is over (closed, reset or idle) and what was held
    /// has been parsed: a response cut short keeps what was seen of it, and
    /// requests without one are reported.
    pub(super) fn closed(&mut self, cx: &mut Cx) {
        self.end_of_responses(cx);
        if let Some(head) = self.response.take()
            && std::mem::take(&mut self.q.answering)
        {
            let body = self.response_body.take();
            let so_far = self.down.parser.body_so_far();
            self.complete(&head, so_far, body.as_ref(), Some(INCOMPLETE), false, cx);
        }
        let q = &mut self.q;
        for s in std::mem::take(&mut q.requests) {
            if !s.req.reported && s.req.done {
                let (error, gap) = if q.synced { (CLOSED, s.req.gap) } else { (NOT_CAPTURED, true) };
                cx.out.push(report(cx.rec, (q.client, q.server), &s.req, None, Some(error), self.last, gap));
            }
        }
    }

    /// Reports the requests unanswered for `timeout` microseconds at `now`.
    pub(super) fn timeouts(&mut self, rec: &Recording, now: i64, timeout: i64, out: &mut Vec<Map>) {
        let q = &mut self.q;
        for s in q.requests.iter_mut() {
            let r = &mut s.req;
            if r.done && !r.reported && now - r.started >= timeout {
                r.reported = true;
                // Without a loss, there was no answer; after one, it may
                // have been lost.
                let (error, gap) = if q.synced { (NO_RESPONSE, r.gap) } else { (NOT_CAPTURED, true) };
                out.push(report(rec, (q.client, q.server), r, None, Some(error), now, gap));
            }
        }
    }
}

/// The oldest request is answered by `head`: reported, and taken out.
#[allow(clippy::too_many_arguments)]
fn complete_front(
    q: &mut Queue,
    rec: &Recording,
    out: &mut Vec<Map>,
    head: &Head,
    body_bytes: u64,
    body: Option<&Captured>,
    error: Option<&str>,
    gap: bool,
    time: i64,
) {
    let Some(s) = q.requests.pop_front() else { return };
    if s.req.reported {
        return;
    }
    let res = Some((head, body_bytes, body));
    out.push(report(rec, (q.client, q.server), &s.req, res, error, time, gap || s.req.gap));
}

/// The `http.transaction` of a sniffed request (with `gap`: whether part of
/// the exchange was not captured).
pub(super) fn report(
    rec: &Recording,
    (client, server): (SocketAddr, SocketAddr),
    req: &Request,
    res: Option<(&Head, u64, Option<&Captured>)>,
    error: Option<&str>,
    time: i64,
    gap: bool,
) -> Map {
    let mut data = rec.transaction(req, res, error, client, server, time);
    data.push(Str::from_static("gap"), Value::Bool(gap));
    data
}
