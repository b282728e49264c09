//! The shared attention mask (docs/openvino-ir.md §4.1.3).

use super::*;

const M: &str = "__module.model";

/// Constants the mask's pieces share (each made once, where the trace first uses it).
struct MaskConsts {
    z32: Out,
    one32: Out,
    /// The i32 scalar 0 the trace uses as its Squeeze, ReduceProd, Split and Gather axis.
    sq_axis: Out,
}

/// The f32 additive mask `[B, 1, q, kv]`: causal ∧ sliding window ∧ padding, 0 where visible and −65504
/// (`torch.finfo(float16).min`) elsewhere — the trace of transformers 5's `create_causal_mask` (§4.1.3).
pub(super) fn build_mask(
    b: &mut Builder,
    past_len: Out,
    q_len: Out,
    q_len1: Out,
    batch_n: Out,
    attention_mask: Out,
) -> Result<Out> {
    let m = M;
    let total = b.binary("Add", &format!("{m}/aten::add/Add"), past_len, q_len, &[]);
    let z32 = b.c_i32(&[0], &[])?;
    let one32 = b.c_i32(&[1], &[])?;
    let kv4 = kv_positions(b, z32, one32, total)?;
    let sq_axis = b.c_i32(&[0], &[])?;
    let k = MaskConsts {
        z32,
        one32,
        sq_axis,
    };
    let q4 = q_positions(b, &k, past_len, total, q_len1)?;
    let mdims = [1, 1, DYN, DYN];
    let t = b.g.constant("", Elem::Boolean, &[], &[1])?;
    let causal = causal(b, kv4, q4, t)?;
    let a2 = b.binary(
        "BitwiseAnd",
        &format!("{m}/aten::__and__/BitwiseAnd_2"),
        t,
        causal,
        &mdims,
    );

    // Padding: attention_mask[b, kv_idx] via a flat gather, as torch's advanced indexing traces.
    let pad = padding(b, &k, attention_mask, kv4, batch_n)?;
    let a3 = b.binary(
        "BitwiseAnd",
        &format!("{m}/aten::__and__/BitwiseAnd_3"),
        a2,
        pad,
        &[DYN, 1, DYN, DYN],
    );
    additive(b, a3, batch_n, q_len1, total)
}

/// `Range(start, stop, one32)` as i64.
fn range(b: &mut Builder, one32: Out, name: &str, start: Out, stop: Out) -> Out {
    b.g.op1(
        "Range",
        "opset4",
        name,
        &[start, stop, one32],
        &[("output_type", "i64")],
        (Elem::I64, &[DYN]),
    )
}

/// The key positions `arange(total)` as `[1, 1, 1, kv]`.
fn kv_positions(b: &mut Builder, z32: Out, one32: Out, total: Out) -> Result<Out> {
    let m = M;
    let kv_idx = range(b, one32, &format!("{m}/aten::arange/Range"), z32, total);
    let k1 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze"),
        kv_idx,
        0,
        &[1, DYN],
    )?;
    let k2 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_1"),
        k1,
        1,
        &[1, 1, DYN],
    )?;
    b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_2"),
        k2,
        2,
        &[1, 1, 1, DYN],
    )
}

/// The query positions `past_len + arange(q_len)` as `[1, 1, q, 1]`.
fn q_positions(
    b: &mut Builder,
    k: &MaskConsts,
    past_len: Out,
    total: Out,
    q_len1: Out,
) -> Result<Out> {
    let m = M;
    let z32 = k.z32;
    let q_len_s = b.op(
        "Squeeze",
        "opset1",
        &format!("{m}/aten::size/Gather_3"),
        &[q_len1, k.sq_axis],
        &[],
        &[],
    );
    let r2 = range(
        b,
        k.one32,
        &format!("{m}/aten::arange/Range_2"),
        z32,
        q_len_s,
    );
    let r1 = range(
        b,
        k.one32,
        &format!("{m}/aten::arange/Range_1"),
        past_len,
        total,
    );
    let first = b.gather_scalar(&format!("{m}/aten::select/Gather"), r1, 0)?;
    let q_idx = b.binary("Add", &format!("{m}/aten::add/Add_3"), r2, first, &[DYN]);
    let q1 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_3"),
        q_idx,
        0,
        &[1, DYN],
    )?;
    let q2 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_4"),
        q1,
        1,
        &[1, 1, DYN],
    )?;
    b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_5"),
        q2,
        3,
        &[1, 1, DYN, 1],
    )
}

/// `kv <= q`, and with a sliding window also `kv > q - window` (each And'ed with the trace's `true`).
fn causal(b: &mut Builder, kv4: Out, q4: Out, t: Out) -> Result<Out> {
    let m = M;
    let mdims = [1, 1, DYN, DYN];
    let le = |b: &mut Builder| {
        b.g.op1(
            "LessEqual",
            "opset1",
            &format!("{m}/aten::le/LessEqual"),
            &[kv4, q4],
            &[AB],
            (Elem::Boolean, &mdims),
        )
    };
    Ok(match b.cfg.sliding_window {
        Some(window) => {
            let w = b.c_i64(&[-n(window)], &[1, 1, 1, 1])?;
            let lo = b.binary(
                "Add",
                &format!("{m}/aten::sub/Subtract"),
                q4,
                w,
                &[1, 1, DYN, 1],
            );
            let gt = b.g.op1(
                "Greater",
                "opset1",
                &format!("{m}/aten::gt/Greater"),
                &[kv4, lo],
                &[AB],
                (Elem::Boolean, &mdims),
            );
            let a0 = b.binary(
                "BitwiseAnd",
                &format!("{m}/aten::__and__/BitwiseAnd"),
                t,
                gt,
                &mdims,
            );
            let le = le(b);
            b.binary(
                "BitwiseAnd",
                &format!("{m}/aten::__and__/BitwiseAnd_1"),
                a0,
                le,
                &mdims,
            )
        }
        None => le(b),
    })
}

/// `attention_mask[b, kv_idx]` as `[B, 1, 1, kv]` booleans.
fn padding(
    b: &mut Builder,
    k: &MaskConsts,
    attention_mask: Out,
    kv4: Out,
    batch_n: Out,
) -> Result<Out> {
    let m = M;
    let am = b.convert(
        &format!("{m}/aten::to/Convert_5"),
        attention_mask,
        Elem::Boolean,
    );
    let am_shape = b.shape_of(&format!("{m}/aten::index/ShapeOf_1"), am, Elem::I32);
    let prod = b.op(
        "ReduceProd",
        "opset1",
        &format!("{m}/aten::index/ReduceProd"),
        &[am_shape, k.sq_axis],
        &[("keep_dims", "true")],
        &[1],
    );
    let m1 = b.c_i32(&[-1], &[1])?;
    let flat_shape = b.op(
        "Concat",
        "opset1",
        &format!("{m}/aten::index/Concat"),
        &[prod, m1],
        &[("axis", "0")],
        &[2],
    );
    let am_flat = b.reshape_dyn(
        &format!("{m}/aten::index/Reshape"),
        am,
        flat_shape,
        true,
        &[DYN, DYN],
    );
    let kv_i32 = b.convert(&format!("{m}/aten::index/Convert"), kv4, Elem::I32);
    let b_i32 = batch_index(b, k, batch_n)?;
    let split = b.g.op(
        "Split",
        "opset1",
        &format!("{m}/aten::index/Split"),
        &[am_shape, k.sq_axis],
        &[("num_splits", "2")],
        &[(Elem::I32, &[1]), (Elem::I32, &[1])],
    );
    let stride = b.binary(
        "Multiply",
        &format!("{m}/aten::index/Multiply"),
        b_i32,
        split[1],
        &[DYN, 1, 1, 1],
    );
    let flat_idx = b.binary(
        "Add",
        &format!("{m}/aten::index/Add"),
        kv_i32,
        stride,
        &[DYN, 1, 1, DYN],
    );
    let gathered = b.gather(
        &format!("{m}/aten::index/Gather"),
        am_flat,
        flat_idx,
        k.sq_axis,
        &[DYN, 1, 1, DYN, DYN],
    );
    let g_flat = b.reshape(
        &format!("{m}/aten::index/Reshape_8"),
        gathered,
        &[-1],
        false,
        &[DYN],
    )?;
    let idx_shape = b.shape_of(&format!("{m}/aten::index/ShapeOf_5"), flat_idx, Elem::I32);
    Ok(b.reshape_dyn(
        &format!("{m}/aten::index/Reshape_12"),
        g_flat,
        idx_shape,
        false,
        &[DYN, 1, 1, DYN],
    ))
}

/// The boolean mask broadcast to `[B, 1, q, total]`, then 0 / −65504.
fn additive(b: &mut Builder, a3: Out, batch_n: Out, q_len1: Out, total: Out) -> Result<Out> {
    let m = M;
    let batch1 = b.reshape("", batch_n, &[1], false, &[1])?;
    let total1 = {
        let ax = b.c_i32(&[0], &[])?;
        b.op("Unsqueeze", "opset1", "", &[total, ax], &[], &[1])
    };
    let one = b.c_i64(&[1], &[1])?;
    let target = b.op(
        "Concat",
        "opset1",
        &format!("{m}/prim::ListConstruct/SequenceMark"),
        &[batch1, one, q_len1, total1],
        &[("axis", "0")],
        &[4],
    );
    let expanded = b.op(
        "Broadcast",
        "opset3",
        &format!("{m}/aten::expand/Broadcast"),
        &[a3, target],
        &[("mode", "bidirectional")],
        &[DYN, 1, DYN, DYN],
    );
    let zero = b.c_float("", &[0.0], &[])?;
    let min = b.c_float("", &[-65504.0], &[])?;
    Ok(b.g.op1(
        "Select",
        "opset1",
        &format!("{m}/aten::where/Select"),
        &[expanded, zero, min],
        &[AB],
        (Elem::F32, &[DYN, 1, DYN, DYN]),
    ))
}

/// The batch row index `arange(B)` as i32 `[B, 1, 1, 1]`.
fn batch_index(b: &mut Builder, k: &MaskConsts, batch_n: Out) -> Result<Out> {
    let m = M;
    let b_range = range(
        b,
        k.one32,
        &format!("{m}/aten::arange/Range_3"),
        k.z32,
        batch_n,
    );
    let b1 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_6"),
        b_range,
        1,
        &[DYN, 1],
    )?;
    let b2 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_7"),
        b1,
        2,
        &[DYN, 1, 1],
    )?;
    let b4 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_8"),
        b2,
        3,
        &[DYN, 1, 1, 1],
    )?;
    Ok(b.convert(&format!("{m}/aten::index/Convert_3"), b4, Elem::I32))
}
