//! TCP sequence numbers: 32-bit values compared modulo 2^32 (RFC 9293 §3.4).

use std::fmt;
use std::ops::Add;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Signed distance from `other` to `self`, valid while the two are within 2^31.
    pub fn distance_from(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around() {
        let isn = SeqNumber(u32::MAX);
        assert_eq!(isn + 1, SeqNumber(0));
        assert_eq!(SeqNumber(5).distance_from(isn), 6);
        assert_eq!(isn.distance_from(SeqNumber(5)), -6);
    }
}
