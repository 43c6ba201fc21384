//! A streaming HTTP/1.0 and 1.1 message parser for one direction of a
//! connection: heads through `httparse`, bodies framed by Content-Length,
//! chunked encoding or the end of the connection. Bodies are counted, not
//! kept (beyond what a caller copies out), so a body larger than memory
//! costs nothing.

/// The most bytes a message head may take.
pub const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 100;

/// A parsed message head.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// Requests: method and target.
    pub method: String,
    pub target: String,
    /// Responses: status and reason.
    pub status: u16,
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    /// The head's size on the wire.
    pub bytes: usize,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub enum Item {
    /// A head; the body (if any) follows.
    Head(Head),
    /// Body bytes (the caller gets them in the consumed span).
    Body,
    /// The message ended; its body's size.
    End { body_bytes: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Head,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Upgraded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// What a response needs to know about the request it answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    pub head_request: bool,
    pub connect: bool,
}

impl Expect {
    /// What a response to this request head must know.
    pub fn of(request: &Head) -> Self {
        Expect {
            head_request: request.method.eq_ignore_ascii_case("HEAD"),
            connect: request.method.eq_ignore_ascii_case("CONNECT"),
        }
    }
}

pub struct Parser {
    side: Side,
    state: State,
    body: u64,
    /// Responses: what each request waiting for one asked.
    pub expect: std::collections::VecDeque<Expect>,
}

impl Parser {
    pub fn new(side: Side) -> Self {
        Parser { side, state: State::Head, body: 0, expect: Default::default() }
    }

    pub fn upgraded(&self) -> bool {
        self.state == State::Upgraded
    }

    /// Between messages: the next byte starts a head.
    pub fn at_head(&self) -> bool {
        self.state == State::Head
    }

    /// `n` bytes of the stream were lost (not captured). True if they fall
    /// inside a body whose end does not depend on them: they count as body
    /// and parsing goes on. False if the stream can no longer be followed.
    pub fn skip(&mut self, n: u64) -> bool {
        match self.state {
            State::Length(left) if n <= left => self.state = State::Length(left - n),
            State::Chunked(Chunk::Data(left)) if n <= left => {
                self.state = State::Chunked(if n == left { Chunk::DataEnd } else { Chunk::Data(left - n) });
            }
            State::UntilClose | State::Upgraded => {}
            _ => return false,
        }
        self.body += n;
        true
    }

    /// The body bytes of the current message so far.
    pub fn body_so_far(&self) -> u64 {
        self.body
    }

    /// Body bytes left in a message framed by Content-Length, if that is
    /// where the parser is: a loss longer than this ended the message.
    pub fn length_left(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            _ => None,
        }
    }

    /// Frames the body of the response head just returned as an answer to
    /// a request of this kind (a caller that pairs responses itself).
    pub fn reframe(&mut self, head: &Head, expect: Expect) -> Result<(), String> {
        self.expect.clear();
        self.expect.push_back(expect);
        self.state = self.framing(head)?;
        self.expect.clear();
        Ok(())
    }

    /// Starts over at a message head (after a loss, once a head is found).
    pub fn reset(&mut self) {
        if self.state != State::Upgraded {
            self.state = State::Head;
        }
        self.body = 0;
    }

    /// The end of the stream: a body read until close ends here.
    pub fn close(&mut self) -> Option<Item> {
        if self.state == State::UntilClose {
            self.state = State::Head;
            return Some(Item::End { body_bytes: std::mem::take(&mut self.body) });
        }
        None
    }

    /// The next item at the start of `buf`, and how many bytes it consumed;
    /// `Ok(None)` when more bytes are needed.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<(Item, usize)>, String> {
        match self.state {
            State::Upgraded | State::UntilClose => {
                if buf.is_empty() {
                    return Ok(None);
                }
                self.body += buf.len() as u64;
                Ok(Some((Item::Body, buf.len())))
            }
            State::Head => self.head(buf),
            State::Length(0) => {
                self.state = State::Head;
                Ok(Some((Item::End { body_bytes: std::mem::take(&mut self.body) }, 0)))
            }
            State::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (left.min(buf.len() as u64)) as usize;
                self.body += n as u64;
                self.state = State::Length(left - n as u64);
                Ok(Some((Item::Body, n)))
            }
            State::Chunked(c) => self.chunked(c, buf),
        }
    }

    fn head(&mut self, buf: &[u8]) -> Result<Option<(Item, usize)>, String> {
        // Blank lines before a message are allowed (RFC 9112 2.2).
        let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        if skip > MAX_HEAD {
            return Err(format!("more than {MAX_HEAD} bytes of blank lines"));
        }
        if skip > 0 {
            // Consumed with the head that follows (or again next time).
            return self.head(&buf[skip..]).map(|r| r.map(|(i, n)| (i, n + skip)));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = Head::default();
        let (len, raw_headers) = match self.side {
            Side::Request => {
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        head.method = req.method.unwrap_or("").to_string();
                        head.target = req.path.unwrap_or("").to_string();
                        head.version = req.version.unwrap_or(1);
                        (n, req.headers.to_vec())
                    }
                    Ok(httparse::Status::Partial) => return self.partial(buf),
                    Err(e) => return Err(format!("malformed request: {e}")),
                }
            }
            Side::Response => {
                let mut res = httparse::Response::new(&mut headers);
                match res.parse(buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        head.status = res.code.unwrap_or(0);
                        head.reason = res.reason.unwrap_or("").to_string();
                        head.version = res.version.unwrap_or(1);
                        (n, res.headers.to_vec())
                    }
                    Ok(httparse::Status::Partial) => return self.partial(buf),
                    Err(e) => return Err(format!("malformed response: {e}")),
                }
            }
        };
        head.bytes = len;
        head.headers = raw_headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        self.body = 0;
        self.state = self.framing(&head)?;
        Ok(Some((Item::Head(head), len)))
    }

    fn partial(&self, buf: &[u8]) -> Result<Option<(Item, usize)>, String> {
        if buf.len() > MAX_HEAD {
            Err(format!("a message head longer than {MAX_HEAD} bytes"))
        } else {
            Ok(None)
        }
    }

    /// How the body of a message with this head is delimited.
    fn framing(&mut self, head: &Head) -> Result<State, String> {
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|t| t.rsplit(',').next().is_some_and(|l| l.trim().eq_ignore_ascii_case("chunked")));
        let length = match head.header("content-length") {
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| format!("bad content-length `{v}`"))?),
            None => None,
        };
        match self.side {
            // What the response side must know of this request is the
            // caller's to pass on (`Expect::of`): a request parser keeps no
            // queue that would grow with every request of a connection.
            Side::Request => {
                Ok(if chunked { State::Chunked(Chunk::Size) } else { State::Length(length.unwrap_or(0)) })
            }
            Side::Response => {
                let status = head.status;
                if (100..200).contains(&status) {
                    if status == 101 {
                        self.expect.pop_front();
                        return Ok(State::Upgraded);
                    }
                    // Interim: the request still waits for its final answer.
                    return Ok(State::Length(0));
                }
                let expect = self.expect.pop_front().unwrap_or_default();
                if expect.connect && (200..300).contains(&status) {
                    return Ok(State::Upgraded);
                }
                if expect.head_request || status == 204 || status == 304 {
                    return Ok(State::Length(0));
                }
                Ok(if chunked {
                    State::Chunked(Chunk::Size)
                } else {
                    match length {
                        Some(n) => State::Length(n),
                        None => State::UntilClose,
                    }
                })
            }
        }
    }

    fn chunked(&mut self, c: Chunk, buf: &[u8]) -> Result<Option<(Item, usize)>, String> {
        match c {
            Chunk::Size | Chunk::DataEnd | Chunk::Trailer => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    return if buf.len() > 4096 {
                        Err("a chunk line longer than 4096 bytes".into())
                    } else {
                        Ok(None)
                    };
                };
                let line = std::str::from_utf8(&buf[..nl]).map_err(|_| "a chunk line that is not text")?;
                let line = line.trim_end_matches('\r');
                let consumed = nl + 1;
                match c {
                    Chunk::Size => {
                        let hex = line.split(';').next().unwrap_or("").trim();
                        let size =
                            u64::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size `{hex}`"))?;
                        self.state =
                            State::Chunked(if size == 0 { Chunk::Trailer } else { Chunk::Data(size) });
                    }
                    Chunk::DataEnd => {
                        if !line.is_empty() {
                            return Err("a chunk not followed by CRLF".into());
                        }
                        self.state = State::Chunked(Chunk::Size);
                    }
                    _ => {
                        if line.is_empty() {
                            self.state = State::Head;
                            return Ok(Some((
                                Item::End { body_bytes: std::mem::take(&mut self.body) },
                                consumed,
                            )));
                        }
                    }
                }
                Ok(Some((Item::Body, consumed)))
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (left.min(buf.len() as u64)) as usize;
                self.body += n as u64;
                self.state = State::Chunked(if left == n as u64 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n as u64)
                });
                Ok(Some((Item::Body, n)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; the items in order.
    fn run(side: Side, input: &[u8], step: usize, expect: &[Expect]) -> Vec<String> {
        let mut p = Parser::new(side);
        p.expect.extend(expect.iter().copied());
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            let mut at = 0;
            while let Some((item, n)) = p.next(&buf[at..]).unwrap() {
                at += n;
                match item {
                    Item::Head(h) if side == Side::Request => out.push(format!("{} {}", h.method, h.target)),
                    Item::Head(h) => out.push(format!("{}", h.status)),
                    Item::End { body_bytes } => out.push(format!("end {body_bytes}")),
                    Item::Body => {}
                }
            }
            buf.drain(..at);
        }
        if let Some(Item::End { body_bytes }) = p.close() {
            out.push(format!("end {body_bytes}"));
        }
        out
    }

    #[test]
    fn requests_pipelined_with_bodies_in_any_pieces() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n";
        for step in [1, 2, 7, 1000] {
            assert_eq!(
                run(Side::Request, input, step, &[]),
                ["GET /a", "end 0", "POST /b", "end 5", "PUT /c", "end 5"],
                "step {step}"
            );
        }
    }

    #[test]
    fn responses_interim_head_304_and_until_close() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.0 200 OK\r\n\r\nrest of the stream";
        let e = Expect::default();
        let head = Expect { head_request: true, connect: false };
        assert_eq!(
            run(Side::Response, input, 3, &[e, head, e, e]),
            ["100", "end 0", "200", "end 3", "200", "end 0", "304", "end 0", "200", "end 18"]
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            // Found by fuzzing: blank lines without end were held, unbounded.
            &[b'\n'; MAX_HEAD + 1][..],
        ] {
            let mut p = Parser::new(Side::Request);
            let mut at = 0;
            let mut failed = false;
            while at < bad.len() {
                match p.next(&bad[at..]) {
                    Ok(Some((_, n))) => at += n.max(1),
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
