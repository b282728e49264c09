//! Inner loops written so LLVM vectorizes them on the baseline x86-64/aarch64 targets (no fast-math, no
//! intrinsics): element-wise lanes instead of reductions, selects instead of `f32::min`, and integer-only
//! rounding tricks that are exact in the ranges the kernels use.

use std::sync::atomic::{AtomicBool, Ordering};

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Run the kernels' baseline (SSE2/NEON) code even where AVX2 is available. Both produce the same bytes (the
/// same IEEE operations, never contracted to FMA); tests use this to check that.
#[doc(hidden)]
pub fn force_portable_kernels(portable: bool) {
    FORCE_PORTABLE.store(portable, Ordering::Relaxed);
}

/// Whether the AVX2 build of the hot loops may run.
#[inline]
pub(crate) fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !FORCE_PORTABLE.load(Ordering::Relaxed) && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Define `fn $name` twice, once for the baseline target and once with AVX2 enabled (8-lane vectors for the
/// same scalar code), and dispatch at run time with [`wide`].
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::wide() {
                // SAFETY: `wide()` checked at run time that this CPU has AVX2.
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Lanes for the min/max scans: independent accumulators that SLP-vectorize into `minps`/`maxps`.
const LANES: usize = 8;

/// `(min, max)` with strict comparisons (`v < min`, `v > max`), as MLAS scans a block. The value equals the
/// sequential scan's; only the sign of a zero result may differ, and that matters only when every element is
/// zero, so callers redo such blocks with [`min_max_sequential`].
#[inline(always)]
pub(crate) fn min_max(values: &[f32]) -> (f32, f32) {
    let mut mn = [f32::MAX; LANES];
    let mut mx = [-f32::MAX; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            mn[i] = if c[i] < mn[i] { c[i] } else { mn[i] };
            mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
        }
    }
    let (mut lo, mut hi) = (f32::MAX, -f32::MAX);
    for &v in mn.iter().chain(rest) {
        lo = if v < lo { v } else { lo };
    }
    for &v in mx.iter().chain(rest) {
        hi = if v > hi { v } else { hi };
    }
    (lo, hi)
}

/// The sequential scan of `q4_dq.cpp` (min from FLT_MAX, max from -FLT_MAX, strict comparisons in element
/// order), which fixes which signed zero wins.
#[inline(always)]
pub(crate) fn min_max_sequential(values: &[f32]) -> (f32, f32) {
    let mut lo = f32::MAX;
    let mut hi = -f32::MAX;
    for &v in values {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    (lo, hi)
}

/// `1.5 · 2^23`: adding it moves any |x| < 2^22 into the binade where the ulp is 1, so the addition rounds x
/// to an integer with the FPU's round-half-to-even, and the low mantissa bits then hold that integer.
const RNE_MAGIC: f32 = 12_582_912.0;

/// Round half to even (numpy `np.round`, OpenVINO `Round(half_to_even)`) of `x` clamped to `[lo, hi]`, as an
/// integer. Exact for `|lo|, |hi| < 2^22`; clamping first is equivalent to rounding first for integer bounds.
#[inline(always)]
pub(crate) fn clamp_round_half_even(x: f32, lo: f32, hi: f32) -> i32 {
    let c = if x < lo { lo } else { x };
    let c = if c > hi { hi } else { c };
    ((c + RNE_MAGIC).to_bits() as i32) - (RNE_MAGIC.to_bits() as i32)
}

/// `(uint8_t)std::clamp(roundf(x), 0, hi)` of q4_dq.cpp without a float→int saturating cast (which LLVM
/// scalarizes): clamp (a NaN passes, as in `std::clamp`), round half to even with [`RNE_MAGIC`], then move
/// ties up (for x ≥ 0, half away from zero = half up). `x - r` is exact here (|x - r| ≤ 0.5, x < 2^8).
/// A NaN leaves bit pattern `0x?FC00000 - 0x4B400000`, whose low byte is 0: the 0 that the C++ cast gives
/// on x86 (golden case `subnormal`, where 0 · inf occurs).
#[inline(always)]
pub(crate) fn clamp_roundf_u8(x: f32, hi: f32) -> u8 {
    let c = if x < 0.0 { 0.0 } else { x };
    let c = if c > hi { hi } else { c };
    let r = ((c + RNE_MAGIC).to_bits() as i32).wrapping_sub(RNE_MAGIC.to_bits() as i32);
    let tie = ((c - r as f32) == 0.5) as i32;
    (r + tie) as u8
}

/// `f32(f16(x))` (round to nearest even) for |x| < 65520, as arithmetic that vectorizes: normal f16 range by
/// rounding the f32 mantissa to 10 bits on the bit pattern, f16 subnormals (|x| < 2^-14) by adding 0.75,
/// whose ulp is 2^-24 (the f16 subnormal spacing), and subtracting it; the sign is restored so ±0 survive.
#[inline(always)]
pub(crate) fn round_through_f16(x: f32) -> f32 {
    let b = x.to_bits();
    let normal = f32::from_bits((b + 0x0fff + ((b >> 13) & 1)) & !0x1fff);
    let tiny = ((x.abs() + 0.75) - 0.75).copysign(x);
    if x.abs() < 6.103_515_6e-5 {
        tiny
    } else {
        normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_roundf_matches_c() {
        let c_like = |x: f32| -> u8 {
            let r = x.round();
            let c = r.clamp(0.0, 15.0); // NaN passes, like std::clamp
            c as u8
        };
        let mut bits = 0u32;
        while f32::from_bits(bits) < 40.0 {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                assert_eq!(clamp_roundf_u8(x, 15.0), c_like(x), "{x}");
            }
            bits += 991;
        }
        for x in [
            0.5f32,
            1.5,
            2.5,
            14.5,
            15.5,
            -0.5,
            0.49999997,
            7.5,
            8.5,
            f32::NAN,
            -f32::NAN,
            1e30,
            -1e30,
        ] {
            assert_eq!(clamp_roundf_u8(x, 15.0), c_like(x), "{x}");
        }
        assert_eq!(clamp_roundf_u8(254.5, 255.0), 255);
        assert_eq!(clamp_roundf_u8(253.5, 255.0), 254);
    }

    #[test]
    fn round_through_f16_matches_half() {
        let mut bits = 0u32;
        while f32::from_bits(bits) < 65504.0 {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let want = half::f16::from_f32(x).to_f32();
                assert_eq!(round_through_f16(x).to_bits(), want.to_bits(), "{x:e}");
            }
            bits += 4099;
        }
        for x in [
            0.0f32,
            -0.0,
            6.1035156e-5,
            6.1035152e-5,
            2.9802322e-8,
            8.940697e-8,
            65504.0,
            65519.0,
            1.0004883,
        ] {
            assert_eq!(
                round_through_f16(x).to_bits(),
                half::f16::from_f32(x).to_f32().to_bits(),
                "{x:e}"
            );
        }
    }

    #[test]
    fn magic_rounding_is_half_to_even() {
        let mut bits = 0u32;
        while f32::from_bits(bits) < 300.0 {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let want = x.clamp(-128.0, 255.0).round_ties_even() as i32;
                assert_eq!(clamp_round_half_even(x, -128.0, 255.0), want, "{x}");
            }
            bits += 1009;
        }
        for x in [
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 127.5, 254.5, -127.5, 1e9, -1e9,
        ] {
            assert_eq!(
                clamp_round_half_even(x, -128.0, 255.0),
                x.clamp(-128.0, 255.0).round_ties_even() as i32
            );
        }
    }
}
