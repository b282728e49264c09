//! Any byte string as `config.json`: parsing returns a config or an error naming the file, never panics, and an
//! accepted config's derived sizes are consistent (no division by zero, heads divide evenly).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use oxport_arch::{Phi3Config, Role};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Phi3Config::from_json_str(text, Path::new("config.json")) {
        Ok(c) => {
            assert!(c.num_attention_heads > 0 && c.num_key_value_heads > 0);
            assert_eq!(c.hidden_size % c.num_attention_heads, 0);
            assert_eq!(c.num_attention_heads % c.num_key_value_heads, 0);
            let _ = (
                c.head_dim(),
                c.rotary_dim(),
                c.qkv_rows(),
                c.longrope_attention_factor(),
            );
            // Shapes for the first layers only: a fuzzed layer count can be huge.
            for role in Role::all_for(&Phi3Config {
                num_hidden_layers: c.num_hidden_layers.min(2),
                ..c.clone()
            }) {
                let _ = role.expected_shape(&c);
                assert_eq!(Role::from_name(&role.name()), Some(role));
            }
        }
        Err(e) => assert!(e.to_string().contains("config.json")),
    }
});
