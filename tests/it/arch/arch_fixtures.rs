//! The committed fixtures are the checkpoints the brief describes, and load through the public API.

use oxport_arch::{Model, Role};
use oxport_hf::DType;

use crate::support::fixture;

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn dims_of_each_fixture() {
    // (name, hidden, heads, kv heads, intermediate, qkv rows, max positions, original)
    let cases = [
        ("tiny", 256, 4, 4, 512, 768, 4096, 4096),
        ("tiny-gqa", 256, 4, 2, 512, 512, 4096, 4096),
        ("tiny-longrope", 256, 4, 4, 512, 768, 256, 64),
        ("tiny-odd", 320, 5, 5, 384, 960, 4096, 4096),
    ];
    for (name, hidden, heads, kv, inter, qkv_rows, max_pos, orig) in cases {
        let c = Model::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cfg = c.config();
        assert_eq!(
            (
                cfg.hidden_size,
                cfg.num_attention_heads,
                cfg.num_key_value_heads,
                cfg.intermediate_size
            ),
            (hidden, heads, kv, inter),
            "{name}"
        );
        assert_eq!(
            (cfg.num_hidden_layers, cfg.vocab_size, cfg.qkv_rows()),
            (2, 1024, qkv_rows),
            "{name}"
        );
        assert_eq!(
            (
                cfg.max_position_embeddings,
                cfg.original_max_position_embeddings
            ),
            (max_pos, orig),
            "{name}"
        );
        assert_eq!(
            cfg.eos_token_ids,
            vec![1019],
            "{name}: <|endoftext|> is the first of the top five ids"
        );
        assert_eq!(c.shard_paths().len(), 2, "{name}");
        assert!(c.tensors().iter().all(|t| t.dtype == DType::BF16), "{name}");
        assert_eq!(
            cfg.rope_scaling.is_some(),
            name == "tiny-longrope",
            "{name}"
        );
    }
}

#[test]
fn longrope_fixture_has_one_factor_per_rotary_frequency() {
    let c = Model::open(fixture("tiny-longrope")).unwrap();
    let r = c.config().rope_scaling.as_ref().unwrap();
    assert_eq!(r.kind, "longrope");
    assert_eq!((r.short_factor.len(), r.long_factor.len()), (32, 32));
    assert!(
        r.long_factor
            .iter()
            .zip(&r.short_factor)
            .all(|(l, s)| l >= s)
    );
    assert!(c.config().longrope_attention_factor() > 1.0);
}

#[test]
fn weights_follow_the_documented_distributions() {
    let c = Model::open(fixture("tiny-odd")).unwrap();
    // K = 320 is not a multiple of 128: the point of this fixture.
    assert_eq!(
        c.info(Role::AttnQkv { layer: 0 }).unwrap().shape,
        vec![960, 320]
    );
    assert_eq!(
        c.info(Role::MlpDown { layer: 1 }).unwrap().shape,
        vec![320, 384]
    );
    let (m, s) = mean_std(&c.read_f32(Role::MlpGateUp { layer: 1 }).unwrap());
    assert!(
        m.abs() < 1e-3 && (s - 0.02).abs() < 1e-3,
        "linear weights N(0, 0.02): mean {m}, std {s}"
    );
    let (m, s) = mean_std(&c.read_f32(Role::InputNorm { layer: 0 }).unwrap());
    assert!(
        (m - 1.0).abs() < 0.02 && (s - 0.1).abs() < 0.02,
        "gammas 1 + 0.1 N(0,1): mean {m}, std {s}"
    );
    // Distinct seeds per fixture and per tensor.
    let a = c.read_f32(Role::AttnOut { layer: 0 }).unwrap();
    let b = c.read_f32(Role::AttnOut { layer: 1 }).unwrap();
    assert_ne!(a[..64], b[..64]);
}
