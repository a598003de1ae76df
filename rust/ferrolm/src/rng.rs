//! Small deterministic random numbers: the same seed gives the same stream on every machine
//! and at every thread count (streams are indexed, never shared between threads).

/// SplitMix64's increment.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64: a tiny, high-quality 64-bit generator; also used to hash (seed, index) pairs.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub const fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Jumps over `n` draws of [`Rng::next_u64`] at once (the state is a counter), so chunks of
    /// one stream can be drawn in parallel and give the sequential stream's values.
    pub fn skip(&mut self, n: u64) {
        self.state = self.state.wrapping_add(n.wrapping_mul(GAMMA));
    }

    /// Uniform in [0, 1) with 24 bits of precision (exactly representable in f32). Takes one
    /// draw.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Standard normal by Box–Muller (one of the pair is used; simplicity over speed). Takes
    /// two draws.
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Uniform integer in [0, n), n > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift; the tiny bias for huge n does not matter here.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// The SplitMix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform [0, 1) number for position `index` of the stream `seed`, independent of order.
pub fn uniform_at(seed: u64, index: u64) -> f32 {
    let z = mix(seed ^ mix(index.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_lands_where_drawing_would() {
        let mut drawn = Rng::new(42);
        for _ in 0..1000 {
            drawn.next_u64();
        }
        let mut skipped = Rng::new(42);
        skipped.skip(1000);
        assert_eq!(drawn.next_u64(), skipped.next_u64());
    }
}
