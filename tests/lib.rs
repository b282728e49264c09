//! Integration tests for oxport live in `tests/tests/*.rs`; helpers shared by them live here.
