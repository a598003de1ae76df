//! File input for tokenizers: whole UTF-8 files, and streaming reads of large text files in
//! line-aligned chunks, so training memory does not grow with the corpus. (Writes go through
//! [`crate::checkpoint::write_atomic`].)

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Reads a whole UTF-8 text file.
pub fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(crate::checkpoint::read_file(path)?).map_err(|e| {
        Error::Format(format!("{}: invalid UTF-8 at byte {}", path.display(), e.utf8_error().valid_up_to()))
    })
}

/// Calls `f` on successive chunks of the file, each about `chunk_bytes` long and ending at a
/// line end (or the end of the file). Invalid UTF-8 is a format error naming the byte offset.
pub fn for_each_chunk(path: &Path, chunk_bytes: usize, mut f: impl FnMut(&str) -> Result<()>) -> Result<()> {
    let io_err = |e| Error::io(format!("reading {}", path.display()), e);
    let mut file = File::open(path).map_err(io_err)?;
    let chunk_bytes = chunk_bytes.max(1);
    // Sized by the file, not the chunk: a buffer of 16 MiB for each of many small files cost
    // more than reading them.
    let size = file.metadata().map_or(chunk_bytes as u64, |m| m.len());
    let mut buf: Vec<u8> = Vec::with_capacity(chunk_bytes.min(usize::try_from(size).unwrap_or(usize::MAX)) + 1);
    let mut offset = 0u64; // file offset of buf[0]
    let mut eof = false;
    let mut want = chunk_bytes;
    loop {
        if !eof && buf.len() < want {
            let limit = (want - buf.len()) as u64;
            let n = file.by_ref().take(limit).read_to_end(&mut buf).map_err(io_err)?;
            eof = (n as u64) < limit; // read_to_end stops only at the limit or the end of the file
        }
        if buf.is_empty() {
            break;
        }
        let cut = if eof {
            buf.len()
        } else {
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(p) => p + 1,
                None => {
                    // One very long line: read on until it ends.
                    want = buf.len() * 2;
                    continue;
                }
            }
        };
        let text = std::str::from_utf8(&buf[..cut]).map_err(|e| {
            Error::Format(format!("{}: invalid UTF-8 at byte {}", path.display(), offset + e.valid_up_to() as u64))
        })?;
        f(text)?;
        buf.drain(..cut);
        offset += cut as u64;
        want = chunk_bytes;
    }
    Ok(())
}

/// `text` in pieces of about `size` bytes or more, each cut just before a space that follows a
/// non-space character: no word, and no token or whitespace run of the built-in patterns, spans
/// such a cut (a newline would not do: cl100k keeps `.\n` together), so the pieces
/// tokenize as the whole. Also cut before each character `also_before` accepts, a cut that
/// must keep that promise too (before a CJK ideograph for BERT, which makes each one a word of
/// its own: text in those scripts has no spaces to cut at). A text with no such place stays
/// whole. An iterator: most texts (a corpus's lines) are one piece, and allocate nothing.
pub(crate) fn split_long(text: &str, size: usize, also_before: impl Fn(char) -> bool) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let bytes = text.as_bytes();
        let after_word = |i: usize| text[..i].chars().next_back().is_some_and(|c| !c.is_whitespace());
        let cut = (size.max(1)..bytes.len()).find(|&i| {
            (bytes[i] == b' ' && after_word(i))
                || (text.is_char_boundary(i) && text[i..].chars().next().is_some_and(&also_before))
        });
        let (piece, tail) = text.split_at(cut.unwrap_or(text.len()));
        rest = cut.map(|_| tail);
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_at_lines_and_cover_file() {
        let dir = std::env::temp_dir().join(format!("ferrolm-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.txt");
        let text: String = (0..500).map(|i| format!("line {i} {}\n", "x".repeat(i % 37))).collect::<String>() + "tail";
        std::fs::write(&path, &text).unwrap();
        let mut seen = String::new();
        for_each_chunk(&path, 100, |c| {
            assert!(c.ends_with('\n') || c.ends_with("tail"));
            seen.push_str(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, text);
        std::fs::write(&path, b"ok\n\xff\xfe").unwrap();
        let err = for_each_chunk(&path, 100, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("invalid UTF-8 at byte 3"), "{err}");
        assert!(for_each_chunk(&dir.join("missing"), 10, |_| Ok(())).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_text_is_cut_before_a_space_that_ends_a_word() {
        let text = "alpha beta  gamma.\ndelta\u{3000} epsilon zeta";
        let pieces: Vec<&str> = split_long(text, 4, |_| false).collect();
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces, ["alpha", " beta", "  gamma.\ndelta\u{3000} epsilon", " zeta"]);
        assert_eq!(split_long("nospaceshere", 3, |_| false).collect::<Vec<_>>(), ["nospaceshere"]);
        assert_eq!(split_long("", 3, |_| false).collect::<Vec<_>>(), [""]);
        let cut_before_x = split_long("aaxbbxcc x", 1, |c| c == 'x').collect::<Vec<_>>();
        assert_eq!(cut_before_x, ["aa", "xbb", "xcc", " ", "x"]);
    }
}
