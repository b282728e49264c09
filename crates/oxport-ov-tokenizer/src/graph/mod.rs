//! The two graphs, op by op as openvino-tokenizers builds them (`tokenizer_pipeline.py` `get_ov_subgraph` of each
//! step) after OpenVINO's constant folding, with the layers in the order `ov::pass::Serialize` writes them for the
//! reference export, so that the `.bin` constants land at the same offsets.

use std::path::Path;

use super::TokenizerError;
use super::spec::{DISABLE_TRUNCATE_MAX_LENGTH, Segment, Spec, special_split_pattern};
use super::{TOKENIZER_BIN, TOKENIZER_XML};
use oxport_openvino::ir::{DYN, Elem, Graph, Out, RtInfo};

mod detokenizer;

pub(crate) use detokenizer::write_detokenizer;

const EXT: &str = "extension";

fn ir_err(path: &Path) -> impl Fn(oxport_openvino::Error) -> TokenizerError + '_ {
    move |e| TokenizerError::Ir {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

struct B<'a> {
    g: Graph,
    path: &'a Path,
}

impl B<'_> {
    fn konst(&mut self, elem: Elem, shape: &[usize], bytes: &[u8]) -> Result<Out, TokenizerError> {
        let name = format!("Constant_{}", self.g.layer_count());
        self.g
            .constant(&name, elem, shape, bytes)
            .map_err(ir_err(self.path))
    }
    fn i32s(&mut self, v: &[i32]) -> Result<Out, TokenizerError> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.konst(Elem::I32, &[v.len()], &bytes)
    }
    fn i32_scalar(&mut self, v: i32) -> Result<Out, TokenizerError> {
        self.konst(Elem::I32, &[], &v.to_le_bytes())
    }
    fn i64_scalar(&mut self, v: i64) -> Result<Out, TokenizerError> {
        self.konst(Elem::I64, &[], &v.to_le_bytes())
    }
    /// `create_string_constant_node` of one string: its UTF-8 bytes as u8.
    fn string(&mut self, s: &[u8]) -> Result<Out, TokenizerError> {
        self.konst(Elem::U8, &[s.len()], s)
    }
    /// `create_unpacked_string`: i32 begins, i32 ends, u8 chars.
    fn strings<T: AsRef<[u8]>>(&mut self, items: &[T]) -> Result<[Out; 3], TokenizerError> {
        let mut begins = Vec::with_capacity(items.len() * 4);
        let mut ends = Vec::with_capacity(items.len() * 4);
        let mut chars = Vec::new();
        for s in items {
            begins.extend_from_slice(&(chars.len() as i32).to_le_bytes());
            chars.extend_from_slice(s.as_ref());
            ends.extend_from_slice(&(chars.len() as i32).to_le_bytes());
        }
        Ok([
            self.konst(Elem::I32, &[items.len()], &begins)?,
            self.konst(Elem::I32, &[items.len()], &ends)?,
            self.konst(Elem::U8, &[chars.len()], &chars)?,
        ])
    }
}

/// Model rt_info of both IRs (`utils.py` `update_rt_info_with_params` / `_with_processor_template`), sorted by key as
/// OpenVINO writes it; the package versions are replaced by `oxport/version`.
fn rt_info(spec: &Spec) -> Vec<RtInfo> {
    let mut rt = vec![
        RtInfo::value("add_attention_mask", "True"),
        RtInfo::Empty {
            tag: "add_prefix_space".into(),
        },
        RtInfo::value("add_special_tokens", "True"),
    ];
    if let Some(id) = spec.bos_token_id {
        rt.push(RtInfo::value("bos_token_id", id.to_string()));
    }
    if let Some(t) = &spec.chat_template {
        rt.push(RtInfo::value("chat_template", t.clone()));
    }
    rt.push(RtInfo::Empty {
        tag: "clean_up_tokenization_spaces".into(),
    });
    rt.push(RtInfo::value("detokenizer_input_type", "i64"));
    if let Some(id) = spec.eos_token_id {
        rt.push(RtInfo::value("eos_token_id", id.to_string()));
    }
    rt.push(RtInfo::Empty {
        tag: "handle_special_tokens_with_re".into(),
    });
    rt.push(RtInfo::Empty {
        tag: "max_length".into(),
    });
    rt.push(RtInfo::value("number_of_inputs", "1"));
    rt.push(RtInfo::group(
        "oxport",
        vec![RtInfo::value("version", env!("CARGO_PKG_VERSION"))],
    ));
    if let Some(t) = &spec.original_post_processor {
        rt.push(RtInfo::value("original_post_processor_template", t.clone()));
    }
    rt.push(RtInfo::value(
        "original_tokenizer_class",
        "<class 'transformers.tokenization_utils_tokenizers.TokenizersBackend'>",
    ));
    if let Some(id) = spec.pad_token_id {
        rt.push(RtInfo::value("pad_token_id", id.to_string()));
    }
    rt.push(RtInfo::value(
        "processed_post_processor_template",
        spec.processed_post_processor.clone(),
    ));
    for (k, v) in [
        ("skip_special_tokens", "True"),
        ("streaming_detokenizer", "False"),
        ("tokenizer_output_type", "i64"),
        ("truncation", "False"),
        ("use_max_padding", "False"),
        ("use_sentencepiece_backend", "False"),
        ("utf8_replace_mode", "replace"),
        ("with_detokenizer", "True"),
    ] {
        rt.push(RtInfo::value(k, v));
    }
    rt
}

pub(crate) fn write_tokenizer(spec: &Spec, dir: &Path) -> Result<(), TokenizerError> {
    let bin = dir.join(TOKENIZER_BIN);
    let xml = dir.join(TOKENIZER_XML);
    let mut b = B {
        g: Graph::new("tokenizer"),
        path: &bin,
    };

    let input = b.g.parameter("string_input", Elem::String, &[DYN]);
    // TruncationStep: a stateful on/off flag (default off) selecting max_length or "no truncation".
    let flag_default = b.konst(Elem::Boolean, &[], &[0])?;
    let flag = b.g.op1(
        "ReadValue",
        "opset6",
        "",
        &[flag_default],
        &[
            ("variable_id", "truncation"),
            ("variable_type", "dynamic"),
            ("variable_shape", "..."),
        ],
        (Elem::Boolean, &[]),
    );

    // CombineSegments inputs of the special-token groups before the sequence (the serializer visits them first).
    let seq_pos = spec
        .segments
        .iter()
        .position(|s| *s == Segment::Sequence)
        .unwrap_or(0);
    let mut combine_inputs: Vec<Vec<Out>> = Vec::new();
    for seg in &spec.segments[..seq_pos] {
        combine_inputs.push(token_group(&mut b, seg)?);
    }

    let r = unpack(&mut b, spec, input)?;
    let split = pre_tokenize(&mut b, spec, r)?;
    let bpe = bpe_tokenize(&mut b, spec, &split)?;
    let truncated = truncate(&mut b, spec, flag, &bpe)?;
    let combined = combine(&mut b, spec, combine_inputs, seq_pos, truncated)?;
    let (ids, mask) = pad(&mut b, spec, &combined)?;
    b.g.op1(
        "Assign",
        "opset6",
        "",
        &[flag],
        &[("variable_id", "truncation")],
        (Elem::Boolean, &[]),
    );
    b.g.result("Result_input_ids", ids, "input_ids");
    b.g.result("Result_attention_mask", mask, "attention_mask");
    b.g.set_rt_info(rt_info(spec));
    b.g.write(&bin, &xml).map_err(ir_err(&bin))
}

/// A ragged batch of strings: row begins/ends over the unpacked (begins, ends, chars) strings.
struct Ragged {
    begins: Out,
    ends: Out,
    chars: [Out; 3],
}

/// StringTensorUnpack (with Metaspace `prepend_scheme=first` applied to the whole input), then the ragged batch
/// dimension.
fn unpack(b: &mut B<'_>, spec: &Spec, input: Out) -> Result<Ragged, TokenizerError> {
    let v1 = [DYN];
    // StringTensorUnpack, then a ragged dimension over the batch (`add_ragged_dimension`): begins = range(0, n),
    // ends = range(1, n + 1).
    let zero64 = b.i64_scalar(0)?;
    let unpacked = b.g.op(
        "StringTensorUnpack",
        "opset15",
        "",
        &[input],
        &[],
        &[(Elem::I32, &v1), (Elem::I32, &v1), (Elem::U8, &v1)],
    );
    // Metaspace prepend_scheme=first: on the whole input, before the special tokens are split off.
    let unpacked = match &spec.prepend_first {
        Some((pat, rep)) => {
            let ins = [unpacked[0], unpacked[1], unpacked[2]];
            let o = regex_normalization(b, &ins, pat, rep, false)?;
            vec![o[0], o[1], o[2]]
        }
        None => unpacked,
    };
    let shape = b.g.op1(
        "ShapeOf",
        "opset3",
        "",
        &[unpacked[0]],
        &[("output_type", "i64")],
        (Elem::I64, &[1]),
    );
    let gi = b.i64_scalar(0)?;
    let ga = b.i64_scalar(0)?;
    let n = b.g.op1(
        "Gather",
        "opset8",
        "",
        &[shape, gi, ga],
        &[("batch_dims", "0")],
        (Elem::I64, &[]),
    );
    let one64 = b.i64_scalar(1)?;
    let begins = b.g.op1(
        "Range",
        "opset4",
        "",
        &[zero64, n, one64],
        &[("output_type", "i32")],
        (Elem::I32, &v1),
    );
    let start1 = b.i64_scalar(1)?;
    let add1 = b.i64_scalar(1)?;
    let n1 = b.g.op1(
        "Add",
        "opset1",
        "",
        &[n, add1],
        &[("auto_broadcast", "numpy")],
        (Elem::I64, &[]),
    );
    let step1 = b.i64_scalar(1)?;
    let ends = b.g.op1(
        "Range",
        "opset4",
        "",
        &[start1, n1, step1],
        &[("output_type", "i32")],
        (Elem::I32, &v1),
    );
    Ok(Ragged {
        begins,
        ends,
        chars: [unpacked[0], unpacked[1], unpacked[2]],
    })
}

/// SpecialTokensSplit, the normalizers, then RegexSplit: the ragged pre-tokenized words.
fn pre_tokenize(b: &mut B<'_>, spec: &Spec, r: Ragged) -> Result<Vec<Out>, TokenizerError> {
    let v1 = [DYN];
    // SpecialTokensSplit → RegexSplit (ByteLevel regex, isolate).
    let ragged6: [(Elem, &[i64]); 6] = [
        (Elem::I32, &v1),
        (Elem::I32, &v1),
        (Elem::I32, &v1),
        (Elem::I32, &v1),
        (Elem::U8, &v1),
        (Elem::Boolean, &v1),
    ];
    let mut cur = vec![r.begins, r.ends, r.chars[0], r.chars[1], r.chars[2]];
    if !spec.split_tokens.is_empty() {
        let pat = b.string(special_split_pattern(&spec.split_tokens).as_bytes())?;
        cur.push(pat);
        cur = b.g.op("SpecialTokensSplit", EXT, "", &cur, &[], &ragged6);
    } else {
        // Without special tokens RegexSplit takes the ragged string as is (no skip mask).
        cur.truncate(5);
    }
    // Normalization steps on each non-special segment (RegexNormalizationStep, 4-input form with the skip mask).
    for (pat, rep) in &spec.normalizations {
        if cur.len() != 6 {
            return Err(TokenizerError::Unsupported {
                path: b.path.to_path_buf(),
                construct: "a normalizer without added tokens".into(),
            });
        }
        let o = regex_normalization(b, &cur[2..6], pat, rep, true)?;
        cur.truncate(2);
        cur.extend(o);
    }
    Ok(match &spec.split_pattern {
        Some(pattern) => {
            let pat = b.string(pattern.as_bytes())?;
            cur.push(pat);
            b.g.op(
                "RegexSplit",
                EXT,
                "",
                &cur,
                &[
                    ("behaviour", "isolate"),
                    ("invert", "false"),
                    ("max_splits", "-1"),
                ],
                &ragged6,
            )
        }
        None => cur,
    })
}

/// BPETokenizer over the words: ragged token ids.
fn bpe_tokenize(b: &mut B<'_>, spec: &Spec, split: &[Out]) -> Result<Vec<Out>, TokenizerError> {
    let v1 = [DYN];
    // BPETokenizer with its vocab, merges and added tokens.
    let mut bpe_in: Vec<Out> = split[..5].to_vec();
    bpe_in.extend(b.strings(&spec.vocab)?);
    bpe_in.extend(b.strings(&spec.merges_left)?);
    bpe_in.extend(b.strings(&spec.merges_right)?);
    if !spec.added.is_empty() {
        let texts: Vec<&[u8]> = spec.added.iter().map(|(t, _)| t.as_slice()).collect();
        bpe_in.extend(b.strings(&texts)?);
        let ids: Vec<i32> = spec.added.iter().map(|(_, id)| *id).collect();
        bpe_in.push(b.i32s(&ids)?);
    }
    let cache = spec.cache_capacity.to_string();
    let ragged3: [(Elem, &[i64]); 3] = [(Elem::I32, &v1), (Elem::I32, &v1), (Elem::I32, &v1)];
    Ok(b.g.op(
        "BPETokenizer",
        EXT,
        "",
        &bpe_in,
        &[
            ("unk_token", spec.unk_token.as_str()),
            ("fuse_unk", if spec.fuse_unk { "true" } else { "false" }),
            ("suffix_indicator", ""),
            ("end_suffix", ""),
            (
                "byte_fallback",
                if spec.byte_fallback { "true" } else { "false" },
            ),
            ("cache_capacity", cache.as_str()),
        ],
        &ragged3,
    ))
}

/// Truncate the token ids (`flag` on: max_length).
fn truncate(
    b: &mut B<'_>,
    spec: &Spec,
    flag: Out,
    bpe: &[Out],
) -> Result<Vec<Out>, TokenizerError> {
    let v1 = [DYN];
    let ragged3: [(Elem, &[i64]); 3] = [(Elem::I32, &v1), (Elem::I32, &v1), (Elem::I32, &v1)];
    // Truncate: max_length when the flag is on, else i32::MAX - 64.
    let max_len = b.i32_scalar(spec.max_length)?;
    let no_trunc = b.i32_scalar(DISABLE_TRUNCATE_MAX_LENGTH)?;
    let selected = b.g.op1(
        "Select",
        "opset1",
        "",
        &[flag, max_len, no_trunc],
        &[("auto_broadcast", "numpy")],
        (Elem::I32, &[]),
    );
    let side = b.string(if spec.truncate_right {
        b"right"
    } else {
        b"left"
    })?;
    let mode = b.string(b"longest_first")?;
    Ok(b.g.op(
        "Truncate",
        EXT,
        "",
        &[bpe[0], bpe[1], bpe[2], selected, side, mode],
        &[("m_num_inputs", "1")],
        &ragged3,
    ))
}

/// CombineSegments of the leading special-token groups, the sequence and the trailing groups.
fn combine(
    b: &mut B<'_>,
    spec: &Spec,
    mut combine_inputs: Vec<Vec<Out>>,
    seq_pos: usize,
    truncated: Vec<Out>,
) -> Result<Vec<Out>, TokenizerError> {
    let v1 = [DYN];
    // CombineSegments: [special-token groups…, sequence, …] + segment ids.
    combine_inputs.push(truncated);
    for seg in &spec.segments[seq_pos + 1..] {
        combine_inputs.push(token_group(b, seg)?);
    }
    let seg_ids = b.i32s(&spec.segment_ids)?;
    let mut ci: Vec<Out> = combine_inputs.concat();
    ci.push(seg_ids);
    Ok(b.g.op(
        "CombineSegments",
        EXT,
        "",
        &ci,
        &[],
        &[
            (Elem::I32, &v1),
            (Elem::I32, &v1),
            (Elem::I32, &v1),
            (Elem::I32, &v1),
            (Elem::I32, &v1),
            (Elem::I32, &v1),
        ],
    ))
}

/// The padded `(input_ids, attention_mask)`, both i64 `[B, T]`.
fn pad(b: &mut B<'_>, spec: &Spec, combined: &[Out]) -> Result<(Out, Out), TokenizerError> {
    let v1 = [DYN];
    // PaddingStep: pad to the longest row with the pad id; mask from RaggedToDense.
    let lens = b.g.op1(
        "Subtract",
        "opset1",
        "",
        &[combined[1], combined[0]],
        &[("auto_broadcast", "numpy")],
        (Elem::I32, &v1),
    );
    let axis0 = b.i32_scalar(0)?;
    let max = b.g.op1(
        "ReduceMax",
        "opset1",
        "",
        &[lens, axis0],
        &[("keep_dims", "false")],
        (Elem::I32, &[]),
    );
    let pad = b.i32_scalar(spec.pad_id)?;
    let v2 = [DYN, DYN];
    let dense = b.g.op(
        "RaggedToDense",
        EXT,
        "",
        &[combined[0], combined[1], combined[2], max, pad],
        &[
            ("pad_right", if spec.pad_right { "true" } else { "false" }),
            ("m_pad_max_length", "false"),
        ],
        &[(Elem::I32, &v2), (Elem::Boolean, &v2)],
    );
    let mask32 = b.g.op1(
        "Convert",
        "opset1",
        "",
        &[dense[1]],
        &[("destination_type", "i32")],
        (Elem::I32, &v2),
    );
    let mask = b.g.op1(
        "Convert",
        "opset1",
        "",
        &[mask32],
        &[("destination_type", "i64")],
        (Elem::I64, &v2),
    );
    b.g.name_tensor(mask, "attention_mask");
    let ids = b.g.op1(
        "Convert",
        "opset1",
        "",
        &[dense[0]],
        &[("destination_type", "i64")],
        (Elem::I64, &v2),
    );
    b.g.name_tensor(ids, "input_ids");
    Ok((ids, mask))
}

/// `RegexNormalization` (RegexNormalizationStep / RegexDecodingStep): the string inputs (begins, ends, chars[, skip
/// mask]) and the pattern and replacement as u8 constants; outputs as many as it takes.
fn regex_normalization(
    b: &mut B<'_>,
    inputs: &[Out],
    pattern: &str,
    replace: &str,
    global: bool,
) -> Result<Vec<Out>, TokenizerError> {
    let v1 = [DYN];
    let pat = b.string(pattern.as_bytes())?;
    let rep = b.string(replace.as_bytes())?;
    let mut ins = inputs.to_vec();
    ins.extend([pat, rep]);
    let mut outs: Vec<(Elem, &[i64])> = vec![(Elem::I32, &v1), (Elem::I32, &v1), (Elem::U8, &v1)];
    if inputs.len() == 4 {
        outs.push((Elem::Boolean, &v1));
    }
    Ok(b.g.op(
        "RegexNormalization",
        EXT,
        "",
        &ins,
        &[("global_replace", if global { "true" } else { "false" })],
        &outs,
    ))
}

/// CombineSegments inputs of one special-token group: begin 0, end = count (add_special_tokens), the ids.
fn token_group(b: &mut B<'_>, seg: &Segment) -> Result<Vec<Out>, TokenizerError> {
    let Segment::Tokens(ids) = seg else {
        unreachable!("token_group is only called on special-token groups")
    };
    Ok(vec![
        b.i32_scalar(0)?,
        b.i32_scalar(ids.len() as i32)?,
        b.i32s(ids)?,
    ])
}
