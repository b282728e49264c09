//! oxport-openvino
