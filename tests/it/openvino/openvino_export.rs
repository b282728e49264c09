//! `oxport_openvino::export` as a library: deterministic bytes, atomic output, NNCF's mixed-precision choices.
//! (Runtime checks — compile, logits, stateful generation — are in tests/python/test_openvino_*.py.)

use std::path::Path;

use crate::support::{copy_reference_checkpoint, folder_bytes, reference_checkpoint};
use oxport_arch::{Model, Role};
use oxport_io::{CancelToken, Silent};
use oxport_openvino::{CompressionOptions, GroupSizeFallback, Scheme, WeightFormat};
use oxport_quant::NncfMode;

fn int4_r06() -> CompressionOptions {
    CompressionOptions {
        sym: true,
        group_size: Some(128),
        ratio: Some(0.6),
        ..CompressionOptions::new(WeightFormat::Int4)
    }
}

fn export(model_dir: &Path, opts: &CompressionOptions, out: &Path) -> oxport_openvino::Result<()> {
    let ckpt = Model::open(model_dir).unwrap();
    let plan = oxport_openvino::plan(&ckpt, opts)?;
    oxport_openvino::export(&ckpt, &plan, out, "model", &Silent, &CancelToken::new()).map(|_| ())
}

#[test]
fn reruns_are_byte_identical_at_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, opts) in [
        ("fp32", CompressionOptions::new(WeightFormat::Fp32)),
        ("fp16", CompressionOptions::new(WeightFormat::Fp16)),
        ("int8", CompressionOptions::new(WeightFormat::Int8)),
        ("int4", int4_r06()),
    ] {
        let (a, b) = (
            tmp.path().join(format!("{name}-a")),
            tmp.path().join(format!("{name}-b")),
        );
        export(&reference_checkpoint("phi3-tiny-gqa"), &opts, &a).unwrap();
        export(&reference_checkpoint("phi3-tiny-gqa"), &opts, &b).unwrap();
        let (fa, fb) = (folder_bytes(&a), folder_bytes(&b));
        assert!(
            fa.iter().any(|(n, _)| n == "openvino_model.xml")
                && fa.iter().any(|(n, _)| n == "openvino_model.bin")
        );
        assert_eq!(fa, fb, "{name}: two exports differ");
    }
}

#[test]
fn bin_has_the_size_of_optimum_clis() {
    // optimum-cli's openvino_model.bin sizes (docs/openvino-ir.md §1): the same weights, scales, zero points
    // and small constants, tightly packed with identical small constants stored once, give the same byte count.
    // fp16 is 64 bytes larger by design: inv_freq [1,32,1] stays f32 (optimum rounds it to f16).
    let tmp = tempfile::tempdir().unwrap();
    let int8 = CompressionOptions::new(WeightFormat::Int8);
    let fp16 = CompressionOptions::new(WeightFormat::Fp16);
    for (model, opts, bytes) in [
        ("phi3-tiny-random", &int4_r06(), 5_314_169u64),
        ("phi3-tiny-random", &int8, 5_573_465),
        ("phi3-tiny-random", &fp16, 11_012_883 + 64),
        ("phi3-tiny-gqa", &int4_r06(), 5_148_353),
        ("phi3-tiny-gqa", &int8, 5_440_929),
        ("phi3-tiny-gqa", &fp16, 10_750_811 + 64),
    ] {
        let out = tmp
            .path()
            .join(format!("{model}-{}", opts.weight_format.name()));
        export(&reference_checkpoint(model), opts, &out).unwrap();
        let got = std::fs::metadata(out.join("openvino_model.bin"))
            .unwrap()
            .len();
        assert_eq!(got, bytes, "{model} {}", opts.weight_format.name());
    }
}

#[test]
fn failed_export_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    // A checkpoint whose last-written weight (lm_head) holds a NaN: the export
    // fails after the earlier weights were streamed to the temporary folder.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let src = reference_checkpoint("phi3-tiny-random");
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), bad.join(f)).unwrap();
    }
    let mut st = std::fs::read(src.join("model.safetensors")).unwrap();
    let ckpt = Model::open(&src).unwrap();
    let start = ckpt.info(Role::LmHead).unwrap().file_offset;
    st[start..start + 2].copy_from_slice(&[0xc0, 0x7f]); // bf16 NaN
    std::fs::write(bad.join("model.safetensors"), &st).unwrap();

    let outs = tmp.path().join("outs");
    std::fs::create_dir(&outs).unwrap();
    let out = outs.join("ov");
    let err = export(&bad, &CompressionOptions::new(WeightFormat::Fp16), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lm_head"), "{err}");
    assert!(
        std::fs::read_dir(&outs).unwrap().next().is_none(),
        "the failed export left files in {}",
        outs.display()
    );

    // NNCF's InvalidGroupSizeError (K=320, group 128, no fallback) also leaves nothing.
    let err = export(&reference_checkpoint("phi3-tiny-k320"), &int4_r06(), &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group size 128") && err.contains("model.layers.0.self_attn.qkv_proj.weight"),
        "{err}"
    );
    assert!(std::fs::read_dir(&outs).unwrap().next().is_none());
}

fn int4_roles(model: &str, opts: &CompressionOptions) -> Vec<(Role, Scheme)> {
    let ckpt = Model::open(reference_checkpoint(model)).unwrap();
    let plan = oxport_openvino::plan(&ckpt, opts).unwrap();
    plan.weights()
        .filter(|e| matches!(e.scheme, Scheme::Nncf { group_size: Some(_), .. } if e.scheme.is_nncf_four_bit()))
        .map(|e| (e.role, e.scheme))
        .collect()
}

#[test]
fn ratio_picks_the_layers_nncf_picks() {
    // docs/openvino-ir.md §6, confirmed on optimum-cli's exports.
    let group = |g| Scheme::Nncf {
        mode: NncfMode::Int4Sym,
        group_size: Some(g),
    };
    let (g128, g64) = (group(128), group(64));
    assert_eq!(
        int4_roles("phi3-tiny-random", &int4_r06()),
        vec![
            (Role::AttnQkv { layer: 0 }, g128),
            (Role::MlpDown { layer: 0 }, g128),
            (Role::AttnQkv { layer: 1 }, g128)
        ]
    );
    assert_eq!(
        int4_roles("phi3-tiny-gqa", &int4_r06()),
        vec![
            (Role::AttnOut { layer: 0 }, g128),
            (Role::MlpGateUp { layer: 0 }, g128),
            (Role::MlpGateUp { layer: 1 }, g128)
        ]
    );
    let adjust = CompressionOptions {
        group_size_fallback: GroupSizeFallback::Adjust,
        ..int4_r06()
    };
    assert_eq!(
        int4_roles("phi3-tiny-k320", &adjust),
        vec![
            (Role::AttnQkv { layer: 0 }, g64),
            (Role::AttnOut { layer: 0 }, g64),
            (Role::MlpDown { layer: 0 }, g128),
            (Role::AttnOut { layer: 1 }, g64),
            (Role::MlpGateUp { layer: 1 }, g64),
        ]
    );
    let ignore = CompressionOptions {
        group_size_fallback: GroupSizeFallback::Ignore,
        ..int4_r06()
    };
    assert_eq!(
        int4_roles("phi3-tiny-k320", &ignore),
        vec![(Role::MlpDown { layer: 0 }, g128)]
    );
    let ckpt = Model::open(reference_checkpoint("phi3-tiny-k320")).unwrap();
    let plan = oxport_openvino::plan(&ckpt, &ignore).unwrap();
    assert_eq!(plan.scheme(Role::AttnQkv { layer: 0 }), Some(Scheme::Keep));
    let int8_asym = Scheme::Nncf {
        mode: NncfMode::Int8Asym,
        group_size: None,
    };
    assert_eq!(plan.scheme(Role::MlpDown { layer: 1 }), Some(int8_asym));
    assert_eq!(plan.scheme(Role::LmHead), Some(int8_asym));
}

#[test]
fn ratio_one_and_all_layers() {
    let all = CompressionOptions {
        ratio: Some(1.0),
        ..int4_r06()
    };
    let roles = int4_roles("phi3-tiny-random", &all);
    assert_eq!(
        roles.len(),
        8,
        "every decoder MatMul at int4, embedding and lm_head at the backup"
    );
    let every = CompressionOptions {
        ratio: Some(1.0),
        all_layers: true,
        ..int4_r06()
    };
    assert_eq!(int4_roles("phi3-tiny-random", &every).len(), 10);
}

#[test]
fn options_that_do_not_apply_are_refused() {
    let ckpt = Model::open(reference_checkpoint("phi3-tiny-random")).unwrap();
    let e = oxport_openvino::plan(
        &ckpt,
        &CompressionOptions {
            ratio: Some(0.5),
            ..CompressionOptions::new(WeightFormat::Fp16)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--ratio"), "{e}");
    let e = oxport_openvino::plan(
        &ckpt,
        &CompressionOptions {
            group_size: Some(3),
            ..int4_r06()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--group-size 3"), "{e}");
    // -1 is per-channel int4, as in optimum-cli.
    let plan = oxport_openvino::plan(
        &ckpt,
        &CompressionOptions {
            group_size: Some(-1),
            ..int4_r06()
        },
    )
    .unwrap();
    assert_eq!(
        plan.scheme(Role::AttnQkv { layer: 0 }),
        Some(Scheme::Nncf {
            mode: NncfMode::Int4Sym,
            group_size: None
        })
    );
    assert_eq!(plan.nncf.as_ref().unwrap().group_size, -1);
}

#[test]
fn existing_output_folder_receives_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ov");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"user file").unwrap();
    std::fs::write(out.join("openvino_model.xml"), b"stale").unwrap();
    export(
        &reference_checkpoint("phi3-tiny-random"),
        &CompressionOptions::new(WeightFormat::Int8),
        &out,
    )
    .unwrap();
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"user file");
    assert!(out.join("openvino_config.json").is_file());
    // Re-exported as fp16: the int8 export's openvino_config.json must not survive.
    export(
        &reference_checkpoint("phi3-tiny-random"),
        &CompressionOptions::new(WeightFormat::Fp16),
        &out,
    )
    .unwrap();
    assert!(!out.join("openvino_config.json").exists());
    assert!(
        std::fs::read_to_string(out.join("openvino_model.xml"))
            .unwrap()
            .starts_with("<?xml")
    );
    // No temporary folder is left beside it.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ov")]);
}

#[test]
fn invalid_chat_templates_and_tokenizer_json_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "tokenizer_config.json",
            "template",
            &[
                "tokenizer_config.json",
                "`chat_template`",
                "not a valid Jinja template",
            ],
        ),
        (
            "chat_template.jinja",
            "{% if messages %}{{ messages[0]['content'] }}",
            &["chat_template.jinja", "not a valid Jinja template"],
        ),
        (
            "tokenizer.json",
            "{\"model\": [",
            &["tokenizer.json", "not valid JSON"],
        ),
    ];
    for (file, text, names) in cases {
        let ckpt = tmp.path().join(format!("ckpt-{file}"));
        copy_reference_checkpoint("phi3-tiny-gqa", &ckpt);
        if file == "tokenizer_config.json" {
            let p = ckpt.join(file);
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            v["chat_template"] = "{% for m in messages %}{{ m['content'] }".into();
            std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        } else {
            std::fs::write(ckpt.join(file), text).unwrap();
        }
        let parent = tmp.path().join(format!("exports-{file}"));
        let c = Model::open(&ckpt).unwrap();
        let plan = oxport_openvino::plan(&c, &CompressionOptions::new(WeightFormat::Fp16)).unwrap();
        // Without the tokenizer IR too: the files are still copied into the export.
        let e = oxport_openvino::export(
            &c,
            &plan,
            &parent.join("out"),
            "model",
            &Silent,
            &CancelToken::new(),
        )
        .unwrap_err()
        .to_string();
        for n in names {
            assert!(e.contains(n), "{file}: {e} should name {n}");
        }
        assert!(!parent.exists(), "{file}: something was written");
    }
}
