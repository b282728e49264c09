//! oxport-quant
