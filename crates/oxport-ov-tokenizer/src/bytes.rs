//! GPT-2 byte ↔ unicode-char table (openvino_tokenizers `utils.py` `unicode_to_bytes`, the same table as
//! HF tokenizers' `byte_level.rs` `bytes_char`).

use std::collections::HashMap;
use std::sync::OnceLock;

/// `table[b]` is the char that stands for byte `b`.
fn table() -> &'static [char; 256] {
    static T: OnceLock<[char; 256]> = OnceLock::new();
    T.get_or_init(|| {
        let printable = |b: u32| {
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
        };
        let mut t = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..256u32 {
            t[b as usize] = if printable(b) {
                char::from_u32(b).unwrap_or('\0')
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap_or('\0')
            };
        }
        t
    })
}

/// char → byte.
pub(crate) fn unicode_to_bytes() -> &'static HashMap<char, u8> {
    static M: OnceLock<HashMap<char, u8>> = OnceLock::new();
    M.get_or_init(|| {
        table()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
}

/// The BytesToChars op: each byte replaced by its char, UTF-8 encoded.
pub(crate) fn bytes_to_chars(bytes: &[u8]) -> Vec<u8> {
    let t = table();
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(t[b as usize]);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_table() {
        assert_eq!(table()[b' ' as usize], 'Ġ');
        assert_eq!(table()[b'\n' as usize], 'Ċ');
        assert_eq!(table()[0], 'Ā');
        assert_eq!(table()[b'!' as usize], '!');
        assert_eq!(unicode_to_bytes().len(), 256);
        assert_eq!(bytes_to_chars(b"a b"), "aĠb".as_bytes());
    }
}
