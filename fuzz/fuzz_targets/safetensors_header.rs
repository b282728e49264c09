//! Any byte string as a safetensors shard: the header checks must return an error or a valid layout, never panic,
//! and an accepted layout must fit the input (every tensor's bytes inside the data section).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header_len, _tensors)) =
        oxport_hf::validate_safetensors(Path::new("fuzz.safetensors"), data)
    {
        assert!(
            8 + header_len <= data.len(),
            "accepted a header longer than the file"
        );
    }
});
