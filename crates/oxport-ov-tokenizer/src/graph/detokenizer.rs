//! The detokenizer graph (`openvino_detokenizer.xml`): token ids back to strings.

use super::*;
use crate::spec::DecodeStep;
use crate::{DETOKENIZER_BIN, DETOKENIZER_XML};

pub(crate) fn write_detokenizer(spec: &Spec, dir: &Path) -> Result<(), TokenizerError> {
    let bin = dir.join(DETOKENIZER_BIN);
    let xml = dir.join(DETOKENIZER_XML);
    let mut b = B {
        g: Graph::new("detokenizer"),
        path: &bin,
    };
    let v1 = [DYN];
    let ids = b.g.parameter("token_ids", Elem::I64, &[DYN, DYN]);
    let ids32 = b.g.op1(
        "Convert",
        "opset1",
        "",
        &[ids],
        &[("destination_type", "i32")],
        (Elem::I32, &[DYN, DYN]),
    );
    let vocab = b.strings(&spec.detok_vocab)?;
    // VocabDecoderStep: the skip list sliced [0:i32::MAX] (skip_special_tokens=True), folded to the list itself.
    let skips = b.i32s(&spec.skip_tokens)?;
    let decoded = b.g.op(
        "VocabDecoder",
        EXT,
        "",
        &[ids32, vocab[0], vocab[1], vocab[2], skips],
        &[("skip_tokens", "")],
        &[
            (Elem::I32, &v1),
            (Elem::I32, &v1),
            (Elem::I32, &v1),
            (Elem::I32, &v1),
            (Elem::U8, &v1),
        ],
    );
    // The decoder steps (a ByteLevel decoder is FuseStep alone: CharsToBytes is folded into the byte-level vocab).
    let mut ragged = Some([decoded[0], decoded[1]]);
    let mut toks = [decoded[2], decoded[3], decoded[4]];
    for step in &spec.decode_steps {
        match step {
            DecodeStep::Regex(pat, rep) => {
                let o = regex_normalization(&mut b, &toks, pat, rep, true)?;
                toks = [o[0], o[1], o[2]];
            }
            DecodeStep::ByteFallback => {
                let o = b.g.op(
                    "ByteFallback",
                    EXT,
                    "",
                    &toks,
                    &[],
                    &[(Elem::I32, &v1), (Elem::I32, &v1), (Elem::U8, &v1)],
                );
                toks = [o[0], o[1], o[2]];
            }
            DecodeStep::Fuse => {
                let [rb, re] = ragged.take().expect("decode_steps has one Fuse");
                let o = b.g.op(
                    "FuzeRagged",
                    EXT,
                    "",
                    &[rb, re, toks[0], toks[1]],
                    &[],
                    &[(Elem::I32, &v1), (Elem::I32, &v1)],
                );
                toks = [o[0], o[1], toks[2]];
            }
        }
    }
    let valid = b.g.op(
        "UTF8Validate",
        EXT,
        "",
        &toks,
        &[("replace_mode", "true")],
        &[(Elem::I32, &v1), (Elem::I32, &v1), (Elem::U8, &v1)],
    );
    let text = b.g.op1(
        "StringTensorPack",
        "opset15",
        "",
        &valid,
        &[],
        (Elem::String, &v1),
    );
    b.g.name_tensor(text, "string_output");
    b.g.result("Result_string_output", text, "string_output");
    b.g.set_rt_info(rt_info(spec));
    b.g.write(&bin, &xml).map_err(ir_err(&bin))
}
