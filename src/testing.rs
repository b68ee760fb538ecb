//! What the unit tests share: a small, seeded random number generator, so
//! that a test's random inputs are the same on every run.

/// Xorshift64: each call gives the next number after `seed` (never 0 for a
/// seed that is not 0).
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
