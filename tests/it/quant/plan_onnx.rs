//! `plan_onnx`: what the onnxruntime-genai builder quantizes (docs/onnx-genai.md §1.8, §2.2), and the
//! optional NNCF-style ratio between 4-bit and 8-bit MatMulNBits.

use oxport_arch::{Model, Role};
use oxport_quant::{NBitsParams, OnnxPlanOptions, Precision, ScaleDtype, Scheme, plan_onnx};

use crate::support::reference_checkpoint;

fn checkpoint(model: &str) -> Model {
    Model::open(reference_checkpoint(model)).unwrap()
}

fn nbits(plan: &oxport_quant::QuantPlan, role: Role) -> NBitsParams {
    match plan.entry(role).unwrap().scheme {
        Scheme::NBits(p) => p,
        other => panic!("{role}: {other:?}"),
    }
}

#[test]
fn builder_int4_quantizes_every_matmul_and_keeps_embedding_float() {
    let ckpt = checkpoint("phi3-tiny-random");
    // builder -p int4 -e cpu --extra_options block_size=128 (fixtures/reference/ort/ort_int4_b128).
    let opts = OnnxPlanOptions {
        block_size: 128,
        ..Default::default()
    };
    let plan = plan_onnx(&ckpt, &opts).unwrap();
    let want = NBitsParams {
        bits: 4,
        block_size: 128,
        symmetric: true,
        scale_dtype: ScaleDtype::F32,
    };
    for e in &plan.entries {
        match e.role {
            r if r.is_matmul() => assert_eq!(e.scheme, Scheme::NBits(want), "{}", e.name),
            _ => assert_eq!(e.scheme, Scheme::F32, "{}", e.name),
        }
    }
    assert_eq!(plan.entries.len(), ckpt.tensors().len());

    // cuda: f16 graph, f16 scales; --int8-lm-head.
    let opts = OnnxPlanOptions {
        scale_dtype: ScaleDtype::F16,
        int8_lm_head: true,
        ..Default::default()
    };
    let plan = plan_onnx(&ckpt, &opts).unwrap();
    assert_eq!(plan.entry(Role::Embedding).unwrap().scheme, Scheme::F16);
    assert_eq!(nbits(&plan, Role::LmHead).bits, 8);
    assert_eq!(
        nbits(&plan, Role::AttnQkv { layer: 1 }).scale_dtype,
        ScaleDtype::F16
    );

    let plan = plan_onnx(
        &ckpt,
        &OnnxPlanOptions {
            precision: Precision::Fp16,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(plan.entries.iter().all(|e| e.scheme == Scheme::F16));
    let bad = OnnxPlanOptions {
        block_size: 48,
        ..Default::default()
    };
    assert!(plan_onnx(&ckpt, &bad).is_err());
}

#[test]
fn ratio_ranks_like_nncf() {
    // The same data-free ranking NNCF applied to phi3-tiny-random (fixtures/reference/logs/ranking.txt):
    // L0.qkv, L1.qkv, L0.down get the primary (4-bit) precision at ratio 0.6, everything else 8-bit.
    let ckpt = checkpoint("phi3-tiny-random");
    let plan = plan_onnx(
        &ckpt,
        &OnnxPlanOptions {
            ratio: Some(0.6),
            ..Default::default()
        },
    )
    .unwrap();
    let four: Vec<Role> = plan
        .entries
        .iter()
        .filter(|e| e.ratio_defining && matches!(e.scheme, Scheme::NBits(p) if p.bits == 4))
        .map(|e| e.role)
        .collect();
    assert_eq!(
        four,
        [
            Role::AttnQkv { layer: 0 },
            Role::MlpDown { layer: 0 },
            Role::AttnQkv { layer: 1 }
        ]
    );
    assert_eq!(nbits(&plan, Role::MlpGateUp { layer: 0 }).bits, 8);
    // lm_head is not ratio-defining: it stays 4-bit unless --int8-lm-head.
    assert_eq!(nbits(&plan, Role::LmHead).bits, 4);
    assert!(!plan.entry(Role::LmHead).unwrap().ratio_defining);
    assert_eq!(plan.stats.ratio_defining_layers, 8);
}
