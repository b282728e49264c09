//! One module per subcommand; each has `Args` (clap) and `run(args)`.

pub(crate) mod devices;
pub(crate) mod export_onnx;
pub(crate) mod export_openvino;
pub(crate) mod inspect;
pub(crate) mod reference;
pub(crate) mod validate;
