//! UUIDv7 event ids without a system call per id.
//!
//! RFC 9562 §6.2, method 1 ("fixed bit-length dedicated counter"): 48 bits of
//! Unix milliseconds, then a 42-bit counter spread over `rand_a` and the top of
//! `rand_b`, then 32 random bits. The counter starts at a random value each
//! millisecond (its top bit clear, leaving room to count) and increments per
//! id, so ids from one generator are strictly increasing. Randomness comes
//! from a small generator seeded once from the OS; the clock is read by the
//! caller once per batch.

/// Generates time-ordered UUIDv7 ids. One per producer; not shared.
pub struct IdGen {
    rng: fastrand::Rng,
    ms: u64,
    counter: u64,
}

const COUNTER_BITS: u32 = 42;
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGen {
    pub fn new() -> Self {
        IdGen { rng: fastrand::Rng::new(), ms: 0, counter: 0 }
    }

    /// Sets the millisecond the following ids carry. A clock that steps back
    /// does not make ids go back: the last millisecond is kept.
    pub fn set_time(&mut self, unix_ms: u64) {
        if unix_ms > self.ms {
            self.ms = unix_ms;
            self.counter = self.rng.u64(..) & (COUNTER_MAX >> 1);
        }
    }

    /// The next id, as the 128 bits of the UUID.
    pub fn next_id(&mut self) -> u128 {
        if self.counter >= COUNTER_MAX {
            // Counter exhausted within one millisecond: borrow the next one.
            self.ms += 1;
            self.counter = self.rng.u64(..) & (COUNTER_MAX >> 1);
        } else {
            self.counter += 1;
        }
        let ms = (self.ms & 0xFFFF_FFFF_FFFF) as u128;
        let rand_a = ((self.counter >> 30) & 0xFFF) as u128;
        let counter_lo = (self.counter & 0x3FFF_FFFF) as u128;
        let random = self.rng.u32(..) as u128;
        (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | (counter_lo << 32) | random
    }
}

/// Writes the canonical 36-character lower-case form of an id
/// (`8-4-4-4-12` hex digits).
pub fn format_id(id: u128, out: &mut Vec<u8>) {
    /// Each byte's two hex digits.
    static PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 15]];
            i += 1;
        }
        t
    };
    /// Where each byte's digits go in `8-4-4-4-12`.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut buf = [b'-'; 36];
    for (i, byte) in id.to_be_bytes().iter().enumerate() {
        let [hi, lo] = PAIRS[*byte as usize];
        buf[AT[i]] = hi;
        buf[AT[i] + 1] = lo;
    }
    out.extend_from_slice(&buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_strictly_increasing() {
        let mut g = IdGen::new();
        g.set_time(1_700_000_000_123);
        let mut last = 0u128;
        for _ in 0..10_000 {
            let id = g.next_id();
            let u = uuid::Uuid::from_u128(id);
            assert_eq!(u.get_version_num(), 7);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            assert!(id > last);
            last = id;
        }
        let (secs, _) = uuid::Uuid::from_u128(last).get_timestamp().unwrap().to_unix();
        assert_eq!(secs, 1_700_000_000);
    }

    #[test]
    fn formats_like_uuid() {
        let mut g = IdGen::new();
        g.set_time(1_700_000_000_123);
        for _ in 0..100 {
            let id = g.next_id();
            let mut out = Vec::new();
            format_id(id, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), uuid::Uuid::from_u128(id).hyphenated().to_string());
        }
    }

    #[test]
    fn clock_going_back_keeps_order() {
        let mut g = IdGen::new();
        g.set_time(2_000);
        let a = g.next_id();
        g.set_time(1_000);
        assert!(g.next_id() > a);
    }

    #[test]
    fn counter_exhaustion_moves_to_next_millisecond() {
        let mut g = IdGen::new();
        g.set_time(5_000);
        g.counter = COUNTER_MAX;
        let id = g.next_id();
        assert_eq!((id >> 80) as u64, 5_001);
    }
}
