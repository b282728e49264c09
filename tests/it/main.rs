//! The workspace's one integration-test binary (`cargo test -p oxport-tests --test integration`): one module per
//! former test binary, grouped by the crate they test. One binary links the workspace once instead of 25 times;
//! the helpers they share live in `support` (paths, the runtimes' Python, the safetensors writer, the loopback hub).
//! The tests that load ONNX Runtime or OpenVINO are ignored without the `runtimes` feature (`cargo xtask test`
//! turns it on). Test data lives beside its module (`runner/data/`) or in `tests/golden/`.

mod support;

mod arch {
    mod arch_bad_input;
    mod arch_fixtures;
}
mod cli {
    mod export_interrupt;
    mod hf_inspect;
}
mod dataset {
    mod calibration;
}
mod hub {
    mod hf_resolve;
}
mod onnx {
    mod builder_parity;
    mod codegen_fresh;
    mod common;
    mod files;
    mod refusals;
}
mod openvino {
    mod openvino_awq;
    mod openvino_export;
    mod openvino_npu;
    mod openvino_runner;
}
mod ov_tokenizer {
    mod tokenizer_reference;
}
mod quant {
    mod golden;
    mod plan_onnx;
    mod properties;
    mod reference;
    mod se_gptq_golden;
}
mod reference {
    mod transformers;
}
mod runner {
    mod runner_backends;
    mod runner_chat;
    mod runner_devices;
    mod runner_discovery;
    mod runner_validate;
}
