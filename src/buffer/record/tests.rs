//! The record format's tests: events come back as they were (every way
//! one differs from the one before, format 0 too), a log line's overhead
//! stays small, and damage is caught, never a panic.

use super::*;

fn sample() -> Vec<Event> {
    let mut data = Map::new();
    data.push(Str::from("message"), Value::Str(Str::from("GET / 200 ünïcode")));
    data.push(Str::from("n"), Value::Int(-7));
    data.push(Str::from("f"), Value::Float(1.5));
    data.push(
        Str::from("list"),
        Value::Array(vec![Value::Null, Value::Bool(true), Value::Bool(false), Value::Object(Map::new())]),
    );
    let mut attrs = Map::new();
    attrs.push(Str::from("traceparent"), Value::Str(Str::from("00-abc")));
    vec![
        Event {
            id: EventId::Generated(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            time: 1_700_000_000_123_456,
            ty: Str::from("log.line"),
            source: Str::from("hostwatch://h/logs"),
            subject: Some(Str::from("/var/log/a.log")),
            host: Str::from("h"),
            attrs,
            data: Value::Object(data),
        },
        Event {
            id: EventId::Given(Str::from("app-1")),
            time: -1,
            ty: Str::from("t"),
            source: Str::from("s"),
            subject: None,
            host: Str::from(""),
            attrs: Map::new(),
            data: Value::Null,
        },
    ]
}

#[test]
fn events_come_back_as_they_were() {
    let events = sample();
    let mut out = Vec::new();
    encode(&events, &mut out);
    let (len, crc) = header(out[..HEADER].try_into().unwrap());
    assert_eq!(len, out.len() - HEADER);
    assert!(intact(&out[HEADER..], crc));
    let (back, size) = decode_sized(Bytes::copy_from_slice(&out[HEADER..])).unwrap();
    assert_eq!(back, events);
    assert!(size >= out.len() - HEADER + std::mem::size_of_val(&events[..]));
}

/// Events that differ from the one before in every way the format
/// notes: the source, type, subject and host; given and generated ids,
/// out of order; times going back; keys added, dropped and renamed,
/// nested objects in arrays.
fn varied() -> Vec<Event> {
    let mut events = sample();
    events.extend(sample());
    let mut e = events[0].clone();
    e.id = EventId::Generated(1);
    e.time = i64::MIN;
    e.source = Str::from("hostwatch://h/other");
    e.subject = Some(Str::from("/var/log/b.log"));
    let mut inner = Map::new();
    inner.push(Str::from("status"), Value::Int(i64::MAX));
    inner.push(Str::from("path"), Value::Str(Str::from("/")));
    let mut data = Map::new();
    data.push(Str::from("message"), Value::Str(Str::from("x")));
    data.push(Str::from("http"), Value::Object(inner.clone()));
    data.push(Str::from("list"), Value::Array(vec![Value::Object(inner.clone()), Value::Float(-0.0)]));
    e.data = Value::Object(data.clone());
    events.push(e.clone());
    e.id = EventId::Generated(u128::MAX);
    e.time = i64::MAX;
    inner.push(Str::from("extra"), Value::Null);
    data.set_at(1, Value::Object(inner));
    data.push(Str::from("n"), Value::Int(i64::MIN));
    e.data = Value::Object(data);
    events.push(e.clone());
    e.subject = None;
    e.host = Str::from("other host");
    e.ty = Str::from("other.type");
    e.data = Value::Array(vec![Value::Str(Str::from("a"))]);
    events.push(e);
    events
}

#[test]
fn events_that_differ_from_the_one_before_come_back_as_they_were() {
    let events = varied();
    let mut out = Vec::new();
    encode(&events, &mut out);
    assert_eq!(decode(Bytes::copy_from_slice(&out[HEADER..])).unwrap(), events);
}

#[test]
fn records_of_format_0_still_read() {
    let events = varied();
    let mut out = Vec::new();
    v0::encode(&events, &mut out);
    let (_, crc) = header(out[..HEADER].try_into().unwrap());
    assert!(intact(&out[HEADER..], crc));
    assert_eq!(decode(Bytes::copy_from_slice(&out[HEADER..])).unwrap(), events);
}

#[test]
fn a_log_line_takes_few_bytes_besides_its_text() {
    // As the file source makes them: the line, its file, its offset.
    let line =
        |i: usize| format!("192.168.1.7 - - [27/Nov/2026:10:00:00 +0000] \"GET /{i} HTTP/1.1\" 200 512");
    let file = Str::from("/var/log/nginx/access.log");
    let mut ids = crate::event::id::IdGen::new();
    ids.set_time(1_790_000_000_000);
    let (mut offset, mut text) = (0, 0);
    let events: Vec<Event> = (0..1000)
        .map(|i| {
            let line = line(i);
            let mut data = Map::new();
            data.push(Str::from_static("message"), Value::Str(Str::from(line.as_str())));
            data.push(Str::from_static("file"), Value::Str(file.clone()));
            data.push(Str::from_static("offset"), Value::Int(offset));
            offset += line.len() as i64 + 1;
            text += line.len();
            Event {
                id: EventId::Generated(ids.next_id()),
                time: 1_790_000_000_000_000 + i as i64,
                ty: Str::from_static("log.line"),
                source: Str::from_static("hostwatch://web-1/logs"),
                subject: Some(file.clone()),
                host: Str::from_static("web-1"),
                attrs: Map::new(),
                data: Value::Object(data),
            }
        })
        .collect();
    let mut out = Vec::new();
    encode(&events, &mut out);
    let overhead = (out.len() - text) / 1000;
    // flags, id (1 + 4), time, data (tag, count), message (key, tag,
    // length), file (key, tag), offset (key, tag, difference).
    assert!(overhead <= 18, "{overhead} bytes per event besides the line");
    assert_eq!(decode(Bytes::copy_from_slice(&out[HEADER..])).unwrap(), events);
}

#[test]
fn damage_is_caught_by_the_checksum_or_the_decoder_never_a_panic() {
    let mut out = Vec::new();
    encode(&varied(), &mut out);
    let (_, crc) = header(out[..HEADER].try_into().unwrap());
    for i in HEADER..out.len() {
        let mut bad = out.clone();
        bad[i] ^= 0x55;
        assert!(!intact(&bad[HEADER..], crc), "a flipped byte at {i} passed the checksum");
        let _ = decode(Bytes::copy_from_slice(&bad[HEADER..]));
    }
    for cut in HEADER..out.len() {
        assert!(decode(Bytes::copy_from_slice(&out[HEADER..cut])).is_err());
    }
}
