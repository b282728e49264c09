//! The reference's own tests: RoPE tables, rotation, and the mapped weights against the widened ones.
use std::path::{Path, PathBuf};

use oxport_hf::DType;

use oxport_arch::{Model, Phi3Config, Role};

use crate::Reference;
use crate::model::{read_norms, rotate};
use crate::weights::{Widened, matmul};

#[test]
fn widened_matmul_matches_naive() {
    let (n, i, o) = (3, 13, 5);
    let x: Vec<f32> = (0..n * i).map(|v| (v as f32 * 0.37).sin()).collect();
    let w: Vec<f32> = (0..o * i).map(|v| (v as f32 * 0.11).cos()).collect();
    let y = matmul(&x, n, &w, i);
    for t in 0..n {
        for r in 0..o {
            let e: f32 = (0..i).map(|k| x[t * i + k] * w[r * i + k]).sum();
            assert!((y[t * o + r] - e).abs() < 1e-5);
        }
    }
}

fn longrope_model() -> Reference {
    let json = r#"{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":128,
        "num_attention_heads":4,"num_hidden_layers":1,"vocab_size":100,"max_position_embeddings":256,
        "partial_rotary_factor":0.5,"rope_parameters":{"rope_type":"longrope","rope_theta":500.0,
        "original_max_position_embeddings":64,"short_factor":[1,2,3,4],"long_factor":[5,6,7,8]}}"#;
    let config = Phi3Config::from_json_str(json, std::path::Path::new("config.json")).unwrap();
    Reference {
        config,
        weights: Box::new(Widened::default()),
        layers: vec![],
        final_norm: vec![],
    }
}

#[test]
fn longrope_picks_factors_by_total_length_and_scales_cos_sin() {
    let m = longrope_model();
    let (dim, scale) = (
        m.config.rotary_dim(),
        m.config.longrope_attention_factor() as f32,
    );
    assert_eq!(dim, 8, "partial rotary: head 16 × 0.5");
    assert!(scale > 1.0);
    let expect = |factors: [f32; 4], pos: f32, i: usize| {
        let inv = 1.0 / (factors[i % 4] * 500f32.powf((2 * (i % 4)) as f32 / 8.0));
        ((pos * inv).cos() * scale, (pos * inv).sin() * scale)
    };
    // 3 positions in all: within original_max_position_embeddings, short factors.
    let (cos, sin) = m.rope_tables(0, 3);
    for i in 0..8 {
        let (c, s) = expect([1.0, 2.0, 3.0, 4.0], 2.0, i);
        assert!(
            (cos[16 + i] - c).abs() < 1e-6 && (sin[16 + i] - s).abs() < 1e-6,
            "short, channel {i}"
        );
    }
    // Position 70 of 71: beyond 64, long factors (transformers' dynamic LongRoPE update).
    let (cos, sin) = m.rope_tables(70, 1);
    for i in 0..8 {
        let (c, s) = expect([5.0, 6.0, 7.0, 8.0], 70.0, i);
        assert!(
            (cos[i] - c).abs() < 1e-5 && (sin[i] - s).abs() < 1e-5,
            "long, channel {i}"
        );
    }
}

#[test]
fn rotate_leaves_the_non_rotary_tail_alone() {
    let mut head = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let angle = 0.5f32;
    let (cos, sin) = ([angle.cos(); 4], [angle.sin(); 4]);
    rotate(&mut head, &cos, &sin);
    assert!((head[0] - (1.0 * angle.cos() - 3.0 * angle.sin())).abs() < 1e-6);
    assert!((head[2] - (3.0 * angle.cos() + 1.0 * angle.sin())).abs() < 1e-6);
    assert_eq!(&head[4..], &[5.0, 6.0]);
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(path)
}

/// The reference as it was before the weights stayed mapped: every matmul weight widened to f32 at load.
fn widened(checkpoint: &Model) -> Reference {
    let (layers, final_norm) = read_norms(checkpoint).unwrap();
    Reference {
        config: checkpoint.config().clone(),
        weights: Box::new(Widened::load(checkpoint).unwrap()),
        layers,
        final_norm,
    }
}

/// Logits of a 60-token prefill, then 8 one-token decode steps (past position 64, where tiny-longrope switches
/// to its long factors).
fn run(reference: &Reference) -> Vec<u32> {
    let vocab = reference.vocab_size() as u32;
    let ids: Vec<u32> = (0..68u32)
        .map(|i| 3 + (i * 37 + 11) % (vocab - 8))
        .collect();
    let mut cache = reference.new_cache();
    let mut logits = reference.forward(&ids[..60], &mut cache).unwrap();
    for &id in &ids[60..] {
        logits.extend(reference.forward(&[id], &mut cache).unwrap());
    }
    assert_eq!(cache.len(), ids.len());
    logits.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn mapped_weights_give_bit_identical_logits_to_widened_weights() {
    for path in [
        "tiny",
        "tiny-gqa",
        "tiny-longrope",
        "reference/checkpoints/phi3-tiny-random",
        "reference/checkpoints/phi3-tiny-k320",
        "tiny-odd",
    ] {
        let checkpoint = Model::open(fixture(path)).unwrap();
        let old = run(&widened(&checkpoint));
        let new = run(&Reference::load(&checkpoint).unwrap());
        assert_eq!(old.len(), 68 * checkpoint.config().vocab_size, "{path}");
        let differ = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{path}: {differ} logits differ in their bits");
    }
}

/// `fixture` rewritten into one `model.safetensors` of `dtype` (values through f32; BF16 → F16 rounds, which only
/// makes another model), without `lm_head.weight` and with `tie_word_embeddings` when `tied`.
fn rewrite(fixture_path: &str, dtype: DType, tied: bool) -> tempfile::TempDir {
    let source = Model::open(fixture(fixture_path)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(fixture_path).join("config.json")).unwrap())
            .unwrap();
    config["tie_word_embeddings"] = tied.into();
    std::fs::write(
        tmp.path().join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for info in source.tensors() {
        if tied && info.role == Role::LmHead {
            continue;
        }
        let values = source.view(info.role).unwrap().to_f32().unwrap();
        let start = data.len();
        for v in values {
            match dtype {
                DType::F32 => data.extend(v.to_le_bytes()),
                DType::F16 => data.extend(half::f16::from_f32(v).to_le_bytes()),
                DType::BF16 => data.extend(half::bf16::from_f32(v).to_le_bytes()),
            }
        }
        header.insert(
            info.name.clone(),
            serde_json::json!({"dtype": dtype.name(), "shape": info.shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(data);
    std::fs::write(tmp.path().join("model.safetensors"), file).unwrap();
    tmp
}

#[test]
fn f16_f32_and_tied_checkpoints_give_bit_identical_logits_to_widened_weights() {
    for (dtype, tied) in [
        (DType::F16, false),
        (DType::F32, false),
        (DType::BF16, true),
    ] {
        let tmp = rewrite("tiny-gqa", dtype, tied);
        let checkpoint = Model::open(tmp.path()).unwrap();
        assert_eq!(checkpoint.tensors()[0].dtype, dtype);
        assert_eq!(checkpoint.info(Role::LmHead).is_none(), tied);
        let old = run(&widened(&checkpoint));
        let new = run(&Reference::load(&checkpoint).unwrap());
        let differ = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ, 0,
            "{dtype} tied={tied}: {differ} logits differ in their bits"
        );
    }
}

#[test]
fn no_tokens_give_no_logits_and_leave_the_cache_alone() {
    let checkpoint = Model::open(fixture("tiny")).unwrap();
    let reference = Reference::load(&checkpoint).unwrap();
    let mut cache = reference.new_cache();
    assert!(reference.forward(&[], &mut cache).unwrap().is_empty());
    assert!(cache.is_empty());
}

/// A copy of a fixture checkpoint in a temporary folder, so that its mappings are this test's alone.
fn copy_fixture(path: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(path)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// Resident bytes of every mapping of a file under `dir` (`/proc/self/smaps`).
#[cfg(target_os = "linux")]
fn mapped_rss_bytes(dir: &Path) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let dir = dir.to_string_lossy();
    let mut ours = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header line: `start-end perms offset dev inode [path]`.
            ours = line.contains(dir.as_ref());
        } else if ours && let Some(rest) = line.strip_prefix("Rss:") {
            kib += rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .unwrap();
        }
    }
    kib * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn release_after_use_releases_the_weight_pages_forward_read() {
    let tmp = copy_fixture("reference/checkpoints/phi3-tiny-random");
    let checkpoint = Model::open(tmp.path()).unwrap();
    let weight_bytes = checkpoint.total_bytes();
    let reference = Reference::with_memory_policy(
        Model::open(tmp.path()).unwrap(),
        crate::MemoryPolicy::ReleaseAfterUse,
    )
    .unwrap();
    run(&reference);
    // Every weight was read (8 MiB of embedding and lm_head alone); what stays mapped is the headers and the
    // pages around tensor boundaries, not the tensors.
    let resident = mapped_rss_bytes(tmp.path());
    assert!(
        resident < weight_bytes / 8,
        "{resident} bytes of the checkpoint stay resident after the forward pass ({weight_bytes} bytes of weights)"
    );
}

#[test]
fn a_nan_weight_is_refused_at_load_naming_the_tensor() {
    let tmp = copy_fixture("tiny");
    let (file, offset) = {
        let checkpoint = Model::open(tmp.path()).unwrap();
        let info = checkpoint.info(Role::MlpDown { layer: 1 }).unwrap();
        let file = checkpoint.shard_paths()[info.shard].to_path_buf();
        (file, info.file_offset + 2 * 5)
    };
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[offset..offset + 2].copy_from_slice(&0x7fc0u16.to_le_bytes());
    std::fs::write(&file, bytes).unwrap();
    let checkpoint = Model::open(tmp.path()).unwrap();
    let err = Reference::load(&checkpoint)
        .err()
        .expect("NaN refused")
        .to_string();
    assert!(
        err.contains("model.layers.1.mlp.down_proj.weight"),
        "error names the tensor: {err}"
    );
}

/// Records `(role, tokens, features)` of every linear input and checks that the data has that shape.
#[derive(Default)]
struct Recorder(Vec<(Role, usize, usize)>);

impl crate::LinearObserver for Recorder {
    fn linear_input(&mut self, input: crate::LinearInput<'_>) {
        assert_eq!(input.data.len(), input.tokens * input.features);
        assert!(input.data.iter().all(|v| v.is_finite()));
        assert_eq!(input.row(input.tokens - 1).len(), input.features);
        self.0.push((input.role, input.tokens, input.features));
    }
}

#[test]
fn the_observer_sees_every_linear_of_every_layer_and_changes_nothing() {
    for path in ["tiny-gqa", "tiny-phi4"] {
        let checkpoint = Model::open(fixture(path)).unwrap();
        let reference = Reference::load(&checkpoint).unwrap();
        let c = reference.config().clone();
        let ids: Vec<u32> = (0..7u32).map(|i| 3 + i * 5).collect();
        let plain = reference.forward(&ids, &mut reference.new_cache()).unwrap();
        let mut recorder = Recorder::default();
        let mut cache = reference.new_cache();
        let observed = reference
            .forward_observed(&ids[..6], &mut cache, &mut recorder)
            .unwrap();
        let mut last = reference
            .forward_observed(&ids[6..], &mut cache, &mut recorder)
            .unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&observed), bits(&plain[..6 * c.vocab_size]), "{path}");
        last.truncate(c.vocab_size);
        let diff = max_abs_diff(&last, &plain[6 * c.vocab_size..]);
        assert!(diff < 1e-5, "{path}: decode after observed prefill: {diff}");
        let q_dim = c.num_attention_heads * c.head_dim();
        let mut expected = Vec::new();
        for tokens in [6, 1] {
            for layer in 0..c.num_hidden_layers {
                expected.extend([
                    (Role::AttnQkv { layer }, tokens, c.hidden_size),
                    (Role::AttnOut { layer }, tokens, q_dim),
                    (Role::MlpGateUp { layer }, tokens, c.hidden_size),
                    (Role::MlpDown { layer }, tokens, c.intermediate_size),
                ]);
            }
            expected.push((Role::LmHead, tokens, c.hidden_size));
        }
        assert_eq!(recorder.0, expected, "{path}");
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn one_and_two_threads_give_bit_identical_logits() {
    for path in ["tiny-gqa", "reference/checkpoints/phi3-tiny-random"] {
        let checkpoint = Model::open(fixture(path)).unwrap();
        let reference = Reference::load(&checkpoint).unwrap();
        let in_pool = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| run(&reference))
        };
        let (one, two) = (in_pool(1), in_pool(2));
        assert_eq!(one, two, "{path}");
        assert_eq!(one, run(&reference), "{path}: a second run");
    }
}

/// The SIMD kernels and the portable one give the same logits bit for bit (`crate::gemm`: one summation order).
#[test]
fn portable_and_simd_kernels_give_bit_identical_logits() {
    use crate::gemm::{Isa, active_isa, detected_isa, force_portable_kernels};
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert_ne!(detected_isa(), Isa::Portable, "a SIMD kernel to compare");
    }
    for path in ["tiny-odd", "tiny-gqa"] {
        let checkpoint = Model::open(fixture(path)).unwrap();
        let reference = Reference::load(&checkpoint).unwrap();
        assert_eq!(active_isa(), detected_isa());
        let simd = run(&reference);
        force_portable_kernels(true);
        assert_eq!(active_isa(), Isa::Portable);
        let portable = run(&reference);
        force_portable_kernels(false);
        assert_eq!(simd, portable, "{path} on {:?}", detected_isa());
    }
}

#[test]
fn resident_and_released_weights_give_bit_identical_logits() {
    let dir = fixture("tiny-gqa");
    let open = |policy| Reference::with_memory_policy(Model::open(&dir).unwrap(), policy).unwrap();
    assert_eq!(
        run(&open(crate::MemoryPolicy::Resident)),
        run(&open(crate::MemoryPolicy::ReleaseAfterUse))
    );
    // A few hundred KiB of weights fit in any machine's available memory.
    assert_eq!(
        crate::MemoryPolicy::auto(1 << 20),
        crate::MemoryPolicy::Resident
    );
    assert_eq!(
        crate::MemoryPolicy::auto(usize::MAX),
        crate::MemoryPolicy::ReleaseAfterUse
    );
}

/// Keeps the full input of `MlpDown { layer: 0 }` per forward call.
#[derive(Default)]
struct DownInputs(Vec<Vec<f32>>);

impl crate::LinearObserver for DownInputs {
    fn linear_input(&mut self, input: crate::LinearInput<'_>) {
        if input.role == (Role::MlpDown { layer: 0 }) {
            self.0.push(input.data.to_vec());
        }
    }
}

#[test]
fn calibration_statistics_are_per_sample_token_means_of_independent_prefills() {
    let checkpoint = Model::open(fixture("tiny-phi4")).unwrap();
    let reference = Reference::load(&checkpoint).unwrap();
    let samples: Vec<Vec<u32>> = vec![vec![3, 9, 27, 81], vec![5, 6], vec![3, 9, 27, 81]];
    let mut calls = Vec::new();
    let want = |r: Role| match r {
        Role::MlpDown { .. } => crate::Observe::Means,
        Role::MlpGateUp { .. } => crate::Observe::Scalars,
        _ => crate::Observe::Nothing,
    };
    let stats = crate::collect_activation_stats(&reference, &samples, &want, &mut |d, t| {
        calls.push((d, t))
    })
    .unwrap();
    assert_eq!(calls, vec![(1, 3), (2, 3), (3, 3)]);
    assert_eq!(stats.samples, 3);
    let layers = reference.config().num_hidden_layers;
    assert_eq!(stats.layers.len(), 2 * layers, "only the wanted roles");
    let down = stats.get(Role::MlpDown { layer: 0 }).unwrap();
    assert_eq!(down.tokens, vec![4, 2, 4]);
    // Independent prefills: the same ids give the same statistics; each is the mean of the full forward's input.
    assert_eq!(down.means[0], down.means[2]);
    let mut full = DownInputs::default();
    reference
        .forward_observed(&samples[0], &mut reference.new_cache(), &mut full)
        .unwrap();
    let inter = reference.config().intermediate_size;
    let mut expect = oxport_quant::LayerStats::default();
    expect.push_sample(&full.0[0], 4);
    assert_eq!(down.means[0], expect.means[0]);
    assert_eq!(down.means[0].len(), inter);
    assert_eq!(
        down.scalars[0],
        oxport_quant::SampleScalars::of(&full.0[0], 4)
    );
    let gate_up = stats.get(Role::MlpGateUp { layer: 0 }).unwrap();
    assert!(gate_up.means.is_empty() && gate_up.scalars.len() == 3);
}

/// The softmax's exponential against f64's over its domain: within 3 ulp of the correctly rounded value.
#[test]
fn exp_nonpositive_is_within_a_few_ulp() {
    let mut worst = 0u32;
    for i in 0..2_000_000u32 {
        let x = -87.0 * (i as f32 / 2_000_000.0);
        let got = crate::model::exp_nonpositive(x);
        let want = (x as f64).exp() as f32;
        worst = worst.max(got.to_bits().abs_diff(want.to_bits()));
    }
    assert!(worst <= 3, "{worst} ulp");
    assert_eq!(crate::model::exp_nonpositive(0.0), 1.0);
    assert!(crate::model::exp_nonpositive(f32::NAN).is_nan());
    assert!(crate::model::exp_nonpositive(-1000.0) < 2e-38);
}
