//! Expected windows are the peers' own: transformers 5.5.4's `AutoTokenizer` (the peers' venv,
//! `xtask/src/bench/mod.rs` `PEER_REQUIREMENTS`) on the same text, Python 3.11's `random.seed(0)` and optimum-intel's
//! `get_wikitext2` loop (`random.randint(0, len - seq_len - 1)`, `ids[:, i:i + seq_len]`), printed and pasted here.

use super::*;
use oxport_io::Silent;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Local sources never touch the hub: an offline, empty cache proves it.
fn offline(dir: &Path) -> ResolveOptions {
    ResolveOptions {
        cache_dir: dir.join("hub"),
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        offline: true,
    }
}

fn spec(source: CalibrationSource, num_samples: usize, seq_len: usize) -> CalibrationSpec {
    CalibrationSpec {
        source,
        num_samples: Some(num_samples),
        seq_len: Some(seq_len),
    }
}

fn samples(spec: &CalibrationSpec, tokenizer_dir: &str) -> Result<CalibrationSet> {
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = repo_file(tokenizer_dir).join("tokenizer.json");
    calibration_samples(spec, &tokenizer, &offline(tmp.path()), &Silent)
}

#[test]
fn parses_wikitext2_and_optimums_seq_len_option() {
    let parsed = |s: &str| CalibrationSpec::parse(s).unwrap();
    assert_eq!(parsed("wikitext2").source, CalibrationSource::Wikitext2);
    assert_eq!(parsed("wikitext2").seq_len, None);
    assert_eq!(parsed("wikitext2").num_samples, None);
    assert_eq!(parsed("wikitext2:seq_len=128").seq_len, Some(128));
    // optimum strips each `key=value` and skips empty options.
    assert_eq!(parsed("wikitext2: seq_len = 64 ,").seq_len, Some(64));
    assert_eq!(parsed("wikitext2:").seq_len, None);
}

#[test]
fn refuses_unknown_and_unsupported_datasets_by_name() {
    let message = |s: &str| CalibrationSpec::parse(s).unwrap_err().to_string();
    for peer in ["c4", "c4-new", "gsm8k", "auto", "gsm8k:seq_len=3"] {
        let e = message(peer);
        assert!(e.contains("not supported by oxport"), "{e}");
        assert!(e.contains(peer.split(':').next().unwrap()), "{e}");
    }
    let e = message("wikitext3");
    assert!(
        e.contains("\"wikitext3\"") && e.contains("no such file"),
        "{e}"
    );
    assert!(
        e.contains("`wikitext2:seq_len=N`") && e.contains(".txt or .jsonl"),
        "{e}"
    );
    assert!(e.contains("c4, c4-new, gsm8k and auto"), "{e}");
    assert!(message("wikitext2:foo=1").contains("only `seq_len`"));
    assert!(message("wikitext2:seq_len").contains("malformed option"));
    assert!(message("wikitext2:seq_len=abc").contains("not a positive integer"));
    assert!(message("wikitext2:seq_len=0").contains("not a positive integer"));
}

#[test]
fn parses_local_files_by_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let txt = tmp.path().join("a:b.txt");
    let jsonl = tmp.path().join("rows.jsonl");
    let csv = tmp.path().join("rows.csv");
    for p in [&txt, &jsonl, &csv] {
        std::fs::write(p, "x").unwrap();
    }
    let parsed =
        |p: &Path, suffix: &str| CalibrationSpec::parse(&format!("{}{suffix}", p.display()));
    let s = parsed(&txt, "").unwrap();
    assert_eq!(s.source, CalibrationSource::TextFile(txt.clone()));
    let s = parsed(&jsonl, ":seq_len=8").unwrap();
    assert_eq!(s.source, CalibrationSource::JsonlFile(jsonl.clone()));
    assert_eq!(s.seq_len, Some(8));
    let s = parsed(&txt, ":seq_len=8").unwrap();
    assert_eq!(s.source, CalibrationSource::TextFile(txt.clone()));
    let e = parsed(&csv, "").unwrap_err().to_string();
    assert!(
        e.contains("rows.csv") && e.contains(".txt") && e.contains(".jsonl"),
        "{e}"
    );
}

#[test]
fn joins_rows_as_optimum_does() {
    let rows: Vec<String> = ["", " = A = \n", "", "", " b c \n"]
        .map(String::from)
        .to_vec();
    assert_eq!(join_rows(&rows), " \n = A = \n \n \n b c \n");
    assert_eq!(join_rows(&[]), "");
}

/// `fixtures/eval_text.txt` (GPL text, 107858 bytes, a wikitext-sized input) through `fixtures/tiny`'s byte-level BPE.
#[test]
fn text_file_windows_match_python() {
    let source = CalibrationSource::TextFile(repo_file("fixtures/eval_text.txt"));
    let set = samples(&spec(source.clone(), 8, 16), "fixtures/tiny").unwrap();
    let expected: [[u32; 16]; 8] = [
        [
            74, 91, 85, 883, 261, 297, 298, 706, 703, 72, 268, 84, 283, 261, 272, 569,
        ],
        [
            318, 341, 358, 201, 280, 73, 501, 268, 283, 332, 376, 68, 87, 691, 283, 862,
        ],
        [
            771, 336, 16, 201, 201, 223, 383, 391, 37, 273, 426, 82, 740, 283, 365, 547,
        ],
        [
            286, 340, 267, 338, 333, 686, 16, 201, 201, 810, 627, 642, 14, 285, 437, 261,
        ],
        [
            517, 355, 261, 201, 299, 223, 272, 569, 91, 949, 405, 720, 342, 304, 988, 736,
        ],
        [
            361, 38, 56, 43, 53, 39, 38, 526, 40, 322, 42, 39, 338, 49, 53, 53,
        ],
        [
            871, 16, 923, 670, 272, 569, 91, 303, 290, 410, 450, 71, 267, 459, 75, 791,
        ],
        [
            47, 391, 35, 53, 335, 53, 4, 418, 43, 54, 42, 49, 55, 54, 418, 35,
        ],
    ];
    assert_eq!(set.samples, expected);
    assert!(
        set.description
            .ends_with("eval_text.txt: 8 windows of 16 tokens from 107858 bytes (44204 tokens)"),
        "{}",
        set.description
    );

    // optimum's defaults: 128 windows of 32.
    let set = samples(
        &CalibrationSpec {
            source,
            num_samples: None,
            seq_len: None,
        },
        "fixtures/tiny",
    )
    .unwrap();
    assert_eq!(set.samples.len(), 128);
    assert!(set.samples.iter().all(|w| w.len() == 32));
    let first: [u32; 32] = [
        74, 91, 85, 883, 261, 297, 298, 706, 703, 72, 268, 84, 283, 261, 272, 569, 91, 14, 201,
        387, 331, 670, 441, 498, 748, 998, 268, 274, 295, 84, 471, 91,
    ];
    let second: [u32; 32] = [
        318, 341, 358, 201, 280, 73, 501, 268, 283, 332, 376, 68, 87, 691, 283, 862, 285, 313, 353,
        309, 622, 16, 201, 201, 223, 923, 849, 334, 507, 288, 439, 263,
    ];
    let last: [u32; 32] = [
        379, 267, 261, 329, 298, 201, 82, 84, 324, 399, 283, 348, 402, 9, 279, 266, 286, 305, 292,
        754, 71, 267, 506, 886, 89, 555, 16, 223, 383, 873, 1012, 201,
    ];
    assert_eq!(set.samples[0], first);
    assert_eq!(set.samples[1], second);
    assert_eq!(set.samples[127], last);
}

include!("tests/wiki_rows.rs");

#[test]
fn jsonl_rows_are_limited_joined_and_windowed_as_python() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rows.jsonl");
    let mut content = String::new();
    for row in WIKI_ROWS {
        content += &serde_json::json!({ "id": 1, "text": row }).to_string();
        content += "\n\n"; // blank lines are skipped
    }
    std::fs::write(&path, content).unwrap();
    let set = samples(
        &spec(CalibrationSource::JsonlFile(path), 4, 8),
        "fixtures/tokenizers/phi3-sp",
    )
    .unwrap();
    assert_eq!(set.samples, WIKI_WINDOWS_4X8);
    assert!(
        set.description.ends_with(
            "rows.jsonl: 4 windows of 8 tokens from the first 8 of 12 rows (283 tokens)"
        ),
        "{}",
        set.description
    );
}

#[test]
fn malformed_jsonl_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.jsonl");
    for (content, expect) in [
        (
            "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n",
            "line 2: no `text` field",
        ),
        ("{\"text\": \"a\"}\n\n{oops\n", "line 3: not valid JSON"),
        ("{\"text\": 5}\n", "line 1: `text` is not a string"),
    ] {
        std::fs::write(&path, content).unwrap();
        let e = samples(
            &spec(CalibrationSource::JsonlFile(path.clone()), 2, 2),
            "fixtures/tiny",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad.jsonl") && e.contains(expect), "{e}");
    }
}

#[test]
fn too_short_text_names_the_file_and_token_count() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("short.txt");
    std::fs::write(&path, "Hello world").unwrap();
    let e = samples(
        &spec(CalibrationSource::TextFile(path), 4, 32),
        "fixtures/tiny",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("short.txt"), "{e}");
    assert!(
        e.contains("tokens long") && e.contains("need at least 33"),
        "{e}"
    );
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn missing_files_are_named() {
    let source = CalibrationSource::TextFile(repo_file("fixtures/eval_text.txt"));
    let e = samples(&spec(source, 1, 4), "fixtures/no-such-dir")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-dir/tokenizer.json"), "{e}");
    let source = CalibrationSource::TextFile(PathBuf::from("/nonexistent/calib.txt"));
    let e = samples(&spec(source, 1, 4), "fixtures/tiny")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/calib.txt"), "{e}");
}

#[test]
fn windows_start_anywhere_up_to_len_minus_seq_len_minus_one() {
    let ids: Vec<u32> = (0..10).collect();
    let mut rng = PyRandom::new(0);
    // randint(0, 10 - 4 - 1 = 5) draws 3 bits per try; the last token can never be in a window.
    let windows = sample_windows(&ids, 50, 4, &mut rng).unwrap();
    assert!(windows.iter().all(|w| w[3] <= 8 && w[1] == w[0] + 1));
    assert!(windows.iter().any(|w| w[0] == 5) && windows.iter().any(|w| w[0] == 0));
    assert!(sample_windows(&ids, 1, 10, &mut rng).is_none());
    assert_eq!(
        sample_windows(&ids, 2, 9, &mut rng).unwrap(),
        [&ids[..9], &ids[..9]]
    );
}
