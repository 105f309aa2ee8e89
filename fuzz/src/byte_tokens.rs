//! GPT-2's byte ↔ unicode table, in which token spellings are written: the
//! printable bytes stand for themselves, the others for U+0100 upwards.

/// Whether `b` is one of the bytes GPT-2 spells as itself.
fn printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff)
}

/// The character that spells byte `b`.
pub fn byte_char(b: u8) -> char {
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('\u{fffd}')
}

/// The spelling of a byte string.
pub fn spell(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}
