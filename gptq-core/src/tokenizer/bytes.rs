//! GPT-2's byte ↔ unicode table.
//!
//! GPT-2 stores every token as a string of printable characters: each byte
//! stands for one character. The 188 bytes that are printable in Latin-1
//! (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68 bytes,
//! taken in increasing order, become U+0100, U+0101, ... U+0143. So a space
//! (0x20, the 33rd non-printable byte) is `Ġ` (U+0120).

/// Number of characters the table uses as images: U+0000..U+0144.
const IMAGE_SPAN: usize = 256 + 68;

/// Whether GPT-2 keeps byte `b` as the Latin-1 character of the same value.
const fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// `BYTE_TO_CHAR[b]` is the character that stands for byte `b`.
pub(crate) const BYTE_TO_CHAR: [char; 256] = build_byte_to_char();

/// `CHAR_TO_BYTE[c]` is the byte that character `c` stands for, or -1 when `c`
/// (below U+0144) is not an image of any byte.
const CHAR_TO_BYTE: [i16; IMAGE_SPAN] = build_char_to_byte();

const fn build_byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra: u32 = 256;
    let mut b = 0usize;
    while b < 256 {
        let code = if is_printable(b as u8) {
            b as u32
        } else {
            next_extra += 1;
            next_extra - 1
        };
        // Every code here is below U+0144, a valid scalar value.
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

const fn build_char_to_byte() -> [i16; IMAGE_SPAN] {
    let forward = build_byte_to_char();
    let mut table = [-1i16; IMAGE_SPAN];
    let mut b = 0usize;
    while b < 256 {
        table[forward[b] as usize] = b as i16;
        b += 1;
    }
    table
}

/// The byte that character `c` stands for, if it stands for one.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let byte = *CHAR_TO_BYTE.get(c as usize)?;
    u8::try_from(byte).ok()
}

/// Decodes a token's byte-level spelling (e.g. `"Ġthe"`) to its raw bytes
/// (`b" the"`), or returns the first character that stands for no byte.
pub(crate) fn decode_spelling(spelling: &str) -> Result<Vec<u8>, char> {
    spelling.chars().map(|c| char_to_byte(c).ok_or(c)).collect()
}

/// Encodes raw bytes in GPT-2's byte-level spelling.
pub(crate) fn encode_spelling(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| BYTE_TO_CHAR[usize::from(b)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_is_a_bijection_on_256_entries() {
        let images: HashSet<char> = BYTE_TO_CHAR.iter().copied().collect();
        assert_eq!(images.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[usize::from(b)]), Some(b));
        }
        let mapped = (0..IMAGE_SPAN as u32)
            .filter_map(char::from_u32)
            .filter(|&c| char_to_byte(c).is_some())
            .count();
        assert_eq!(mapped, 256);
    }

    #[test]
    fn known_images() {
        assert_eq!(BYTE_TO_CHAR[usize::from(b' ')], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[usize::from(b'\n')], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[usize::from(b'\t')], 'ĉ');
        assert_eq!(BYTE_TO_CHAR[0], 'Ā');
        assert_eq!(BYTE_TO_CHAR[usize::from(b'a')], 'a');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        assert_eq!(BYTE_TO_CHAR[0xFF], 'ÿ');
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte('日'), None);
    }

    #[test]
    fn spelling_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_spelling(&encode_spelling(&bytes)), Ok(bytes));
        assert_eq!(decode_spelling("Ġthe"), Ok(b" the".to_vec()));
        assert_eq!(decode_spelling("a b"), Err(' '));
    }
}
