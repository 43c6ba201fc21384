//! Event time: microseconds since the Unix epoch, UTC.
//!
//! Stored as an integer so that events are cheap to create and compare;
//! formatted as RFC 3339 with microseconds only when encoded.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Timelike};

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// Parses an RFC 3339 timestamp (any offset) into UTC microseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_micros())
}

/// Formats `2026-11-27T03:50:00.123456Z`. Callers cache the result: all
/// events of a batch usually share one time.
pub fn format_rfc3339(micros: i64, out: &mut Vec<u8>) {
    let Some(t) = DateTime::from_timestamp_micros(micros) else {
        out.extend_from_slice(b"1970-01-01T00:00:00.000000Z");
        return;
    };
    let mut buf = [0u8; 27];
    let year = t.year().clamp(0, 9999) as u32;
    put(&mut buf[0..4], year);
    buf[4] = b'-';
    put(&mut buf[5..7], t.month());
    buf[7] = b'-';
    put(&mut buf[8..10], t.day());
    buf[10] = b'T';
    put(&mut buf[11..13], t.hour());
    buf[13] = b':';
    put(&mut buf[14..16], t.minute());
    buf[16] = b':';
    put(&mut buf[17..19], t.second());
    buf[19] = b'.';
    put(&mut buf[20..26], micros.rem_euclid(1_000_000) as u32);
    buf[26] = b'Z';
    out.extend_from_slice(&buf);
}

/// Writes `n` as zero-padded decimal filling `dst`.
fn put(dst: &mut [u8], mut n: u32) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(micros: i64) -> String {
        let mut v = Vec::new();
        format_rfc3339(micros, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn formats_with_microseconds() {
        assert_eq!(fmt(1_795_751_400_123_456), "2026-11-27T03:50:00.123456Z");
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn parses_offsets_into_utc() {
        let a = parse_rfc3339("2026-11-27T05:50:00.123456+02:00").unwrap();
        assert_eq!(fmt(a), "2026-11-27T03:50:00.123456Z");
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
