//! Files on disk: safetensors tensor files and JSON, written atomically (temp file + rename,
//! so a crash never leaves a half-written file under the real name) and loaded with
//! validation (loading never executes code).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{bail, Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed to disk and renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::Argument(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// A named f32 tensor as stored on disk.
pub struct Stored {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Serialises named f32 tensors (with string metadata) to safetensors bytes.
pub fn to_safetensors(tensors: &[(String, Vec<usize>, &[f32])], metadata: BTreeMap<String, String>) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, data)| data.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Format(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = if metadata.is_empty() { None } else { Some(metadata.into_iter().collect()) };
    safetensors::serialize(views, metadata).map_err(|e| Error::Format(format!("serialising safetensors: {e}")))
}

/// Parses safetensors bytes into named f32 tensors (F16 and BF16 are widened; other dtypes
/// are refused) plus the file's metadata.
pub fn from_safetensors(bytes: &[u8], what: &str) -> Result<(BTreeMap<String, Stored>, BTreeMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Format(format!("{what} is not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| Error::Format(format!("{what}: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => {
                raw.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
            }
            Dtype::F16 => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            other => bail!(Format, "{what}: tensor {name} has dtype {other:?}; only F32, F16 and BF16 are supported"),
        };
        out.insert(name, Stored { shape: view.shape().to_vec(), data });
    }
    Ok((out, metadata))
}

/// IEEE half → single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // subnormal: renormalise
            let shift = frac.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((frac << shift) & 0x3ff) << 13
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Parses JSON, naming the file in the error.
pub fn parse_json(bytes: &[u8], what: &str) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::Format(format!("{what} is not valid JSON: {e}")))
}
