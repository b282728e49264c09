//! CPython's `random.Random`, bit for bit, for the draws calibration sampling makes.
//!
//! optimum-intel picks its calibration windows with `random.seed(0)` then `random.randint(0, len - seq_len - 1)`
//! (`huggingface/optimum-intel:optimum/intel/openvino/quantization.py`, `get_wikitext2`); the same windows need the
//! same generator:
//! * MT19937 with `init_genrand` / `init_by_array` / `genrand_uint32` as in `python/cpython:Modules/_randommodule.c`
//!   (Matsumoto and Nishimura's reference code);
//! * `random_seed` there: an int seed is replaced by its absolute value, split into 32-bit words, least significant
//!   first, at least one word (so `seed(0)` is `init_by_array([0])`);
//! * `getrandbits(k)` there: for k ≤ 32 one word shifted right by 32 − k; for larger k, words from the least
//!   significant up, the last one shifted right to keep only the bits still needed;
//! * `randint(a, b) = randrange(a, b + 1) = a + _randbelow(b − a + 1)` and `_randbelow_with_getrandbits(n)`:
//!   k = n.bit_length(), draw `getrandbits(k)` until it is below n (`python/cpython:Lib/random.py`).
//!
//! Only non-negative seeds and ranges that fit in a `u64` are supported; that is all the windowing needs.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// A Mersenne Twister seeded and drawn from exactly as CPython's `random.Random`.
#[derive(Clone)]
pub struct PyRandom {
    state: [u32; N],
    index: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl PyRandom {
    /// `random.Random(seed)` / `random.seed(seed)` for a non-negative int seed.
    pub fn new(seed: u64) -> Self {
        // `random_seed`: the absolute value as 32-bit words, least significant first; zero is one zero word.
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut rng = PyRandom {
            state: [0; N],
            index: N,
        };
        rng.init_by_array(&key);
        rng
    }

    fn init_genrand(&mut self, seed: u32) {
        self.state[0] = seed;
        for i in 1..N {
            let prev = self.state[i - 1];
            self.state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.state[i - 1];
            self.state[i] = (self.state[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.state[0] = self.state[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.state[i - 1];
            self.state[i] = (self.state[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.state[0] = self.state[N - 1];
                i = 1;
            }
        }
        self.state[0] = 0x8000_0000; // MSB is 1, assuring a non-zero initial array
    }

    fn twist(&mut self) {
        let mag01 = |y: u32| if y & 1 == 0 { 0 } else { MATRIX_A };
        for kk in 0..N {
            let y = (self.state[kk] & UPPER_MASK) | (self.state[(kk + 1) % N] & LOWER_MASK);
            self.state[kk] = self.state[(kk + M) % N] ^ (y >> 1) ^ mag01(y);
        }
        self.index = 0;
    }

    /// `genrand_uint32`: the next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for 1 ≤ k ≤ 64.
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        debug_assert!((1..=64).contains(&k));
        if k <= 32 {
            return u64::from(self.next_u32() >> (32 - k));
        }
        // Least significant word first; the last word keeps only its top `k - 32` bits.
        let low = u64::from(self.next_u32());
        let high = u64::from(self.next_u32() >> (64 - k));
        (high << 32) | low
    }

    /// `_randbelow_with_getrandbits(n)`: uniform in `[0, n)`, by rejection on `n.bit_length()` bits. `n` ≥ 1.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let k = u64::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `randint(a, b)`: uniform in `[a, b]`. `None` where Python raises (`b < a`) or the width `b − a + 1` does
    /// not fit in a `u64`.
    pub fn randint(&mut self, a: u64, b: u64) -> Option<u64> {
        let width = b.checked_sub(a)?.checked_add(1)?;
        Some(a + self.randbelow(width))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every expected value below is CPython 3.11's, from
    // `python3 -c "import random; random.seed(S); print([random.<draw> for _ in range(K)])"`.

    #[test]
    fn raw_words_match_cpython_for_several_seeds() {
        let words = |seed: u64, n: usize| {
            let mut r = PyRandom::new(seed);
            (0..n).map(|_| r.getrandbits(32)).collect::<Vec<_>>()
        };
        assert_eq!(
            words(0, 4),
            [3626764237, 1654615998, 3255389356, 3823568514]
        );
        assert_eq!(words(1, 2), [577090037, 2444712010]);
        assert_eq!(words(42, 2), [2746317213, 478163327]);
        // 2**32 + 5: two key words.
        assert_eq!(words((1 << 32) + 5, 2), [675479763, 2085189291]);
    }

    #[test]
    fn getrandbits_64_puts_the_first_word_low() {
        let mut r = PyRandom::new(0);
        assert_eq!(
            [r.getrandbits(64), r.getrandbits(64)],
            [7106521602475165645, 16422101724900707500]
        );
    }

    fn randints(b: u64, count: usize) -> Vec<u64> {
        let mut r = PyRandom::new(0);
        (0..count).map(|_| r.randint(0, b).unwrap()).collect()
    }

    #[test]
    fn randint_matches_cpython_small_ranges() {
        assert_eq!(randints(10, 6), [6, 6, 0, 4, 8, 7]);
        assert_eq!(randints(1000, 6), [864, 394, 776, 911, 430, 41]);
        // randint(0, 2**k) has n = 2**k + 1: k + 1 bits, so about half the draws are rejected.
        assert_eq!(randints(1 << 5, 6), [24, 26, 2, 16, 32, 31]);
        assert_eq!(
            randints(1 << 16, 6),
            [50494, 55125, 5306, 33936, 63691, 53075]
        );
        // n = 1 still draws (and rejects) one bit at a time, consuming words as Python does.
        let mut r = PyRandom::new(0);
        assert_eq!([r.randint(0, 0), r.randint(0, 0)], [Some(0), Some(0)]);
        assert_eq!(r.getrandbits(32), 173879092);
    }

    #[test]
    fn randint_matches_cpython_big_ranges() {
        assert_eq!(
            randints(1 << 31, 6),
            [
                1654615998, 1806341205, 173879092, 1112038970, 2087043557, 1739178872
            ]
        );
        assert_eq!(
            randints(1 << 32, 6),
            [
                3626764237, 1806341205, 2195908194, 2046968324, 3900315155, 2167613558
            ]
        );
        assert_eq!(
            randints(3 * (1 << 33) + 7, 6),
            [
                16511666125,
                1806341205,
                15080810082,
                10636902916,
                8195282451,
                6462580854
            ]
        );
        assert_eq!(
            randints(1 << 63, 3),
            [7106521602475165645, 746805015404516437, 8963783824838420066]
        );
        assert_eq!(
            randints(u64::MAX - 1, 3),
            [
                7106521602475165645,
                16422101724900707500,
                746805015404516437
            ]
        );
    }

    #[test]
    fn randint_refuses_what_python_refuses() {
        let mut r = PyRandom::new(0);
        assert_eq!(r.randint(5, 4), None);
        assert_eq!(r.randint(0, u64::MAX), None);
        assert_eq!(r.randint(3, 3), Some(3));
    }
}
