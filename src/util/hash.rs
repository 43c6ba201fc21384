//! The stable hash: FNV-1a (64 bits) then the MurmurHash3 64-bit finalizer.
//!
//! Small, fast, well spread over all 64 bits (FNV alone barely moves its
//! high bits for inputs that differ in their last bytes), and the same on
//! every host and every version. It is stored and compared across hosts and
//! restarts: `sample` keeps or drops events by it on every host alike, and
//! the file source's checkpoints know files by it (their fingerprint). Its
//! values must therefore never change.

/// FNV-1a (64 bits) of `bytes`, mixed by the MurmurHash3 finalizer.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::stable_hash;

    #[test]
    fn the_values_never_change() {
        // Fixed values: a change here changes which events every host keeps,
        // and loses every file checkpoint (files would be read again).
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(b"a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(stable_hash(b"10.0.0.1"), 0xc879_e56d_dc6c_5c88);
        assert_eq!(stable_hash(b"2026-11-27T03:50:00Z first line of a log\n"), 0xadd4_f7a7_ed54_93d4);
        let head: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(stable_hash(&head), 0x9b95_a0aa_840a_1bb1);
    }
}
