//! oxport-runner
