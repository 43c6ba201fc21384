//! Compression of each message of a batch on its own, for sinks that send
//! every event as a request of its own (the HTTP sink's single-event
//! encodings): each request body must be complete by itself. The
//! compressor state is kept from one message to the next, so a message
//! costs no allocation.

use std::io;

use flate2::{Compress, Crc, FlushCompress, Status};

use super::Compression;

/// Compresses message after message, appending each to an output buffer.
pub struct EachCompressor {
    kind: Compression,
    deflate: Option<Compress>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl EachCompressor {
    pub fn new(kind: Compression) -> Self {
        EachCompressor { kind, deflate: None, zstd: None, scratch: Vec::new() }
    }

    /// Appends `data`, compressed, to `out`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match self.kind {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => self.gzip(data, out)?,
            Compression::Zstd => {
                if self.zstd.is_none() {
                    self.zstd = Some(zstd::bulk::Compressor::new(3)?);
                }
                let Some(z) = self.zstd.as_mut() else { return Ok(()) };
                self.scratch.clear();
                self.scratch.reserve(zstd::zstd_safe::compress_bound(data.len()));
                z.compress_to_buffer(data, &mut self.scratch)?;
                out.extend_from_slice(&self.scratch);
            }
        }
        Ok(())
    }

    /// A gzip member (RFC 1952): a fixed header, raw deflate, CRC-32 and size.
    fn gzip(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let deflate = self.deflate.get_or_insert_with(|| Compress::new(flate2::Compression::fast(), false));
        deflate.reset();
        out.extend_from_slice(&HEADER);
        loop {
            out.reserve(data.len() / 2 + 64);
            let consumed = deflate.total_in() as usize;
            match deflate.compress_vec(&data[consumed..], out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let mut crc = Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_decompresses_on_its_own() {
        let messages: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{{\"n\":{i},\"text\":\"{}\"}}", "ab".repeat(i * 40)).into_bytes())
            .collect();
        for kind in [Compression::Gzip, Compression::Zstd] {
            let mut c = EachCompressor::new(kind);
            for m in &messages {
                let mut out = b"prefix".to_vec();
                c.compress(m, &mut out).unwrap();
                let body = &out[6..];
                let plain = match kind {
                    Compression::Gzip => {
                        let mut s = Vec::new();
                        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut s).unwrap();
                        s
                    }
                    _ => zstd::decode_all(body).unwrap(),
                };
                assert_eq!(&plain, m);
            }
        }
    }
}
