//! Kernel properties: dequantize(quantize(w)) stays within each scheme's error bound (proptest), output bytes
//! do not depend on the rayon thread count, and bad input is refused with the tensor named.

use oxport_hf::DType;
use oxport_quant::{
    NBitsParams, NncfMode, QuantError, Rows, ScaleDtype, compress_nncf, compress_nncf_rows,
    f32_to_f16_bytes, quantize_nbits, quantize_nbits_rows,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rand::{Rng, SeedableRng};

fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..5, 1usize..300, 1e-3f32..100.0).prop_flat_map(|(n, k, range)| {
        (
            Just(n),
            Just(k),
            proptest::collection::vec(-range..range, n * k),
        )
    })
}

fn block_extreme(w: &[f32]) -> (f32, f32) {
    w.iter()
        .fold((0f32, 0f32), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

proptest! {
    // The regressions file stays beside this file (`properties.proptest-regressions`). proptest's default
    // (`SourceParallel`) would look under `tests/proptest-regressions/quant/` instead, since `it/main.rs` is a crate
    // root above this file.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::with_cases(200)
    })]

    /// ORT MatMulNBits with f32 scales: asym is within half a step of the block's range/levels; sym within one
    /// step (the positive extreme can land on code 2^bits, clamped to 2^bits - 1, when |min| = max).
    #[test]
    fn nbits_round_trip_within_bound(
        (n, k, w) in matrix(),
        bits in prop::sample::select(vec![4u32, 8]),
        block_size in prop::sample::select(vec![16usize, 32, 64, 128, 256]),
        symmetric in any::<bool>(),
    ) {
        let p = NBitsParams { bits, block_size, symmetric, scale_dtype: ScaleDtype::F32 };
        let q = quantize_nbits(&w, n, k, &p).unwrap();
        prop_assert_eq!(q.packed.len(), n * k.div_ceil(block_size) * block_size * bits as usize / 8);
        let d = q.dequantize(&p);
        for r in 0..n {
            for (b, (block, deq)) in w[r * k..(r + 1) * k].chunks(block_size).zip(d[r * k..(r + 1) * k].chunks(block_size)).enumerate() {
                let (lo, hi) = block_extreme(block);
                let bound = if symmetric {
                    lo.abs().max(hi) / (1u32 << (bits - 1)) as f32
                } else {
                    (hi - lo) / ((1u32 << bits) - 1) as f32 * 0.5
                } * 1.0001 + f32::MIN_POSITIVE;
                for (v, x) in block.iter().zip(deq) {
                    prop_assert!((v - x).abs() <= bound, "row {} block {}: {} -> {} (bound {})", r, b, v, x, bound);
                }
            }
        }
    }

    /// NNCF with f16 scales, dequantized in f16 like the IR: asym within half a step, sym (signed scale, codes
    /// -8..7) within one step, plus the f16 rounding of the scale (|q - zp| ≤ levels; subnormal f16 scales
    /// for ranges below ~4e-3) and of the result.
    #[test]
    fn nncf_round_trip_within_bound(
        (n, k, w) in matrix(),
        mode in prop::sample::select(vec![NncfMode::Int4Sym, NncfMode::Int4Asym, NncfMode::Int8Sym, NncfMode::Int8Asym]),
        group in prop::sample::select(vec![None, Some(1usize), Some(2), Some(4)]),
    ) {
        let group = group.filter(|g| k % g == 0);
        let q = compress_nncf(&w, n, k, mode, group).unwrap();
        let d = q.dequantize();
        let g = group.unwrap_or(k);
        let levels = ((1u32 << mode.bits()) - 1) as f32;
        for (i, (v, x)) in w.iter().zip(&d).enumerate() {
            let (r, c) = (i / k, i % k);
            let grp = &w[r * k + c / g * g..r * k + c / g * g + g];
            let (lo, hi) = block_extreme(grp);
            let step = match mode {
                NncfMode::Int4Sym | NncfMode::Int8Sym => lo.abs().max(hi) / (1u32 << (mode.bits() - 1)) as f32,
                _ => (hi - lo) / levels * 0.5,
            };
            let scale = (hi - lo).max(lo.abs().max(hi)) / levels * 2.0;
            // Scales below 2^-14 are f16 subnormals: absolute precision 2^-25 instead of relative 2^-11.
            let scale_rounding = levels * (scale * 2f32.powi(-11) + 2f32.powi(-25));
            let bound = step * 1.0001 + scale_rounding + v.abs() * 2f32.powi(-10) + 6e-8;
            prop_assert!((v - x).abs() <= bound, "{} [{}, {}]: {} -> {} (bound {})", mode, r, c, v, x, bound);
        }
    }
}

fn random(n: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n * k).map(|_| rng.random_range(-0.1f32..0.1)).collect()
}

#[test]
fn same_bytes_on_one_and_two_threads_and_any_instruction_set() {
    let (n, k) = (96, 640);
    let w = random(n, k, 7);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out: Vec<Vec<u8>> = Vec::new();
            for (bits, block_size, symmetric, scale_dtype) in [
                (4, 32, true, ScaleDtype::F32),
                (4, 128, false, ScaleDtype::F16),
                (8, 64, false, ScaleDtype::F32),
            ] {
                let q = quantize_nbits(
                    &w,
                    n,
                    k,
                    &NBitsParams {
                        bits,
                        block_size,
                        symmetric,
                        scale_dtype,
                    },
                )
                .unwrap();
                out.extend([q.packed, q.scales, q.zero_points.unwrap_or_default()]);
            }
            for (mode, group) in [
                (NncfMode::Int4Sym, Some(128)),
                (NncfMode::Int4Asym, Some(64)),
                (NncfMode::Int8Asym, None),
                (NncfMode::Int8Sym, None),
                (NncfMode::Int4Sym, None),
            ] {
                let q = compress_nncf(&w, n, k, mode, group).unwrap();
                out.push(q.weight);
                out.push(
                    q.scale
                        .iter()
                        .flat_map(|s| s.to_bits().to_le_bytes())
                        .collect(),
                );
                out.push(q.zero_point.unwrap_or_default());
            }
            out.push(f32_to_f16_bytes(&w));
            out.push(
                oxport_quant::sensitivity::int8_asym_error(&w, n, k)
                    .to_le_bytes()
                    .to_vec(),
            );
            out
        })
    };
    assert!(
        run(1) == run(2),
        "kernel output depends on the thread count"
    );
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let mut w = random(4, 64, 1);
    w[70] = f32::NAN;
    w[100] = f32::INFINITY;
    let p = NBitsParams {
        bits: 4,
        block_size: 32,
        symmetric: true,
        scale_dtype: ScaleDtype::F32,
    };
    let err = quantize_nbits(&w, 4, 64, &p)
        .unwrap_err()
        .for_tensor("model.layers.3.mlp.down_proj.weight");
    assert!(
        matches!(
            err,
            QuantError::NonFinite {
                count: 2,
                first: 70,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("model.layers.3.mlp.down_proj.weight"),
        "{err}"
    );
    let err = compress_nncf(&w, 4, 64, NncfMode::Int8Asym, None)
        .unwrap_err()
        .for_tensor("lm_head.weight");
    assert!(
        err.to_string().contains("lm_head.weight") && err.to_string().contains("non-finite"),
        "{err}"
    );
}

#[test]
fn bad_shapes_and_parameters_are_refused() {
    let w = random(4, 64, 2);
    let p = NBitsParams {
        bits: 4,
        block_size: 48,
        symmetric: true,
        scale_dtype: ScaleDtype::F32,
    };
    assert!(matches!(
        quantize_nbits(&w, 4, 64, &p),
        Err(QuantError::Unsupported { .. })
    ));
    let p = NBitsParams {
        bits: 3,
        block_size: 32,
        ..p
    };
    assert!(matches!(
        quantize_nbits(&w, 4, 64, &p),
        Err(QuantError::Unsupported { .. })
    ));
    let p = NBitsParams { bits: 4, ..p };
    assert!(matches!(
        quantize_nbits(&w, 4, 60, &p),
        Err(QuantError::ShapeMismatch { .. })
    ));
    let err = compress_nncf(&w, 4, 64, NncfMode::Int4Sym, Some(48)).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::InvalidGroupSize {
                k: 64,
                group_size: 48,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bf16_and_f16_rows_give_the_bytes_of_their_f32_values() {
    let (n, k) = (24, 320);
    let w = random(n, k, 3);
    for dtype in [DType::BF16, DType::F16] {
        let bytes: Vec<u8> = w
            .iter()
            .flat_map(|v| match dtype {
                DType::BF16 => half::bf16::from_f32(*v).to_bits().to_le_bytes(),
                _ => half::f16::from_f32(*v).to_bits().to_le_bytes(),
            })
            .collect();
        let mut decoded = vec![0f32; n * k];
        dtype.decode_into(&bytes, &mut decoded);
        let rows = Rows::Encoded {
            bytes: &bytes,
            dtype,
        };
        let p = NBitsParams {
            bits: 4,
            block_size: 64,
            symmetric: false,
            scale_dtype: ScaleDtype::F32,
        };
        assert_eq!(
            quantize_nbits_rows(rows, n, k, &p).unwrap(),
            quantize_nbits(&decoded, n, k, &p).unwrap()
        );
        for (mode, group) in [(NncfMode::Int4Sym, Some(64)), (NncfMode::Int8Asym, None)] {
            assert_eq!(
                compress_nncf_rows(rows, n, k, mode, group).unwrap(),
                compress_nncf(&decoded, n, k, mode, group).unwrap()
            );
        }
    }
    // A NaN in BF16 bytes is refused before any work, with its flat index.
    let mut bytes: Vec<u8> = w
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
        .collect();
    bytes[2 * 1000..2 * 1000 + 2].copy_from_slice(&half::bf16::NAN.to_bits().to_le_bytes());
    let rows = Rows::Encoded {
        bytes: &bytes,
        dtype: DType::BF16,
    };
    let err = compress_nncf_rows(rows, n, k, NncfMode::Int8Asym, None).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::NonFinite {
                count: 1,
                first: 1000,
                ..
            }
        ),
        "{err:?}"
    );
}
