//! The chat template (minijinja) and tokenizer reproduce transformers' `apply_chat_template` ids for the
//! reference prompt (`fixtures/reference/numerics/<model>/prompt.json`).

use oxport_runner::validate::Chat;

use crate::support::fixture;

#[test]
fn chat_prompt_matches_the_reference_text_and_ids() {
    let root = fixture("reference");
    let prompt: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("numerics/phi3-tiny-random/prompt.json")).unwrap(),
    )
    .unwrap();
    // The reference export folder has no tokenizer.json, so tokenizer and template come from the checkpoint.
    let export = root.join("exports/phi3-tiny-random/ov_int4");
    let checkpoint = root.join("checkpoints/phi3-tiny-random");
    let chat = Chat::load(&[&export, &checkpoint]).unwrap();
    let text = chat.render("Tell me a joke about computers.").unwrap();
    assert_eq!(text, prompt["text"].as_str().unwrap());
    let ids: Vec<u32> = prompt["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(
        chat.encode(&text).unwrap(),
        ids,
        "BOS from the tokenizer, then the template's tokens"
    );
    assert_eq!(
        chat.encode_plain("Hello").unwrap().first(),
        chat.encode("Hello").unwrap().get(1)
    );
}
