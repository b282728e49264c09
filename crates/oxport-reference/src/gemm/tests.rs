use super::*;

/// Deterministic values in [-1, 1) with some exact zeros and tiny/huge magnitudes mixed in.
fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(0x9E37_79B9).rotate_left(13) ^ seed;
            let v = (h % 20001) as f32 / 10000.0 - 1.0;
            match h % 97 {
                0 => 0.0,
                1 => v * 1e-30,
                2 => v * 1e20,
                _ => v,
            }
        })
        .collect()
}

/// The summation order of the module doc, one output at a time.
fn spec_dot(x: &[f32], w: &[f32]) -> f32 {
    x.iter().zip(w).fold(0.0, |acc, (&a, &b)| a.mul_add(b, acc))
}

fn isas() -> Vec<Isa> {
    let mut isas = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            isas.push(Isa::Avx2Fma);
        }
        if std::is_x86_feature_detected!("avx512f") {
            isas.push(Isa::Avx512);
        }
    }
    isas
}

/// Every instruction set, every shape edge (k around the vector width and the k slices, token counts around
/// every tile height, outputs around the panel width) gives the bits of the specified order.
#[test]
fn every_isa_gives_the_bits_of_the_specified_order() {
    let isas = isas();
    for (n, k, out) in [
        (1, 1, 1),
        (1, 15, 3),
        (1, 16, 17),
        (3, 17, 5),
        (5, 255, 16),
        (4, 256, 4),
        (7, 257, 33),
        (14, 40, 32),
        (15, 40, 31),
        (29, 300, 65),
        (65, 300, 19),
        (130, 513, 7),
        (2, 1000, 40),
        (1, 1100, 70),
        (3, 2050, 9),
    ] {
        let x = values(n * k, 7 + k as u32);
        let w = values(out * k, 91 + out as u32);
        let expected: Vec<u32> = (0..n * out)
            .map(|i| {
                let (t, o) = (i / out, i % out);
                spec_dot(&x[t * k..(t + 1) * k], &w[o * k..(o + 1) * k]).to_bits()
            })
            .collect();
        for &isa in &isas {
            let got = gemm_with(isa, &x, n, k, &F32Rows { data: &w, k });
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, expected, "{isa:?}: n {n}, k {k}, out {out}");
        }
    }
}

#[test]
fn the_weight_panel_is_the_transpose_of_the_rows() {
    for len in [1, 15, 16, 17, 48, 61] {
        let src = values(NR * len, len as u32);
        let mut fast = vec![0f32; NR * len];
        let mut slow = vec![0f32; NR * len];
        transpose_into(&src, len, &mut fast);
        transpose_portable(&src, len, &mut slow, 0);
        assert_eq!(fast, slow, "len {len}");
        for i in 0..len {
            for j in 0..NR {
                assert_eq!(slow[i * NR + j].to_bits(), src[j * len + i].to_bits());
            }
        }
    }
}

/// BF16 rows that offer their bytes, as the mapped checkpoint does.
struct Bf16Rows {
    bytes: Vec<u8>,
    k: usize,
}

impl WeightRows for Bf16Rows {
    fn out_dim(&self) -> usize {
        self.bytes.len() / 2 / self.k
    }

    fn widen(&self, row: usize, cols: Range<usize>, out: &mut [f32]) {
        for (o, i) in out.iter_mut().zip(cols) {
            let at = 2 * (row * self.k + i);
            let bits = u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]);
            *o = f32::from_bits(u32::from(bits) << 16);
        }
    }

    fn bf16_bytes(&self) -> Option<&[u8]> {
        Some(&self.bytes)
    }
}

/// The in-register BF16 packing gives the bits of widening the same values to f32 first.
#[test]
fn bf16_packing_gives_the_bits_of_f32_weights() {
    for (n, k, out) in [(1, 31, 32), (2, 32, 64), (20, 97, 70), (3, 1100, 33)] {
        let x = values(n * k, 5);
        let bytes: Vec<u8> = values(out * k, 6)
            .iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        let bf16 = Bf16Rows { bytes, k };
        let mut widened = vec![0f32; out * k];
        for (o, row) in widened.chunks_mut(k).enumerate() {
            bf16.widen(o, 0..k, row);
        }
        for isa in isas() {
            let a = gemm_with(isa, &x, n, k, &bf16);
            let b = gemm_with(isa, &x, n, k, &F32Rows { data: &widened, k });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{isa:?}: n {n}, k {k}, out {out}");
        }
    }
}

#[test]
fn one_and_two_threads_give_the_same_bits() {
    for (n, k, out) in [(37, 333, 70), (1, 333, 700), (2, 2000, 300)] {
        let (x, w) = (values(n * k, 3), values(out * k, 4));
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| gemm(&x, n, k, &F32Rows { data: &w, k }))
        };
        let (one, two) = (run(1), run(2));
        assert!(
            one.iter()
                .zip(&two)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
}
