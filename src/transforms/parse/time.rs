//! Times in parsed fields: the formats `time_format` names, read into
//! microseconds since the epoch.

use super::Format;
use crate::config::BuildError;
use crate::event::Value;

/// How a time is written.
#[derive(Clone, Debug)]
pub(super) enum TimeFormat {
    Rfc3339,
    Unix,
    UnixMs,
    /// Common Log Format: `27/Nov/2026:03:50:00 +0000`.
    Clf,
    /// RFC 3339, or RFC 3164's `Nov 27 03:50:00` (this year, UTC).
    Syslog,
    Strftime(String),
}

impl TimeFormat {
    /// The format `time_format` names; without one, the parsed format's own.
    pub(super) fn new(format: Format, time_format: Option<&str>) -> Result<Self, BuildError> {
        Ok(match time_format {
            None => match format {
                Format::NginxCombined | Format::ApacheCombined | Format::ApacheCommon => TimeFormat::Clf,
                Format::Syslog => TimeFormat::Syslog,
                _ => TimeFormat::Rfc3339,
            },
            Some("rfc3339") => TimeFormat::Rfc3339,
            Some("unix") => TimeFormat::Unix,
            Some("unix_ms") => TimeFormat::UnixMs,
            Some(f) => {
                if chrono::format::StrftimeItems::new(f).any(|i| matches!(i, chrono::format::Item::Error)) {
                    return Err(BuildError::new(format!("invalid `time_format` {f:?}")));
                }
                TimeFormat::Strftime(f.to_string())
            }
        })
    }

    /// A field's time, in microseconds since the epoch.
    pub(super) fn time_of(&self, v: &Value) -> Result<i64, String> {
        let text = match v {
            Value::Str(s) => s.as_str(),
            Value::Int(n) => {
                return match self {
                    TimeFormat::UnixMs => Ok(n.saturating_mul(1000)),
                    _ => Ok(n.saturating_mul(1_000_000)),
                };
            }
            Value::Float(f) => {
                return Ok(match self {
                    TimeFormat::UnixMs => (f * 1000.0) as i64,
                    _ => (f * 1_000_000.0) as i64,
                });
            }
            other => return Err(format!("a {} is not a time", other.kind())),
        };
        let bad = || format!("`{text}` is not a time in the expected format");
        match self {
            TimeFormat::Rfc3339 => crate::event::time::parse_rfc3339(text).ok_or_else(bad),
            TimeFormat::Unix => text.trim().parse::<f64>().map(|s| (s * 1e6) as i64).map_err(|_| bad()),
            TimeFormat::UnixMs => text.trim().parse::<f64>().map(|s| (s * 1e3) as i64).map_err(|_| bad()),
            TimeFormat::Clf => clf_time(text.as_bytes()).ok_or_else(bad),
            TimeFormat::Syslog => {
                crate::event::time::parse_rfc3339(text).or_else(|| bsd_time(text)).ok_or_else(bad)
            }
            TimeFormat::Strftime(f) => chrono::DateTime::parse_from_str(text, f)
                .map(|t| t.timestamp_micros())
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(text, f).map(|t| t.and_utc().timestamp_micros())
                })
                .map_err(|_| bad()),
        }
    }
}

/// `27/Nov/2026:03:50:00 +0000` in microseconds since the epoch.
fn clf_time(t: &[u8]) -> Option<i64> {
    if t.len() != 26 || t[2] != b'/' || t[6] != b'/' || t[11] != b':' || t[20] != b' ' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        t[r].iter().try_fold(0i64, |n, c| c.is_ascii_digit().then(|| n * 10 + (c - b'0') as i64))
    };
    let month = month_number(&t[3..6])?;
    let date = chrono::NaiveDate::from_ymd_opt(num(7..11)? as i32, month, num(0..2)? as u32)?;
    let (h, m, s) = (num(12..14)?, num(15..17)?, num(18..20)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let offset = (num(22..24)? * 3600 + num(24..26)? * 60) * if t[21] == b'-' { -1 } else { 1 };
    let days = date.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days();
    Some((days * 86_400 + h * 3600 + m * 60 + s - offset) * 1_000_000)
}

pub(super) fn month_number(m: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    MONTHS.iter().position(|x| x[..] == *m).map(|i| i as u32 + 1)
}

/// RFC 3164's `Nov 27 03:50:00` (no year: this year, UTC).
fn bsd_time(text: &str) -> Option<i64> {
    let year = chrono::Utc::now().format("%Y").to_string();
    let full = format!("{year} {}", text.split_whitespace().collect::<Vec<_>>().join(" "));
    chrono::NaiveDateTime::parse_from_str(&full, "%Y %b %d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}
