//! The disk buffer's reader on whatever a segment file may hold after a
//! crash, a bad disk or a hand edit: `inspect` (which reads every record
//! the way the agent does), `scan` (frames only) and `record::decode` on
//! the raw bytes must report damage, never panic or allocate without bound.
//!
//! Input: `[n, data...]`; `n` picks where the saved position points
//! (offset `n * 7` in the segment), and the data is the segment itself.
//! Half the time a valid record is put in front, so that the reader gets
//! past the first frame into the damaged part.
#![no_main]

use hostwatch::buffer::{disk, record};
use hostwatch::event::{Event, EventId, Map, Str, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&n, data)) = input.split_first() else { return };
    let _ = record::decode(bytes::Bytes::copy_from_slice(data));

    let mut segment = Vec::new();
    if n & 1 == 1 {
        let e = Event {
            id: EventId::Generated(7),
            time: 1,
            ty: Str::from("t"),
            source: Str::from("s"),
            subject: None,
            host: Str::from("h"),
            attrs: Map::new(),
            data: Value::Str(Str::from("x")),
        };
        record::encode(&[e], &mut segment);
    }
    segment.extend_from_slice(data);
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = disk::segment_path(dir.path(), 1);
    if std::fs::write(&path, &segment).is_err() {
        return;
    }
    let offset = u64::from(n >> 1) * 7;
    let _ = std::fs::write(dir.path().join("acked"), format!("1 {offset}\n"));
    if let Ok(report) = disk::inspect(dir.path()) {
        // What was read plus where the damage starts stays inside the file.
        for d in &report.damage {
            assert!(d.offset <= segment.len() as u64, "damage at {} past the end", d.offset);
        }
    }
    if let Ok((_, _, bytes, stop)) = disk::scan(&path, offset.min(segment.len() as u64)) {
        assert!(bytes <= segment.len() as u64);
        if let Some(at) = stop {
            assert!(at <= segment.len() as u64);
        }
    }
});
