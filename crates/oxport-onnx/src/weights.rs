//! Checkpoint tensor → initializer bytes for each [`LinearForm`]: transposed float, MatMulNBits, or Q/DQ int4.

use oxport_hf::TensorView;
use oxport_quant::{
    NBitsParams, NBitsWeight, Rows, ScaleDtype, quantize_nbits, quantize_nbits_rows_into,
};
use rayon::prelude::*;

use crate::error::{OnnxError, Result};
use crate::graph::{LinearForm, LinearSpec};
use crate::options::IoDtype;
use crate::proto::tensor_proto::DataType;

/// One initializer ready to append.
pub(crate) struct Initializer {
    pub name: String,
    pub elem: DataType,
    pub dims: Vec<usize>,
    pub bytes: Payload,
}

/// Initializer bytes; f32 data is kept as `Vec<f32>` and written through a byte view, so the largest tensor
/// (the f32 embedding) is not copied once more on its way to disk.
pub(crate) enum Payload {
    Bytes(Vec<u8>),
    F32(Vec<f32>),
}

// ONNX raw data is little-endian (onnx.proto `raw_data`); the f32 byte view relies on the host order.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "oxport-onnx writes f32 tensors as native bytes"
);

#[cfg(test)]
impl Payload {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Bytes(b) => b,
            Payload::F32(v) => bytemuck::cast_slice(v),
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(b: Vec<u8>) -> Self {
        Payload::Bytes(b)
    }
}

/// Values in the I/O dtype: f32 moved as is, f16 converted.
pub(crate) fn io_payload(io: IoDtype, values: Vec<f32>) -> Payload {
    match io {
        IoDtype::F32 => Payload::F32(values),
        IoDtype::F16 => Payload::Bytes(crate::protoutil::f16_bytes(&values)),
    }
}

/// `weight` is the HF `[out, in]` matrix rows `spec.rows` (row-major, `spec.n × spec.k`).
pub(crate) fn linear_initializers(
    spec: &LinearSpec,
    weight: &[f32],
    io: IoDtype,
) -> Result<Vec<Initializer>> {
    let names = spec.initializer_names();
    let (n, k) = (spec.n, spec.k);
    match spec.form {
        LinearForm::Float => {
            // `make_matmul_float` stores `weight.T`: [K, N].
            let t = transpose(weight, n, k);
            Ok(vec![Initializer {
                name: names[0].clone(),
                elem: io.onnx(),
                dims: vec![k, n],
                bytes: io_payload(io, t),
            }])
        }
        LinearForm::NBits(p) => {
            let q = quantize(spec, weight, &p)?;
            Ok(nbits_initializers(&names, q, &p))
        }
        LinearForm::Qdq(p) => {
            let q = quantize(spec, weight, &p)?;
            Ok(qdq_initializers(&names, &q, &p))
        }
    }
}

/// MatMulNBits `B` `[n, k_blocks, blob]`, `scales` `[n, k_blocks]` and (asymmetric) `zero_points`
/// `[n, ceil(k_blocks * bits / 8)]`, as the ORT quantizer shapes them (`fixtures/reference/ort/ort_int4_b128`).
pub(crate) fn nbits_initializers(
    names: &[String],
    q: NBitsWeight,
    p: &NBitsParams,
) -> Vec<Initializer> {
    let n = q.n;
    let mut out = vec![
        Initializer {
            name: names[0].clone(),
            elem: DataType::Uint8,
            dims: vec![n, q.k_blocks, q.blob_size],
            bytes: q.packed.into(),
        },
        Initializer {
            name: names[1].clone(),
            elem: scale_elem(p.scale_dtype),
            dims: vec![n, q.k_blocks],
            bytes: q.scales.into(),
        },
    ];
    if let Some(zp) = q.zero_points {
        let per_row = zp.len() / n;
        out.push(Initializer {
            name: names[2].clone(),
            elem: DataType::Uint8,
            dims: vec![n, per_row],
            bytes: zp.into(),
        });
    }
    out
}

/// Quantize rows `spec.rows` of `view` straight from the checkpoint's BF16/F16/F32 bytes (decoded per row inside
/// the kernel, no f32 copy): the same bytes as [`quantize_nbits`] of the f32 decode. NaN/Inf is refused with
/// oxport-hf's error.
///
/// `packed` is reused for `B` (a written buffer: no fresh pages per weight).
pub(crate) fn quantize_nbits_view(
    spec: &LinearSpec,
    view: &TensorView<'_>,
    p: &NBitsParams,
    packed: Vec<u8>,
) -> Result<NBitsWeight> {
    let rows = Rows::Encoded {
        bytes: view.rows_bytes(spec.rows.clone()),
        dtype: view.info.dtype,
    };
    quantize_nbits_rows_into(rows, spec.rows.len(), spec.k, p, packed).map_err(
        |source| match source {
            // The kernel refuses NaN/Inf while reading the rows; report it as oxport-hf does (file, tensor, index
            // within the whole tensor), as the f32 decode did before.
            oxport_quant::QuantError::NonFinite { count, first, .. } => view
                .non_finite_error(count, spec.rows.start * spec.k + first)
                .into(),
            source => quant_error(spec, source),
        },
    )
}

/// Quantize `w` (rows `spec.rows` already decoded to f32, e.g. rescaled by `--awq`) into `packed`.
pub(crate) fn quantize_nbits_f32(
    spec: &LinearSpec,
    w: &[f32],
    p: &NBitsParams,
    packed: Vec<u8>,
) -> Result<NBitsWeight> {
    quantize_nbits_rows_into(Rows::F32(w), spec.rows.len(), spec.k, p, packed)
        .map_err(|source| quant_error(spec, source))
}

fn quant_error(spec: &LinearSpec, source: oxport_quant::QuantError) -> OnnxError {
    OnnxError::Quant {
        tensor: format!(
            "{} (rows {:?} of {})",
            spec.weight_name(),
            spec.rows,
            spec.role.name()
        ),
        source: Box::new(source.for_tensor(&spec.role.name())),
    }
}

fn scale_elem(s: ScaleDtype) -> DataType {
    match s {
        ScaleDtype::F32 => DataType::Float,
        ScaleDtype::F16 => DataType::Float16,
    }
}

fn quantize(spec: &LinearSpec, weight: &[f32], p: &NBitsParams) -> Result<NBitsWeight> {
    quantize_nbits(weight, spec.n, spec.k, p).map_err(|source| quant_error(spec, source))
}

/// `[n, k]` → `[k, n]`, rows of the output in parallel.
pub(crate) fn transpose(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0f32; n * k];
    t.par_chunks_mut(n).enumerate().for_each(|(kk, row)| {
        for (nn, v) in row.iter_mut().enumerate() {
            *v = w[nn * k + kk];
        }
    });
    t
}

/// The 4-bit code of element `kk` of output row `nn` in MatMulNBits layout (low nibble first within a block,
/// ORT ContribOperators.md MatMulNBits `B`).
fn nbits_code(q: &NBitsWeight, nn: usize, kk: usize, block_size: usize) -> u8 {
    let (b, j) = (kk / block_size, kk % block_size);
    let byte = q.packed[(nn * q.k_blocks + b) * q.blob_size + j / 2];
    if j % 2 == 0 { byte & 0x0f } else { byte >> 4 }
}

/// MatMulNBits → DequantizeLinear-21 inputs: weight `[K, N]` INT4 (symmetric: `q - 8`, i.e. `q ^ 8` in 4-bit
/// two's complement) or UINT4 (asymmetric, with a UINT4 `[k_blocks, N]` zero point), packed row-major with
/// the first element in the low nibble (onnx.proto `raw_data` comment); scales `[k_blocks, N]`
/// (docs/onnx-genai.md §3 "Standard form for a MatMul weight").
fn qdq_initializers(names: &[String], q: &NBitsWeight, p: &NBitsParams) -> Vec<Initializer> {
    let (n, k, kb) = (q.n, q.k, q.k_blocks);
    let flip = if p.symmetric { 0x8 } else { 0x0 };
    let pack = |count: usize, code: &dyn Fn(usize) -> u8| {
        let mut bytes = vec![0u8; count.div_ceil(2)];
        for i in 0..count {
            bytes[i / 2] |= (code(i) & 0x0f) << (4 * (i % 2));
        }
        bytes
    };
    let weight = pack(k * n, &|i| nbits_code(q, i % n, i / n, p.block_size) ^ flip);
    let es = match p.scale_dtype {
        ScaleDtype::F32 => 4,
        ScaleDtype::F16 => 2,
    };
    let mut scales = vec![0u8; kb * n * es];
    for nn in 0..n {
        for b in 0..kb {
            let src = (nn * kb + b) * es;
            let dst = (b * n + nn) * es;
            scales[dst..dst + es].copy_from_slice(&q.scales[src..src + es]);
        }
    }
    let elem = if p.symmetric {
        DataType::Int4
    } else {
        DataType::Uint4
    };
    let mut out = vec![
        Initializer {
            name: names[0].clone(),
            elem,
            dims: vec![k, n],
            bytes: weight.into(),
        },
        Initializer {
            name: names[1].clone(),
            elem: scale_elem(p.scale_dtype),
            dims: vec![kb, n],
            bytes: scales.into(),
        },
    ];
    if let Some(zp) = &q.zero_points {
        let per_row = zp.len() / n;
        let code = |i: usize| {
            let (b, nn) = (i / n, i % n);
            let byte = zp[nn * per_row + b / 2];
            if b % 2 == 0 { byte & 0x0f } else { byte >> 4 }
        };
        out.push(Initializer {
            name: names[2].clone(),
            elem: DataType::Uint4,
            dims: vec![kb, n],
            bytes: pack(kb * n, &code).into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_element_n_k_to_k_n() {
        let w: Vec<f32> = (0..6).map(|x| x as f32).collect(); // [2, 3]
        assert_eq!(transpose(&w, 2, 3), vec![0., 3., 1., 4., 2., 5.]);
    }

    #[test]
    fn qdq_repacks_nbits_codes_along_n_with_sign_flip() {
        // n = 2 rows, k = 4, one block of 16 (padded): row 0 codes 0,1,2,3; row 1 codes 15,14,13,12.
        let mut packed = vec![0u8; 2 * 8];
        packed[0] = 0x10;
        packed[1] = 0x32;
        packed[8] = 0xEF;
        packed[9] = 0xCD;
        let q = NBitsWeight {
            n: 2,
            k: 4,
            k_blocks: 1,
            blob_size: 8,
            packed,
            scales: [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            zero_points: None,
        };
        let p = NBitsParams {
            bits: 4,
            block_size: 16,
            symmetric: true,
            scale_dtype: ScaleDtype::F32,
        };
        let out = qdq_initializers(&["w".into(), "s".into()], &q, &p);
        // [K=4, N=2] row-major: (k0: 0^8, 15^8), (k1: 1^8, 14^8), ... low nibble first.
        assert_eq!(out[0].dims, vec![4, 2]);
        assert_eq!(out[0].bytes.as_bytes(), [0x78, 0x69, 0x5A, 0x4B]);
        assert_eq!(out[1].dims, vec![1, 2]);
    }
}
