use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn parse(extra: &[&str]) -> Args {
    let mut argv = vec!["oxport", "--model", "M", "OUT"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv)
        .expect("optimum-cli flags parse")
        .args
}

#[test]
fn the_seed_command_parses_verbatim() {
    let a = parse(&[
        "--task",
        "text-generation-with-past",
        "--weight-format",
        "int4",
        "--group-size",
        "128",
        "--ratio",
        "0.6",
        "--sym",
        "--trust-remote-code",
    ]);
    let o = a.options(3_800_000_000).unwrap();
    assert_eq!(o.weight_format, WeightFormat::Int4);
    assert_eq!((o.group_size, o.ratio, o.sym), (Some(128), Some(0.6), true));
    let o = parse(&[
        "--weight-format",
        "int4",
        "--group-size",
        "-1",
        "--backup-precision",
        "none",
    ])
    .options(0)
    .unwrap();
    assert_eq!(
        (o.group_size, o.backup),
        (Some(-1), Some(BackupPrecision::None))
    );
    let o = parse(&[
        "--group-size-fallback",
        "adjust",
        "--all-layers",
        "--weight-format",
        "int4",
    ])
    .options(0)
    .unwrap();
    assert_eq!(
        (o.group_size_fallback, o.all_layers),
        (GroupSizeFallback::Adjust, true)
    );
}

#[test]
fn default_weight_format_follows_optimum_cli() {
    assert_eq!(
        parse(&[]).options(100).unwrap().weight_format,
        WeightFormat::Fp32
    );
    assert_eq!(
        parse(&[]).options(3_800_000_000).unwrap().weight_format,
        WeightFormat::Int8
    );
}

#[test]
fn npu_alone_is_the_documented_recipe_and_its_command_lines_are_accepted() {
    // --npu alone: int4_sym, group 128 (default), ratio 1.0 (default), at any model size.
    for params in [100, 3_800_000_000] {
        let o = parse(&["--npu"]).options(params).unwrap();
        assert_eq!(o, oxport_openvino::npu::recipe());
        assert_eq!(
            (o.weight_format, o.sym, o.group_size, o.ratio, o.backup),
            (WeightFormat::Int4, true, None, None, None)
        );
    }
    // OpenVINO GenAI's command lines, verbatim, with --npu: group-wise 128 and channel-wise -1.
    for group in ["128", "-1"] {
        let o = parse(&[
            "--npu",
            "--weight-format",
            "int4",
            "--sym",
            "--ratio",
            "1.0",
            "--group-size",
            group,
            "--task",
            "text-generation-with-past",
        ])
        .options(3_800_000_000)
        .unwrap();
        assert_eq!(
            (o.sym, o.group_size, o.ratio),
            (true, Some(group.parse().unwrap()), Some(1.0))
        );
    }
    // Partial flags are filled in from the recipe; the explicit default backup is accepted.
    let o = parse(&[
        "--npu",
        "--group-size",
        "-1",
        "--backup-precision",
        "int8_asym",
    ])
    .options(0)
    .unwrap();
    assert_eq!(
        (o.weight_format, o.sym, o.group_size),
        (WeightFormat::Int4, true, Some(-1))
    );
}

#[test]
fn npu_refuses_what_the_npu_cannot_take_naming_the_flag() {
    for (flags, names) in [
        // optimum-cli's meaning of int4 without --sym: int4_asym.
        (
            &["--weight-format", "int4"][..],
            &["--sym", "asymmetric"][..],
        ),
        (
            &["--weight-format", "int4", "--group-size", "-1"],
            &["--sym", "int4_asym"],
        ),
        (
            &["--weight-format", "int8", "--sym"],
            &["--weight-format int8"],
        ),
        (&["--weight-format", "fp16"], &["--weight-format fp16"]),
        (&["--ratio", "0.6"], &["--ratio 0.6", "1.0"]),
        (
            &["--weight-format", "int4", "--sym", "--ratio", "0.8"],
            &["--ratio 0.8"],
        ),
        (&["--group-size", "64"], &["--group-size 64", "128", "-1"]),
        (&["--group-size", "32", "--sym"], &["--group-size 32"]),
        (
            &["--backup-precision", "none"],
            &["--backup-precision none"],
        ),
        (
            &["--backup-precision", "int8_sym"],
            &["--backup-precision int8_sym"],
        ),
        (&["--all-layers"], &["--all-layers"]),
        (
            &["--group-size-fallback", "adjust"],
            &["--group-size-fallback"],
        ),
    ] {
        let mut argv = vec!["--npu"];
        argv.extend_from_slice(flags);
        let err = parse(&argv).options(0).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid export options: --npu: "),
            "{flags:?}: {err}"
        );
        for n in names {
            assert!(err.contains(n), "{flags:?}: {err} should name {n}");
        }
    }
    // Without --npu the same flags keep working as in optimum-cli.
    parse(&["--weight-format", "int4", "--ratio", "0.6"])
        .options(0)
        .unwrap();
}

#[test]
fn unimplemented_flags_parse_and_then_fail_naming_the_flag() {
    for flags in [
        &["--gptq"][..],
        &["--lora-correction"],
        &["--quant-mode", "int8"],
        &["--quantization-statistics-path", "s"],
        &["--smooth-quant-alpha", "0.5"],
        &["--disable-stateful"],
        &["--pad-token-id", "0"],
        &["--cache_dir", "c"],
        &["--variant", "v"],
        &["--model-kwargs", "{}"],
    ] {
        let err = parse(flags).options(0).unwrap_err().to_string();
        assert!(
            err.contains(flags[0]) && err.contains("does not implement"),
            "{flags:?}: {err}"
        );
    }
    let err = parse(&["--weight-format", "mxfp4"])
        .options(0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mxfp4"), "{err}");
    let err = parse(&["--backup-precision", "fp16"])
        .options(0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--backup-precision fp16"), "{err}");
}
