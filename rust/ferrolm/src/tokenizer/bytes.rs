//! GPT-2's reversible byte ↔ printable-character map. Byte-level BPE works on raw bytes, but
//! vocabularies (`tokenizer.json`, `vocab.json`) store each token as a string in which every
//! byte is shown as one visible character: printable Latin-1 bytes stand for themselves and the
//! other 68 bytes (controls, space, soft hyphen...) are shifted to U+0100 and up, so a leading
//! space appears as `Ġ` and a newline as `Ċ`.

/// `BYTE_TO_CHAR[b]` is the character that stands for byte `b` in vocabulary files.
pub const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        let cp = if printable {
            b as u32
        } else {
            shifted += 1;
            0xFF + shifted
        };
        table[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => panic!("byte map stays below the surrogate range"),
        };
        b += 1;
    }
    table
};

/// Refuses a byte-level BPE special token spelled with a character that stands for another
/// byte than its own (Ġ for a space, ¶ for the byte 0xB6): the vocabulary would name two
/// tokens alike, and Hugging Face decodes a special token's characters as the bytes they stand
/// for, so its text would not come back.
pub fn check_special_spelling(token: &str) -> crate::Result<()> {
    let spelled = token.chars().filter(|c| !c.is_ascii()).find_map(|c| char_to_byte(c).map(|b| (c, b)));
    if let Some((c, byte)) = spelled {
        crate::bail!(
            Argument,
            "special token {token:?} contains {c:?}, which byte-level BPE uses to spell the byte 0x{byte:02X}: \
             choose another spelling (such as <|name|>)"
        );
    }
    Ok(())
}

/// The byte a vocabulary character stands for, or `None` if it is not one of the 256.
#[inline]
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x143 => {
            // The 68 shifted bytes, in increasing byte order.
            let k = (cp - 0x100) as usize;
            SHIFTED_BYTES.get(k).copied()
        }
        _ => None,
    }
}

/// The non-printable bytes in increasing order: `BYTE_TO_CHAR[SHIFTED_BYTES[k]] == U+0100 + k`.
const SHIFTED_BYTES: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut k = 0;
    let mut b = 0usize;
    while b < 256 {
        if BYTE_TO_CHAR[b] as u32 >= 0x100 {
            out[k] = b as u8;
            k += 1;
        }
        b += 1;
    }
    out
};

/// Raw bytes → vocabulary string (`b" hi"` → `"Ġhi"`).
pub fn bytes_to_token(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect()
}

/// Vocabulary string → raw bytes, or `None` if a character is outside the byte map.
pub fn token_to_bytes(token: &str) -> Option<Vec<u8>> {
    token.chars().map(char_to_byte).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_TO_CHAR[b as usize];
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(token_to_bytes(&bytes_to_token(b"\x00 hi\xff")), Some(b"\x00 hi\xff".to_vec()));
    }
}
