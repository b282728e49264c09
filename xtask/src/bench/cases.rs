//! The export cases of `cargo xtask bench`: oxport's command line for each and the peer command that does the
//! same (optimum-cli, the onnxruntime-genai builder, or optimum-cli + NNCF on a calibration text).

use std::path::Path;
use std::process::Command;

use crate::test::repo_root;

/// One export case: oxport's command line and the equivalent peer command, if any.
pub(super) struct Case {
    pub(super) name: &'static str,
    oxport: Oxport,
    pub(super) peer: Option<Peer>,
}

#[derive(Clone, Copy)]
enum Oxport {
    /// The arguments as given.
    Args(&'static [&'static str]),
    /// `export openvino` with the optimum-cli peer's flags verbatim (oxport accepts optimum-cli's command line).
    OptimumFlags,
}

impl Case {
    /// oxport's arguments before `--model MODEL OUT`.
    pub(super) fn oxport_args(&self) -> Vec<&'static str> {
        match (self.oxport, self.peer) {
            (Oxport::Args(args), _) => args.to_vec(),
            (Oxport::OptimumFlags, Some(Peer::OptimumCli(flags))) => {
                [&["export", "openvino"][..], flags].concat()
            }
            (Oxport::OptimumFlags, _) => {
                unreachable!("{}: OptimumFlags needs an optimum-cli peer", self.name)
            }
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Peer {
    OptimumCli(&'static [&'static str]),
    GenaiBuilder(&'static [&'static str]),
    /// `xtask/scripts/nncf_data_aware.py MODEL OUT --text CALIBRATION_TEXT` plus these flags.
    NncfDataAware(&'static [&'static str]),
}

/// The calibration text of the data-aware cases (relative to the repository root, where cases run).
pub(super) const CALIBRATION_TEXT: &str = "fixtures/calib_text.txt";

pub(super) const CASES: &[Case] = &[
    Case {
        name: "ov-int4-sym-g128-r0.6",
        oxport: Oxport::OptimumFlags,
        peer: Some(Peer::OptimumCli(&[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "int4",
            "--group-size",
            "128",
            "--ratio",
            "0.6",
            "--sym",
        ])),
    },
    // optimum-intel's default int4 recipe for Phi-3.5-mini and Phi-4-mini: data-free AWQ (NNCF), asym, group 64.
    Case {
        name: "ov-int4-asym-g64-awq",
        oxport: Oxport::OptimumFlags,
        peer: Some(Peer::OptimumCli(&[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "int4",
            "--group-size",
            "64",
            "--ratio",
            "1.0",
            "--awq",
        ])),
    },
    // Data-aware AWQ on a local calibration text; the peer is optimum-cli's fp32 export + NNCF on the same windows
    // (`xtask/scripts/nncf_data_aware.py`: optimum-cli itself takes only hub datasets).
    Case {
        name: "ov-int4-asym-g64-awq-data",
        oxport: Oxport::Args(&[
            "export",
            "openvino",
            "--weight-format",
            "int4",
            "--group-size",
            "64",
            "--ratio",
            "1.0",
            "--awq",
            "--dataset",
            CALIBRATION_TEXT,
            "--num-samples",
            "128",
        ]),
        peer: Some(Peer::NncfDataAware(&["--group-size", "64"])),
    },
    // optimum-cli's default for Phi-3-mini-4k, on the local calibration text: scale estimation.
    Case {
        name: "ov-int4-asym-g64-se-data",
        oxport: Oxport::Args(&[
            "export",
            "openvino",
            "--weight-format",
            "int4",
            "--group-size",
            "64",
            "--ratio",
            "1.0",
            "--scale-estimation",
            "--dataset",
            CALIBRATION_TEXT,
            "--num-samples",
            "128",
        ]),
        peer: Some(Peer::NncfDataAware(&[
            "--group-size",
            "64",
            "--no-awq",
            "--scale-estimation",
        ])),
    },
    Case {
        name: "ov-fp16",
        oxport: Oxport::OptimumFlags,
        peer: Some(Peer::OptimumCli(&[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "fp16",
        ])),
    },
    Case {
        name: "ov-int8",
        oxport: Oxport::OptimumFlags,
        peer: Some(Peer::OptimumCli(&[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "int8",
        ])),
    },
    Case {
        name: "onnx-int4-b32",
        oxport: Oxport::Args(&[
            "export",
            "onnx",
            "--precision",
            "int4",
            "--execution-provider",
            "cpu",
            "--block-size",
            "32",
        ]),
        peer: Some(Peer::GenaiBuilder(&["-p", "int4", "-e", "cpu"])),
    },
    Case {
        name: "onnx-int4-b128",
        oxport: Oxport::Args(&[
            "export",
            "onnx",
            "--precision",
            "int4",
            "--execution-provider",
            "cpu",
            "--block-size",
            "128",
        ]),
        peer: Some(Peer::GenaiBuilder(&[
            "-p",
            "int4",
            "-e",
            "cpu",
            "--extra_options",
            "int4_block_size=128",
        ])),
    },
    Case {
        // The builder accepts fp16 only for GPU EPs; both sides write the CUDA variant (same graph, fp16 I/O).
        name: "onnx-fp16",
        oxport: Oxport::Args(&[
            "export",
            "onnx",
            "--precision",
            "fp16",
            "--execution-provider",
            "cuda",
        ]),
        peer: Some(Peer::GenaiBuilder(&["-p", "fp16", "-e", "cuda"])),
    },
    Case {
        name: "onnx-fp32",
        oxport: Oxport::Args(&[
            "export",
            "onnx",
            "--precision",
            "fp32",
            "--execution-provider",
            "cpu",
        ]),
        peer: Some(Peer::GenaiBuilder(&["-p", "fp32", "-e", "cpu"])),
    },
];

/// The peer's program and command line for one case, writing into `out` (`work` holds the builder's cache).
pub(super) fn peer_command(
    python: &Path,
    peer: Peer,
    model: &Path,
    out: &Path,
    work: &Path,
) -> (&'static str, Command) {
    let bin = python.parent().expect("venv bin");
    match peer {
        Peer::OptimumCli(args) => {
            let mut c = Command::new(bin.join("optimum-cli"));
            c.args(["export", "openvino", "--model"])
                .arg(model)
                .args(args)
                .arg(out);
            c.env("HF_HUB_OFFLINE", "1");
            ("optimum-cli", c)
        }
        Peer::GenaiBuilder(args) => {
            let mut c = Command::new(python);
            c.args(["-m", "onnxruntime_genai.models.builder", "-i"])
                .arg(model)
                .arg("-o")
                .arg(out)
                .arg("-c")
                .arg(work.join("genai-cache"))
                .args(args);
            c.env("HF_HUB_OFFLINE", "1");
            ("genai-builder", c)
        }
        Peer::NncfDataAware(args) => {
            let root = repo_root();
            let mut c = Command::new(python);
            c.arg(root.join("xtask/scripts/nncf_data_aware.py"))
                .arg(model)
                .arg(out)
                .arg("--text")
                .arg(root.join(CALIBRATION_TEXT))
                .args(args);
            c.env("HF_HUB_OFFLINE", "1");
            ("optimum-cli+nncf", c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openvino_cases_run_oxport_with_optimum_clis_flags() {
        let case = CASES
            .iter()
            .find(|c| c.name == "ov-int4-sym-g128-r0.6")
            .unwrap();
        assert_eq!(
            case.oxport_args(),
            [
                "export",
                "openvino",
                "--task",
                "text-generation-with-past",
                "--weight-format",
                "int4",
                "--group-size",
                "128",
                "--ratio",
                "0.6",
                "--sym",
            ]
        );
        for c in CASES {
            assert!(!c.oxport_args().is_empty(), "{}", c.name);
        }
    }
}
