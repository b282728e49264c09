//! One module per subcommand; each has `Args` (clap) and `run(args)`.

pub mod devices;
pub mod export_onnx;
pub mod export_openvino;
pub mod inspect;
pub mod reference;
pub mod validate;
