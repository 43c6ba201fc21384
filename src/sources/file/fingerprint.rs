//! A file's fingerprint: what the file source knows a file by, across
//! renames, copies and restarts.
//!
//! It is the stable hash ([`crate::util::hash`]) of the file's first line (at
//! most 4 KiB of it), or of its first `fingerprint_bytes` bytes. Checkpoints
//! store it, so its value for a given file never changes from one version to
//! the next.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::util::hash::stable_hash;

/// A file's fingerprint: a checksum of its first line (at most 4 KiB of it),
/// or of its first `bytes` bytes. `None` while the file is too short to tell.
pub fn fingerprint(file: &File, bytes: Option<usize>) -> std::io::Result<Option<u64>> {
    let want = bytes.unwrap_or(4096);
    let mut stack = [0u8; 4096];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if want <= stack.len() {
        &mut stack[..want]
    } else {
        heap.resize(want, 0);
        &mut heap
    };
    let mut got = 0;
    while got < want {
        let n = file.read_at(&mut buf[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = &buf[..got];
    let prefix = match bytes {
        Some(n) if got < n => return Ok(None),
        Some(_) => head,
        None => match memchr::memchr(b'\n', head) {
            Some(i) => &head[..=i],
            None if got == want => head,
            None => return Ok(None),
        },
    };
    Ok(Some(stable_hash(prefix)))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::fingerprint;

    fn file_with(content: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn the_first_line_with_its_newline_is_the_fingerprint() {
        // The value checkpoints hold for such a file: it must never change.
        let f = file_with(b"2026-11-27T03:50:00Z first line of a log\nsecond line\n");
        assert_eq!(fingerprint(&f, None).unwrap(), Some(0xadd4_f7a7_ed54_93d4));
        // Appending does not change it.
        let f = file_with(b"2026-11-27T03:50:00Z first line of a log\nsecond line\nthird\n");
        assert_eq!(fingerprint(&f, None).unwrap(), Some(0xadd4_f7a7_ed54_93d4));
    }

    #[test]
    fn a_file_without_a_whole_first_line_has_none_yet() {
        assert_eq!(fingerprint(&file_with(b""), None).unwrap(), None);
        assert_eq!(fingerprint(&file_with(b"no newline yet"), None).unwrap(), None);
    }

    #[test]
    fn a_first_line_longer_than_4_kib_is_cut_there() {
        let mut content = vec![b'x'; 5000];
        content.push(b'\n');
        assert_eq!(fingerprint(&file_with(&content), None).unwrap(), Some(0xd540_f9a1_6def_5569));
    }

    #[test]
    fn with_a_byte_count_the_first_bytes_are_the_fingerprint() {
        let f = file_with(b"a\nbcdef");
        assert_eq!(fingerprint(&f, Some(1)).unwrap(), Some(0x82a2_a958_a9be_ce5b));
        assert_eq!(fingerprint(&f, Some(8)).unwrap(), None, "too short to tell");
    }
}
