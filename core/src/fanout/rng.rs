//! A tiny deterministic PRNG, so that `core` needs no `rand` and a seed replays every decision.

/// SplitMix64 (Steele, Lea, Flood 2014): one `u64` of state, passes BigCrush, plenty for sampling peers.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole future is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for the sizes used here).
    pub fn below(&mut self, n: u32) -> u32 {
        assert!(n > 0, "below(0)");
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
