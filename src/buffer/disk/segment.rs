//! Segment files: the log's numbered files (`<n>.seg`) and the frames in
//! them. Creating a segment, listing them, walking their frames from the
//! headers alone (`scan`, `frames`), finding records a newer hostwatch
//! wrote, and reading one record back whole (`read_record`): what the
//! writer, the reader, the start-up and `inspect` share about the files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::buffer::record;

/// The file of segment `n`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// The segment numbers in `dir`, in order.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut all = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse().ok()) {
            all.push(n);
        }
    }
    all.sort_unstable();
    Ok(all)
}

pub(super) fn create_segment(dir: &Path, n: u64) -> io::Result<File> {
    let file = OpenOptions::new().create_new(true).append(true).open(segment_path(dir, n))?;
    // The new name must survive a crash as well as the data in it.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// What a segment holds from `offset` on, read from the record headers and
/// event counts alone: (records, events, bytes), and where it stops being
/// readable (a torn or damaged frame), if it does.
pub fn scan(path: &Path, offset: u64) -> io::Result<(u64, u64, u64, Option<u64>)> {
    let (mut records, mut events) = (0, 0);
    let (bytes, stop) = frames(path, offset, |_, _, _, word| {
        records += 1;
        events += u64::from(record::count(word));
        Ok(true)
    })?;
    Ok((records, events, bytes, stop))
}

/// Calls `each(file, offset, length, first word)` for each frame of a
/// segment from `offset` on, until it returns false or a frame is torn or
/// damaged. Returns the bytes walked, and where a damaged frame stopped it.
pub(super) fn frames(
    path: &Path,
    offset: u64,
    mut each: impl FnMut(&mut File, u64, usize, u32) -> io::Result<bool>,
) -> io::Result<(u64, Option<u64>)> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut at = offset;
    f.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; record::HEADER + 4];
    while at < size {
        if at + head.len() as u64 > size || f.read_exact(&mut head).is_err() {
            return Ok((at - offset, Some(at)));
        }
        let (len, _) = record::header(head[..record::HEADER].try_into().unwrap_or(&[0; record::HEADER]));
        let word = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if !(4..=record::MAX_PAYLOAD).contains(&len) || at + (record::HEADER + len) as u64 > size {
            return Ok((at - offset, Some(at)));
        }
        if !each(&mut f, at, len, word)? {
            return Ok((at - offset, None));
        }
        at += (record::HEADER + len) as u64;
        f.seek(SeekFrom::Start(at))?;
    }
    Ok((at - offset, None))
}

/// The first intact record of `path` from `offset` on in a format newer
/// than this version reads, and that format. Such records were written by
/// a newer hostwatch (rolled back since): they are not damage to skip but
/// events to leave for it.
pub(super) fn newer_record(path: &Path, offset: u64) -> io::Result<Option<(u64, u32)>> {
    let mut found = None;
    frames(path, offset, |f, at, len, word| {
        let format = record::format(word);
        if format <= record::FORMAT {
            return Ok(true);
        }
        let mut frame = vec![0; record::HEADER + len];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut frame)?;
        let (_, crc) = record::header(frame[..record::HEADER].try_into().unwrap_or(&[0; record::HEADER]));
        if record::intact(&frame[record::HEADER..], crc) {
            found = Some((at, format));
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// One record read back: its events, the memory they hold (an estimate,
/// for the driver's channel) and the record's length on disk.
pub(super) struct Record {
    pub events: Vec<crate::event::Event>,
    pub size: usize,
    pub len: u64,
}

/// Reads one record at `offset` of `file`: `Ok(None)` at the end of the
/// segment; `Err` for a record that is torn or corrupt.
pub(super) fn read_record(file: &mut File, path: &Path, offset: u64) -> Result<Option<Record>, String> {
    let mut header = [0u8; record::HEADER];
    let mut got = 0;
    while got < header.len() {
        match file.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(format!("{}: a record torn at byte {offset}", path.display())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    let (len, crc) = record::header(&header);
    if len > record::MAX_PAYLOAD {
        return Err(format!("{}: a record of {len} bytes at byte {offset}: corrupt", path.display()));
    }
    // Read into spare capacity: no zeroing of what the read overwrites.
    let mut payload = Vec::with_capacity(len);
    let got = Read::by_ref(file)
        .take(len as u64)
        .read_to_end(&mut payload)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if got < len {
        return Err(format!("{}: a record torn at byte {offset}", path.display()));
    }
    if !record::intact(&payload, crc) {
        return Err(format!("{}: a record that fails its checksum at byte {offset}", path.display()));
    }
    let (events, size) = record::decode_sized(bytes::Bytes::from(payload))
        .map_err(|e| format!("{}: a record that does not decode at byte {offset}: {e}", path.display()))?;
    Ok(Some(Record { events, size, len: (record::HEADER + len) as u64 }))
}
