//! NNCF weight compression as optimum-cli writes it (docs/openvino-ir.md §5, §9).
//!
//! Bit-exact with nncf 3.4 `quantization/algorithms/weight_compression/weight_lowering.py`
//! (`calculate_integer_quantization_params`, `_calculate_signed_scale`, `_calculate_integer_quantized_weight`,
//! `nncf/quantization/fake_quantize.py::calculate_scale_zero_point`) and its OpenVINO twin
//! `nncf/openvino/optimized_functions/models.py::_build_integer_quantization_model`, which compute the same
//! f32 math: true division `w / s`, round half to even, f32 scale; the scale is stored as f16 afterwards
//! (`openvino_backend.py::_create_compression_subgraph`, `scale_dtype = ov.Type.f16`).

use half::f16;
use rayon::prelude::*;

use crate::error::{ANON, QuantError};
use crate::rows::{Rows, merge_non_finite, refuse_non_finite};
use crate::simd;

/// NNCF `CompressWeightsMode` values oxport supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NncfMode {
    Int4Sym,
    Int4Asym,
    Int8Sym,
    Int8Asym,
}

impl NncfMode {
    pub fn bits(self) -> u32 {
        match self {
            NncfMode::Int4Sym | NncfMode::Int4Asym => 4,
            NncfMode::Int8Sym | NncfMode::Int8Asym => 8,
        }
    }

    pub fn is_asym(self) -> bool {
        matches!(self, NncfMode::Int4Asym | NncfMode::Int8Asym)
    }

    /// NNCF's name, as in rt_info `mode` and the statistics table (`int4_sym`, ...).
    pub fn name(self) -> &'static str {
        match self {
            NncfMode::Int4Sym => "int4_sym",
            NncfMode::Int4Asym => "int4_asym",
            NncfMode::Int8Sym => "int8_sym",
            NncfMode::Int8Asym => "int8_asym",
        }
    }

    /// `WeightCompressionConfig.compression_dtype` as an OpenVINO element type.
    pub fn element(self) -> &'static str {
        match self {
            NncfMode::Int4Sym => "i4",
            NncfMode::Int4Asym => "u4",
            NncfMode::Int8Sym => "i8",
            NncfMode::Int8Asym => "u8",
        }
    }

    /// `[level_low, level_high]`.
    pub(crate) fn levels(self) -> (f32, f32) {
        match self {
            NncfMode::Int4Sym => (-8.0, 7.0),
            NncfMode::Int4Asym => (0.0, 15.0),
            NncfMode::Int8Sym => (-128.0, 127.0),
            NncfMode::Int8Asym => (0.0, 255.0),
        }
    }
}

impl std::fmt::Display for NncfMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A compressed weight as the OpenVINO IR stores it: weight constant, f16 scale, optional zero point.
#[derive(Clone, Debug, PartialEq)]
pub struct NncfWeight {
    pub mode: NncfMode,
    /// OpenVINO element type of the stored weight: `"i4" | "u4" | "i8" | "u8"`.
    pub weight_element: &'static str,
    /// `[n, k / group, group]` group-wise, `[n, k]` per-channel.
    pub weight_shape: Vec<usize>,
    /// Packed (4-bit: two per byte, first element in the low nibble; i4 two's complement).
    pub weight: Vec<u8>,
    /// `[n, k / group, 1]` or `[n, 1]`.
    pub scale_shape: Vec<usize>,
    pub scale: Vec<f16>,
    /// Asymmetric modes only: same element type as the weight (`u4`/`u8`). Symmetric modes have none: NNCF
    /// stores no zero point and no Subtract for int4_sym and int8_sym.
    pub zero_point_element: Option<&'static str>,
    /// Same as `scale_shape`.
    pub zero_point_shape: Option<Vec<usize>>,
    /// Packed like the weight (u4: two per byte, low nibble first; u8: one per byte).
    pub zero_point: Option<Vec<u8>>,
}

/// NNCF's `eps`: `np.finfo(np.float32).eps`.
const EPS: f32 = f32::EPSILON;

/// Precomputed quantization parameters for one weight: what NNCF's Scale Estimation and GPTQ return
/// (`CompressedWeight(None, scale, zero_point)`) and `transform_model` hands to `do_integer_quantization` as
/// `precomputed_scale` / `precomputed_zero_point` (openvinotoolkit/nncf:src/nncf/quantization/algorithms/
/// weight_compression/weight_lowering.py).
#[derive(Clone, Debug, PartialEq)]
pub struct NncfParams {
    pub mode: NncfMode,
    /// `None`: per-channel (one group of K).
    pub group_size: Option<usize>,
    /// Rows (output channels) `n`.
    pub n: usize,
    /// Groups per row (`k / group_size`, 1 per-channel).
    pub groups: usize,
    /// f32 scales `[n, groups]` (NNCF's `[n, groups, 1]`), before the f16 rounding of the IR.
    pub scale: Vec<f32>,
    /// Asymmetric modes: zero points `[n, groups]` (NNCF holds the same integers as f32 or i32).
    pub zero_point: Option<Vec<u8>>,
}

impl NncfParams {
    /// The `(scale, zero point as f32)` of group `g` of row `r`.
    pub(crate) fn get(&self, r: usize, g: usize) -> (f32, f32) {
        let i = r * self.groups + g;
        (
            self.scale[i],
            self.zero_point.as_ref().map_or(0.0, |z| z[i] as f32),
        )
    }

    /// Check that these parameters describe a `[n, k]` weight.
    fn check(&self, n: usize, k: usize) -> Result<(), QuantError> {
        let group = self.group_size.unwrap_or(k);
        let unsupported = |msg: String| QuantError::Unsupported {
            tensor: ANON.into(),
            msg,
        };
        if group == 0 || !k.is_multiple_of(group) {
            return Err(QuantError::InvalidGroupSize {
                tensor: ANON.into(),
                n,
                k,
                group_size: group,
            });
        }
        let cells = n * self.groups;
        if self.n != n || self.groups != k / group || self.scale.len() != cells {
            return Err(unsupported(format!(
                "parameters for [{}, {} groups] ({} scales) do not fit a [{n}, {k}] weight with group {group}",
                self.n,
                self.groups,
                self.scale.len()
            )));
        }
        if let Some(i) = self.scale.iter().position(|s| !s.is_finite() || *s == 0.0) {
            return Err(unsupported(format!(
                "scale {} at {i} is zero or not finite",
                self.scale[i]
            )));
        }
        match (&self.zero_point, self.mode.is_asym()) {
            (Some(z), true) if z.len() == cells => {
                let (_, hi) = self.mode.levels();
                match z.iter().find(|&&v| v as f32 > hi) {
                    Some(v) => Err(unsupported(format!("zero point {v} beyond {}", self.mode))),
                    None => Ok(()),
                }
            }
            (None, false) => Ok(()),
            _ => Err(unsupported(format!(
                "zero points do not match {} (asymmetric modes need one per group, symmetric none)",
                self.mode
            ))),
        }
    }
}

/// Compress `weight` `[n, k]` with precomputed scales and zero points, as NNCF's `transform_model` does after
/// Scale Estimation or GPTQ (`do_integer_quantization(weight, config, reduction_axes, precomputed_scale,
/// precomputed_zero_point)`): `clip(round_half_even(w / scale + zp))`, the same f32 math as [`compress_nncf`],
/// the same packed layout; the f32 scales are stored as f16.
pub fn compress_nncf_with_params(
    weight: Rows<'_>,
    n: usize,
    k: usize,
    params: &NncfParams,
) -> Result<NncfWeight, QuantError> {
    weight.check_shape(n, k)?;
    params.check(n, k)?;
    compress(
        weight,
        n,
        k,
        params.mode,
        params.group_size,
        Vec::new(),
        Some(params),
    )
}

/// Compress `weight` (`[n, k]` row-major) with `mode`; `group_size` `None` means per-channel.
///
/// A group size that does not divide K is NNCF's `InvalidGroupSizeError` (`reshape_weight_for_grouped_quantization`);
/// the planner applies the `ignore`/`adjust` fallbacks before calling this.
pub fn compress_nncf(
    weight: &[f32],
    n: usize,
    k: usize,
    mode: NncfMode,
    group_size: Option<usize>,
) -> Result<NncfWeight, QuantError> {
    compress_nncf_rows(Rows::F32(weight), n, k, mode, group_size)
}

/// [`compress_nncf`] reading BF16/F16/F32 rows (e.g. straight from a safetensors view), decoded per row.
pub fn compress_nncf_rows(
    weight: Rows<'_>,
    n: usize,
    k: usize,
    mode: NncfMode,
    group_size: Option<usize>,
) -> Result<NncfWeight, QuantError> {
    compress_nncf_rows_into(weight, n, k, mode, group_size, Vec::new())
}

/// [`compress_nncf_rows`] packing the codes into `packed` (any length and contents: it is cleared), so an exporter
/// can hand in a written buffer and not fault in fresh pages for every weight. The result is the same.
pub fn compress_nncf_rows_into(
    weight: Rows<'_>,
    n: usize,
    k: usize,
    mode: NncfMode,
    group_size: Option<usize>,
    packed: Vec<u8>,
) -> Result<NncfWeight, QuantError> {
    compress(weight, n, k, mode, group_size, packed, None)
}

/// The row pass of [`compress_nncf_rows_into`] (`given: None`: NNCF's min-max parameters) and
/// [`compress_nncf_with_params`] (`given`: already checked against `[n, k]`).
fn compress(
    weight: Rows<'_>,
    n: usize,
    k: usize,
    mode: NncfMode,
    group_size: Option<usize>,
    mut packed: Vec<u8>,
    given: Option<&NncfParams>,
) -> Result<NncfWeight, QuantError> {
    // NaN/Inf is refused in the row pass below (one read of the weight); a bad group size still reports NaN/Inf
    // first, as a separate check did.
    weight.check_shape(n, k)?;
    let group = group_size.unwrap_or(k);
    if group == 0 || !k.is_multiple_of(group) {
        weight.check(n, k)?;
        return Err(QuantError::InvalidGroupSize {
            tensor: ANON.into(),
            n,
            k,
            group_size: group,
        });
    }
    let bits = mode.bits() as usize;
    let groups = k / group;
    let row_bytes = (k * bits).div_ceil(8);
    let zp_row_bytes = (groups * bits).div_ceil(8);
    // OpenVINO packs sub-byte tensors flat over the whole shape, so sizes are over all elements.
    packed.clear();
    packed.resize((n * k * bits).div_ceil(8), 0);
    let mut scale = vec![f16::ZERO; n * groups];
    let mut zero_point = vec![0u8; (n * groups * bits).div_ceil(8)];
    // Rows are independent when each starts on a byte boundary (always for real checkpoints: K even);
    // otherwise quantize rows in parallel into unpacked codes and pack in one flat pass.
    let row_aligned =
        (k * bits).is_multiple_of(8) && (!mode.is_asym() || (groups * bits).is_multiple_of(8));
    let non_finite = if row_aligned {
        // Symmetric modes have no zero point: give each row a scratch byte so the zip below covers every row.
        let mut zp_scratch = Vec::new();
        let zp_rows: &mut [u8] = if mode.is_asym() {
            &mut zero_point
        } else {
            zp_scratch.resize(n, 0u8);
            &mut zp_scratch
        };
        let zp_row_bytes = if mode.is_asym() { zp_row_bytes } else { 1 };
        packed
            .par_chunks_mut(row_bytes)
            .zip(scale.par_chunks_mut(groups))
            .zip(zp_rows.par_chunks_mut(zp_row_bytes))
            .enumerate()
            .map_init(
                || (vec![0u8; k], Vec::new()),
                |(codes, input), (r, ((dst, sc), zp))| {
                    let (row, non_finite) = weight.row_finite(r, k, input);
                    if non_finite.0 == 0 {
                        let out = RowOut {
                            dst,
                            scales: sc,
                            zero_points: zp,
                        };
                        compress_row(row, mode, group, codes, out, given, r);
                    }
                    non_finite
                },
            )
            .reduce(|| (0, usize::MAX), merge_non_finite)
    } else {
        let mut codes = vec![0u8; n * k];
        let mut zps = vec![0u8; n * groups];
        let non_finite = codes
            .par_chunks_mut(k)
            .zip(scale.par_chunks_mut(groups))
            .zip(zps.par_chunks_mut(groups))
            .enumerate()
            .map_init(Vec::new, |input, (r, ((c, sc), zp))| {
                let (row, non_finite) = weight.row_finite(r, k, input);
                if non_finite.0 == 0 {
                    for (g, chunk) in row.chunks(group).enumerate() {
                        let (s, z) = quantize_group(
                            chunk,
                            mode,
                            &mut c[g * group..(g + 1) * group],
                            given.map(|p| p.get(r, g)),
                        );
                        sc[g] = f16::from_f32(s);
                        zp[g] = z;
                    }
                }
                non_finite
            })
            .reduce(|| (0, usize::MAX), merge_non_finite);
        refuse_non_finite(non_finite)?;
        for (i, c) in codes.iter().enumerate() {
            put(&mut packed, i, *c, bits);
        }
        for (i, z) in zps.iter().enumerate() {
            put(&mut zero_point, i, *z, bits);
        }
        (0, usize::MAX)
    };
    refuse_non_finite(non_finite)?;

    let (weight_shape, scale_shape) = match group_size {
        Some(g) => (vec![n, k / g, g], vec![n, k / g, 1]),
        None => (vec![n, k], vec![n, 1]),
    };
    let asym = mode.is_asym();
    Ok(NncfWeight {
        mode,
        weight_element: mode.element(),
        weight_shape,
        weight: packed,
        zero_point_element: asym.then_some(mode.element()),
        zero_point_shape: asym.then(|| scale_shape.clone()),
        zero_point: asym.then_some(zero_point),
        scale_shape,
        scale,
    })
}

/// Where [`compress_row`] stores one row: packed codes, f16 scales and (asym) packed zero points.
struct RowOut<'a> {
    dst: &'a mut [u8],
    scales: &'a mut [f16],
    zero_points: &'a mut [u8],
}

simd::multiversion! {
    /// One row that starts on a byte boundary: quantize its groups, store scales (f16) and zero points, pack.
    fn compress_row(
        row: &[f32],
        mode: NncfMode,
        group: usize,
        codes: &mut [u8],
        out: RowOut<'_>,
        given: Option<&NncfParams>,
        r: usize,
    ) {
        let RowOut {
            dst,
            scales,
            zero_points,
        } = out;
        let bits = mode.bits() as usize;
        for (g, chunk) in row.chunks(group).enumerate() {
            let codes = &mut codes[g * group..(g + 1) * group];
            let (s, z) = quantize_group(chunk, mode, codes, given.map(|p| p.get(r, g)));
            scales[g] = f16::from_f32(s);
            if mode.is_asym() {
                put(zero_points, g, z, bits);
            }
        }
        pack_row(dst, codes, bits);
    }
}

/// Pack a row of codes that starts on a byte boundary (4-bit: element 2j low nibble, 2j+1 high nibble).
#[inline(always)]
fn pack_row(dst: &mut [u8], codes: &[u8], bits: usize) {
    if bits == 4 {
        for (d, pair) in dst.iter_mut().zip(codes.chunks_exact(2)) {
            *d = (pair[0] & 0x0f) | (pair[1] << 4);
        }
    } else {
        dst.copy_from_slice(codes);
    }
}

/// Store code `c` (already masked to `bits`) at element `i` of a packed buffer: OpenVINO packs 4-bit
/// elements two per byte, element 2j in the low nibble (docs/openvino-ir.md §5.3).
#[inline(always)]
fn put(dst: &mut [u8], i: usize, c: u8, bits: usize) {
    if bits == 4 {
        let byte = &mut dst[i / 2];
        if i.is_multiple_of(2) {
            *byte = (*byte & 0xf0) | (c & 0x0f);
        } else {
            *byte = (*byte & 0x0f) | (c << 4);
        }
    } else {
        dst[i] = c;
    }
}

/// Quantize one group with NNCF's min-max parameters, or with `given` `(scale, zero point)`; writes the codes
/// (two's complement bytes for signed modes, masked when packed) and returns the f32 scale and the zero point.
#[inline(always)]
fn quantize_group(
    w: &[f32],
    mode: NncfMode,
    codes: &mut [u8],
    given: Option<(f32, f32)>,
) -> (f32, u8) {
    let (s, zp) = given.unwrap_or_else(|| group_params(w, mode));
    for (c, &v) in codes.iter_mut().zip(w) {
        *c = code(v, mode, s, zp) as i8 as u8;
    }
    (s, zp as u8)
}

/// NNCF's min-max `(scale, zero point)` of one group (`calculate_integer_quantization_params`); the zero point is
/// 0 for symmetric modes, which have none.
#[inline(always)]
pub(crate) fn group_params(w: &[f32], mode: NncfMode) -> (f32, f32) {
    let (level_low, level_high) = mode.levels();
    // The sign of a zero extreme never matters here: an all-zero group gets scale eps either way.
    let (min, max) = simd::min_max(w);
    if mode.is_asym() {
        asym_params(min, max, level_high)
    } else {
        // _calculate_signed_scale: the extreme of larger magnitude maps to level_low (-8 / -128), so the
        // scale is negative when the positive extreme is larger.
        let abs_min = min.abs();
        let mut s = if abs_min >= max { abs_min } else { -max };
        s /= -level_low;
        if s.abs() < EPS {
            s = EPS;
        }
        (s, 0.0)
    }
}

/// `_calculate_integer_quantized_weight` for one value: `clip(round_half_even(w / s + zp))` (true division,
/// f32; `+ zp` only in asymmetric modes), as an integer in `[level_low, level_high]`.
#[inline(always)]
pub(crate) fn code(w: f32, mode: NncfMode, s: f32, zp: f32) -> i32 {
    let (level_low, level_high) = mode.levels();
    if mode.is_asym() {
        simd::clamp_round_half_even(w / s + zp, level_low, level_high)
    } else {
        simd::clamp_round_half_even(w / s, level_low, level_high)
    }
}

/// Quantize `w` as one group of `mode` and dequantize it in f32 into `out` (`(q - zp) * scale`, NNCF's
/// `integer_quantize_dequantize_weight` with the group spanning `w`: `do_integer_quantization` then
/// `do_integer_dequantization`, both f32).
pub(crate) fn qdq_group_f32(w: &[f32], mode: NncfMode, codes: &mut [u8], out: &mut [f32]) {
    let (s, zp) = quantize_group(w, mode, codes, None);
    if mode.is_asym() {
        let zp = zp as f32;
        for (o, &c) in out.iter_mut().zip(codes.iter()) {
            *o = (c as f32 - zp) * s;
        }
    } else {
        for (o, &c) in out.iter_mut().zip(codes.iter()) {
            *o = (c as i8 as f32) * s;
        }
    }
}

/// calculate_integer_quantization_params (asym) + calculate_scale_zero_point(narrow_range=False): the range
/// always includes 0; `scale = (hi - lo) / (levels - 1)`, eps if smaller; `zp = clip(0 - round(lo / scale))`.
/// Returns the f32 scale and the zero point as f32 (it is added in f32 before rounding).
#[inline(always)]
pub(crate) fn asym_params(min: f32, max: f32, level_high: f32) -> (f32, f32) {
    let lo = min.min(0.0);
    let hi = max.max(0.0);
    let mut s = (hi - lo) / level_high;
    if s.abs() < EPS {
        s = EPS;
    }
    let zp = (0.0 - (lo / s).round_ties_even()).clamp(0.0, level_high);
    (s, zp)
}

impl NncfWeight {
    /// Dequantize as the IR's decompression subgraph does (in f16: `(f16(q) - f16(zp)) * scale`), returned as
    /// f32 `[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let bits = self.mode.bits() as usize;
        let n = self.weight_shape[0];
        let k: usize = self.weight_shape[1..].iter().product();
        let groups = self.scale.len() / n;
        let group = k / groups;
        let get = |buf: &[u8], i: usize| -> u8 {
            if bits == 4 {
                (buf[i / 2] >> ((i % 2) * 4)) & 0xf
            } else {
                buf[i]
            }
        };
        let signed = !self.mode.is_asym();
        let mut out = vec![0f32; n * k];
        out.par_chunks_mut(k).enumerate().for_each(|(row, dst)| {
            for (j, d) in dst.iter_mut().enumerate() {
                let i = row * k + j;
                let g = row * groups + j / group;
                let raw = get(&self.weight, i);
                let q = if signed {
                    if bits == 4 {
                        ((raw << 4) as i8 >> 4) as f32
                    } else {
                        raw as i8 as f32
                    }
                } else {
                    raw as f32
                };
                let zp = self.zero_point.as_ref().map_or(0.0, |z| get(z, g) as f32);
                // Every f16 product of small integers and an f16 scale, rounded once to f16.
                let v = f16::from_f32(q - zp).to_f32() * self.scale[g].to_f32();
                *d = f16::from_f32(v).to_f32();
            }
        });
        out
    }
}
