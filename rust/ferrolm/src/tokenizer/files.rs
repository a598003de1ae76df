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
    let mut buf: Vec<u8> = Vec::with_capacity(chunk_bytes + 4096);
    let mut offset = 0u64; // file offset of buf[0]
    let mut eof = false;
    let mut want = chunk_bytes;
    loop {
        while !eof && buf.len() < want {
            let start = buf.len();
            buf.resize(want.max(start + 4096), 0);
            let n = file.read(&mut buf[start..]).map_err(io_err)?;
            buf.truncate(start + n);
            eof = n == 0;
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
}
