//! Against the real optimum-cli / NNCF 3.4 exports in `fixtures/reference/`: the stored bytes of two layer-0
//! weights, and which weight got which precision in every export (ratio selection, group-size fallbacks).

use std::io::Read;
use std::path::PathBuf;

use oxport_arch::{Model, Role};
use oxport_hf::DType;
use oxport_quant::{
    Backup, Fallback, NncfMode, OpenVinoPlanOptions, OvWeightFormat, QuantError, QuantPlan, Scheme,
    compress_nncf, plan_openvino,
};
use serde_json::Value;

use crate::support::fixture;

fn reference() -> PathBuf {
    fixture("reference")
}

fn checkpoint(model: &str) -> Model {
    Model::open(reference().join("checkpoints").join(model)).unwrap()
}

/// The entries of a zip written by `np.savez` (stored, zip64 local headers): name → bytes.
fn read_npz(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let b = std::fs::read(path).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut off = 0;
    while b[off..off + 4] == [b'P', b'K', 3, 4] {
        assert_eq!(u16_at(off + 8), 0, "npz entry is not stored uncompressed");
        let (name_len, extra_len) = (u16_at(off + 26), u16_at(off + 28));
        let name = String::from_utf8(b[off + 30..off + 30 + name_len].to_vec()).unwrap();
        let extra = &b[off + 30 + name_len..off + 30 + name_len + extra_len];
        let mut size = u32_at(off + 18);
        if size == u32::MAX as usize {
            // zip64 extra field (id 1): uncompressed size, then compressed size, 8 bytes each.
            assert_eq!(u16::from_le_bytes([extra[0], extra[1]]), 1);
            size = u64::from_le_bytes(extra[12..20].try_into().unwrap()) as usize;
        }
        let start = off + 30 + name_len + extra_len;
        out.push((name, b[start..start + size].to_vec()));
        off = start + size;
    }
    out
}

/// The data bytes of a `.npy` file (format 1.0/2.0/3.0), after its header.
fn npy_data(npy: &[u8]) -> &[u8] {
    assert_eq!(&npy[..6], b"\x93NUMPY");
    let (header_len, start) = match npy[6] {
        1 => (u16::from_le_bytes([npy[8], npy[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(npy[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&npy[start..start + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    &npy[start + header_len..]
}

#[test]
fn layer0_weights_match_nncf_bytes() {
    let npz = read_npz(&reference().join("exports/phi3-tiny-random/ov_int4/weight_samples.npz"));
    let get = |name: &str| -> Vec<u8> {
        let (_, bytes) = npz
            .iter()
            .find(|(n, _)| n == &format!("{name}.npy"))
            .unwrap_or_else(|| panic!("{name}"));
        npy_data(bytes).to_vec()
    };
    let ckpt = checkpoint("phi3-tiny-random");
    let f16_bytes =
        |s: &[half::f16]| -> Vec<u8> { s.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect() };

    let qkv = ckpt.read_f32(Role::AttnQkv { layer: 0 }).unwrap();
    let q = compress_nncf(&qkv, 768, 256, NncfMode::Int4Sym, Some(128)).unwrap();
    assert_eq!(q.weight_element, "i4");
    assert_eq!(q.weight_shape, vec![768, 2, 128]);
    assert_eq!(q.scale_shape, vec![768, 2, 1]);
    assert!(q.zero_point.is_none());
    assert!(
        q.weight == get("L0_qkv_int4_raw_bytes"),
        "layer-0 qkv i4 bytes differ from NNCF's"
    );
    assert!(
        f16_bytes(&q.scale) == get("L0_qkv_int4_scale_f16"),
        "layer-0 qkv scales differ from NNCF's"
    );

    let o = ckpt.read_f32(Role::AttnOut { layer: 0 }).unwrap();
    let q = compress_nncf(&o, 256, 256, NncfMode::Int8Asym, None).unwrap();
    assert_eq!((q.weight_element, q.zero_point_element), ("u8", Some("u8")));
    assert_eq!(q.weight_shape, vec![256, 256]);
    assert_eq!(q.zero_point_shape, Some(vec![256, 1]));
    assert!(
        q.weight == get("L0_o_int8_raw_bytes"),
        "layer-0 o_proj u8 bytes differ from NNCF's"
    );
    assert!(
        f16_bytes(&q.scale) == get("L0_o_int8_scale_f16"),
        "layer-0 o_proj scales differ from NNCF's"
    );
    assert!(
        q.zero_point.unwrap() == get("L0_o_int8_zero_point_u8"),
        "layer-0 o_proj zero points differ"
    );
}

/// `weights.json.gz` of an export: checkpoint tensor name → (element type, shape) of the stored weight.
fn exported(model: &str, job: &str) -> Vec<(String, String, Vec<usize>)> {
    let path = reference()
        .join("exports")
        .join(model)
        .join(job)
        .join("weights.json.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|w| {
            let w = &w["weight"];
            let name = w["name"]
                .as_str()?
                .strip_prefix("self.")?
                .strip_suffix("._openvino_orig_weight")?;
            let shape = w["shape"]
                .as_array()?
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            Some((
                format!("{name}.weight"),
                w["type"].as_str()?.to_string(),
                shape,
            ))
        })
        .collect()
}

/// What the plan says will be stored for each weight, in the same terms.
fn planned(plan: &QuantPlan, ckpt: &Model) -> Vec<(String, String, Vec<usize>)> {
    plan.entries
        .iter()
        .filter(|e| e.role.is_matmul() || e.role == Role::Embedding)
        .map(|e| {
            let (n, k) = (e.shape[0], e.shape[1]);
            let (ty, shape) = match e.scheme {
                Scheme::Nncf {
                    mode,
                    group_size: Some(g),
                } => (mode.element().to_string(), vec![n, k / g, g]),
                Scheme::Nncf {
                    mode,
                    group_size: None,
                } => (mode.element().to_string(), vec![n, k]),
                Scheme::Keep => match ckpt.info(e.role).unwrap().dtype {
                    DType::BF16 => ("bf16".into(), vec![n, k]),
                    DType::F16 => ("f16".into(), vec![n, k]),
                    DType::F32 => ("f32".into(), vec![n, k]),
                },
                Scheme::F16 => ("f16".into(), vec![n, k]),
                Scheme::F32 => ("f32".into(), vec![n, k]),
                Scheme::NBits(_) => panic!("{}: MatMulNBits in an OpenVINO plan", e.name),
            };
            (e.name.clone(), ty, shape)
        })
        .collect()
}

fn int4(fallback: Fallback) -> OpenVinoPlanOptions {
    // optimum-cli --weight-format int4 --group-size 128 --ratio 0.6 --sym [--group-size-fallback ...]
    OpenVinoPlanOptions {
        weight_format: OvWeightFormat::Int4,
        group_size: 128,
        ratio: 0.6,
        sym: true,
        all_layers: false,
        backup_precision: Backup::Int8Asym,
        group_size_fallback: fallback,
        min_adjusted_group_size: 32,
        ..OpenVinoPlanOptions::default()
    }
}

fn assert_plan_matches(model: &str, job: &str, opts: &OpenVinoPlanOptions) -> QuantPlan {
    let ckpt = checkpoint(model);
    let plan = plan_openvino(&ckpt, opts, &mut |_, _, _| {})
        .unwrap_or_else(|e| panic!("{model}/{job}: {e}"));
    let mut want = exported(model, job);
    let mut got = planned(&plan, &ckpt);
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "{model}/{job}: planned weights differ from what optimum-cli/NNCF stored\n{plan}"
    );
    plan
}

#[test]
fn int4_ratio_picks_the_layers_nncf_picked() {
    let plan = assert_plan_matches("phi3-tiny-random", "ov_int4", &int4(Fallback::Error));
    // NNCF's table: int8_asym 5/8 ratio-defining, int4_sym g128 3/8 (524288 of 1310720 parameters).
    let s = &plan.stats;
    assert_eq!(
        (s.ratio_defining_layers, s.ratio_defining_params),
        (8, 1_310_720)
    );
    let row = |label: &str| {
        s.rows
            .iter()
            .find(|r| r.label == label)
            .unwrap_or_else(|| panic!("{label}\n{plan}"))
    };
    assert_eq!(
        row("int4_sym, group size 128").ratio_defining_params,
        524_288
    );
    assert_eq!(row("int4_sym, group size 128").layers, 3);
    assert_eq!(row("int8_asym, per-channel").layers, 7);
    assert_eq!(row("int8_asym, per-channel").ratio_defining_layers, 5);
    let text = plan.to_string();
    assert!(
        text.contains("int4_sym, group size 128") && text.contains("40% (3 / 8)"),
        "{text}"
    );

    assert_plan_matches("phi3-tiny-gqa", "ov_int4", &int4(Fallback::Error));
}

#[test]
fn k320_group_size_fallbacks_match_nncf() {
    let plan = assert_plan_matches("phi3-tiny-k320", "ov_int4_adjust", &int4(Fallback::Adjust));
    assert!(
        plan.entry(Role::AttnQkv { layer: 0 })
            .unwrap()
            .reason
            .contains("adjusted 128 -> 64"),
        "{plan}"
    );
    let plan = assert_plan_matches("phi3-tiny-k320", "ov_int4_ignore", &int4(Fallback::Ignore));
    assert!(
        plan.entry(Role::AttnOut { layer: 1 })
            .unwrap()
            .reason
            .contains("ignore"),
        "{plan}"
    );

    // Default `error`: fails after the assignment, naming only the weights selected for int4 (docs/openvino-ir.md §9).
    let err = plan_openvino(
        &checkpoint("phi3-tiny-k320"),
        &int4(Fallback::Error),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    match &err {
        QuantError::InvalidGroupSizes {
            group_size: 128,
            failed,
        } => {
            let mut names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
            names.sort();
            assert_eq!(
                names,
                [
                    "model.layers.0.self_attn.o_proj.weight",
                    "model.layers.0.self_attn.qkv_proj.weight",
                    "model.layers.1.mlp.gate_up_proj.weight",
                    "model.layers.1.self_attn.o_proj.weight",
                ]
            );
            assert!(failed.iter().all(|(_, k)| *k == 320));
        }
        other => panic!("expected InvalidGroupSizes, got {other}"),
    }
}

#[test]
fn int8_and_fp16_plans_match_exports() {
    for model in ["phi3-tiny-random", "phi3-tiny-gqa", "phi3-tiny-k320"] {
        let int8 = OpenVinoPlanOptions {
            weight_format: OvWeightFormat::Int8,
            sym: false,
            ..Default::default()
        };
        assert_plan_matches(model, "ov_int8", &int8);
        let fp16 = OpenVinoPlanOptions {
            weight_format: OvWeightFormat::Fp16,
            ..Default::default()
        };
        assert_plan_matches(model, "ov_fp16", &fp16);
    }
}

#[test]
fn dry_run_table_lists_every_tensor_and_nncf_statistics() {
    let ckpt = checkpoint("phi3-tiny-k320");
    let plan = plan_openvino(&ckpt, &int4(Fallback::Adjust), &mut |_, _, _| {}).unwrap();
    let text = plan.to_string();
    for t in ckpt.tensors() {
        assert!(text.contains(&t.name), "{} missing from\n{text}", t.name);
    }
    // NNCF's table for this export (logs/export_phi3-tiny-k320__ov_int4_adjust.log), minus the rotary
    // inv_freq MatMul NNCF also counts as a float layer: int8 5 layers, int4 g64 4 layers (45% of the
    // ratio-defining parameters), int4 g128 1 layer (10%).
    let rows: Vec<(&str, usize, usize)> = plan
        .stats
        .rows
        .iter()
        .map(|r| (r.label.as_str(), r.layers, r.ratio_defining_layers))
        .collect();
    assert_eq!(
        rows,
        [
            ("int8_asym, per-channel", 5, 3),
            ("int4_sym, group size 64", 4, 4),
            ("int4_sym, group size 128", 1, 1)
        ]
    );
    assert!(
        text.contains("45% (4 / 8)") && text.contains("10% (1 / 8)"),
        "{text}"
    );
}

#[test]
fn all_layers_and_backup_none() {
    let ckpt = checkpoint("phi3-tiny-random");
    // --all-layers --ratio 1.0: embedding and lm_head are candidates too, so everything is int4.
    let opts = OpenVinoPlanOptions {
        ratio: 1.0,
        all_layers: true,
        ..int4(Fallback::Error)
    };
    let plan = plan_openvino(&ckpt, &opts, &mut |_, _, _| {}).unwrap();
    for e in plan
        .entries
        .iter()
        .filter(|e| e.role.is_matmul() || e.role == Role::Embedding)
    {
        assert_eq!(
            e.scheme,
            Scheme::Nncf {
                mode: NncfMode::Int4Sym,
                group_size: Some(128)
            },
            "{}",
            e.name
        );
        assert!(
            e.ratio_defining && e.sensitivity.is_none(),
            "{}: ratio 1 needs no ranking",
            e.name
        );
    }
    // --backup-precision none: what is not int4 keeps the checkpoint dtype.
    let opts = OpenVinoPlanOptions {
        backup_precision: Backup::None,
        ..int4(Fallback::Error)
    };
    let plan = plan_openvino(&ckpt, &opts, &mut |_, _, _| {}).unwrap();
    assert_eq!(plan.entry(Role::LmHead).unwrap().scheme, Scheme::Keep);
    assert_eq!(
        plan.entry(Role::AttnOut { layer: 0 }).unwrap().scheme,
        Scheme::Keep
    );
    assert!(matches!(
        plan.entry(Role::AttnQkv { layer: 0 }).unwrap().scheme,
        Scheme::Nncf { .. }
    ));
    // Asymmetric int4 and per-channel int4 (group size 0 = optimum's -1).
    let opts = OpenVinoPlanOptions {
        sym: false,
        group_size: 0,
        ..int4(Fallback::Error)
    };
    let plan = plan_openvino(&ckpt, &opts, &mut |_, _, _| {}).unwrap();
    let qkv = plan.entry(Role::AttnQkv { layer: 0 }).unwrap();
    assert_eq!(
        qkv.scheme,
        Scheme::Nncf {
            mode: NncfMode::Int4Asym,
            group_size: None
        }
    );
}
