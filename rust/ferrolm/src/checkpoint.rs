//! Files on disk: safetensors tensor files and JSON, written atomically (temp file + rename,
//! so a crash never leaves a half-written file under the real name) and loaded with
//! validation (loading never executes code).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::{bail, ensure, Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed to disk and renamed over the target. The temporary name is unique to the call, so
/// concurrent writers of one path never share it (the last rename wins, whole).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(bytes)?;
        Ok(file)
    })
}

/// [`write_atomic`], the temporary file (at the path given) created and written by `write`,
/// which returns it to be flushed to disk.
fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<std::fs::File>) -> Result<()> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::Argument(format!("{} is not a file path", path.display())))?;
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.tmp{}-{call}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        write(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

/// Reads a whole regular file, naming it in the error (a FIFO or device in a model directory
/// would block or never end).
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let context = || format!("reading {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| Error::io(context(), e))?;
    if !meta.is_file() {
        bail!(Format, "{} is not a regular file", path.display());
    }
    std::fs::read(path).map_err(|e| Error::io(context(), e))
}

/// A named tensor as stored on disk, widened to f32.
#[derive(Clone)]
pub struct Stored {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// Stored with an integer dtype (a buffer such as BERT's position ids, never a parameter).
    pub integer: bool,
}

/// Its shape and kind, not its data.
impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").field("shape", &self.shape).field("integer", &self.integer).finish_non_exhaustive()
    }
}

/// Writes named f32 tensors to a safetensors file at `path`, atomically, streaming them from
/// their memory: the file is never built in memory (a 1 GB optimizer state took 3 GB more).
/// The file gets the usual permissions (not those of a private temporary file: other users
/// must be able to load a shared model).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let header = safetensors_header(tensors, metadata)?;
    write_atomic_with(path, |tmp| {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(tmp)?);
        file.write_all(&(header.len() as u64).to_le_bytes())?;
        file.write_all(&header)?;
        for (_, _, data) in tensors {
            file.write_all(&le_bytes(data))?;
        }
        file.into_inner().map_err(std::io::IntoInnerError::into_error)
    })
}

/// The JSON header of a safetensors file holding `tensors` one after another, in order,
/// padded with spaces to a multiple of 8 bytes (so the data that follows stays aligned).
fn safetensors_header(tensors: &[(String, Vec<usize>, &[f32])], metadata: BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0;
    for (name, shape, data) in tensors {
        ensure!(
            crate::tensor::checked_numel(shape).ok() == Some(data.len()),
            Shape,
            "tensor {name}: shape {shape:?} does not hold its {} values",
            data.len()
        );
        let end = offset + size_of_val(*data);
        let entry = serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]});
        ensure!(
            name != "__metadata__" && header.insert(name.clone(), entry).is_none(),
            Argument,
            "tensor name {name:?} is used twice or reserved"
        );
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&header).map_err(|e| Error::Format(format!("safetensors header: {e}")))?;
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    Ok(bytes)
}

/// Parses safetensors bytes into named f32 tensors (F16 and BF16 are widened; I64 and I32
/// buffers are read and marked integer, which parameters refuse; other dtypes are refused)
/// plus the file's metadata.
pub fn from_safetensors(bytes: &[u8], what: &str) -> Result<(BTreeMap<String, Stored>, BTreeMap<String, String>)> {
    from_safetensors_where(bytes, what, |_| true)
}

/// [`from_safetensors`] for the tensors whose names `wanted` accepts (the others are not
/// converted: a head read out of a whole model's file).
pub fn from_safetensors_where(
    bytes: &[u8],
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<(BTreeMap<String, Stored>, BTreeMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Format(format!("{what} is not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| Error::Format(format!("{what}: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if !wanted(&name) {
            continue;
        }
        let raw = view.data();
        // Room for the values first: a file larger than memory is an error, not an abort.
        let mut data = crate::tensor::reserved(raw.len() / view.dtype().bitsize().div_ceil(8).max(1))?;
        match view.dtype() {
            Dtype::F32 => data.extend(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            Dtype::BF16 => data
                .extend(raw.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))),
            Dtype::F16 => data.extend(raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))),
            Dtype::I64 => {
                data.extend(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32))
            }
            Dtype::I32 => {
                data.extend(raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32))
            }
            other => bail!(
                Format,
                "{what}: tensor {name} has dtype {other:?}; supported: F32, F16, BF16 (and I64/I32 buffers)"
            ),
        };
        let integer = matches!(view.dtype(), Dtype::I64 | Dtype::I32);
        out.insert(name, Stored { shape: view.shape().to_vec(), data, integer });
    }
    Ok((out, metadata))
}

/// f32 values as little-endian bytes: the values' own memory on little-endian machines.
fn le_bytes(data: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: f32 has no padding and any byte may be read as u8; the slice covers exactly
        // the values' memory and borrows it for as long as `data`.
        Cow::Borrowed(unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) })
    } else {
        Cow::Owned(data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
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

/// Parses JSON, naming the file in the error. A UTF-8 byte-order mark, which some editors write
/// and JSON parsers refuse ("expected value at line 1 column 1"), is skipped.
pub fn parse_json(bytes: &[u8], what: &str) -> Result<serde_json::Value> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(bytes).map_err(|e| Error::Format(format!("{what} is not valid JSON: {e}")))
}

/// A float32 setting as the decimal it was written as (0.1, not 0.10000000149011612), for a
/// config file people read and compare.
pub fn decimal(x: f32) -> f64 {
    x.to_string().parse().expect("a float's display is a number")
}

/// Typed reads of a JSON config (a model's `config.json`, a `tokenizer_config.json`), named by
/// the second field in errors: a field that is present must have its type and range (`"0.5"`
/// or `-1` is an error, not a silent default); absent or null takes the default.
pub(crate) struct ConfigFields<'a>(pub &'a serde_json::Value, pub &'a str);

impl ConfigFields<'_> {
    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn size_of(&self, key: &str, v: &serde_json::Value) -> Result<usize> {
        v.as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| Error::Format(format!("{}: {key} must be a non-negative integer, got {v}", self.1)))
    }

    /// A required size, under the first of `keys` that is present.
    pub fn size(&self, keys: &[&str]) -> Result<usize> {
        match keys.iter().find_map(|k| self.get(k).map(|v| (k, v))) {
            Some((k, v)) => self.size_of(k, v),
            None => bail!(Format, "{}: missing integer field {}", self.1, keys[0]),
        }
    }

    pub fn size_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key).map_or(Ok(default), |v| self.size_of(key, v))
    }

    /// An integer, or None when it is absent.
    pub fn size_opt(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|v| self.size_of(key, v)).transpose()
    }

    /// A finite number.
    pub fn float_or(&self, key: &str, default: f32) -> Result<f32> {
        let Some(v) = self.get(key) else { return Ok(default) };
        v.as_f64()
            .map(|x| x as f32)
            .filter(|x| x.is_finite())
            .ok_or_else(|| Error::Format(format!("{}: {key} must be a finite number, got {v}", self.1)))
    }

    /// A flag, or None when it is absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool().ok_or_else(|| Error::Format(format!("{}: {key} must be true or false, got {v}", self.1)))
            })
            .transpose()
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        Ok(self.bool(key)?.unwrap_or(default))
    }

    /// A flag that, when present, must be `expected` (a variant of the model it does not compute).
    pub fn expect_bool(&self, key: &str, expected: bool) -> Result<()> {
        ensure!(self.bool_or(key, expected)? == expected, Format, "{}: {key} = {} is not supported", self.1, !expected);
        Ok(())
    }

    /// A string, or `default` when it is absent.
    pub fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str> {
        let Some(v) = self.get(key) else { return Ok(default) };
        v.as_str().ok_or_else(|| Error::Format(format!("{}: {key} must be a string, got {v}", self.1)))
    }

    /// A string that, when present, must be one of `supported`.
    pub fn expect_str(&self, key: &str, supported: &[&str]) -> Result<()> {
        let Some(v) = self.get(key) else { return Ok(()) };
        match v.as_str() {
            Some(s) if supported.contains(&s) => Ok(()),
            _ => bail!(Format, "{}: {key} {v} is not supported (expected {})", self.1, supported.join(" or ")),
        }
    }
}

/// How a model's parameters map to names and layouts in a checkpoint file.
pub(crate) struct Layout<'a> {
    /// Prefixes a file may omit (e.g. `transformer.`, `bert.`): `a.b` is also found as `b`.
    pub optional_prefixes: &'a [&'a str],
    /// Parameters stored transposed (2-D) in the file, e.g. GPT-2's Conv1D weights.
    pub transposed: &'a dyn Fn(&str) -> bool,
    /// Other names a parameter may have in older files (e.g. LayerNorm `gamma` for `weight`).
    pub aliases: &'a dyn Fn(&str) -> Vec<String>,
    /// Tensors a file may carry that are not parameters (buffers, tied copies, unused heads).
    pub ignorable: &'a dyn Fn(&str) -> bool,
}

impl Layout<'_> {
    /// Writes the parameters as `model.safetensors` and `config` as `config.json` into `dir`, as
    /// one set ([`write_set`]).
    pub fn save(&self, dir: &Path, params: &[(String, crate::Tensor)], config: &serde_json::Value) -> Result<()> {
        // Parameters as stored (transposed ones are new tensors), read in place: no copies.
        let stored: Vec<crate::Tensor> = params
            .iter()
            .map(|(name, t)| {
                if (self.transposed)(name) {
                    crate::no_grad(|| crate::ops::transpose(t, 0, 1))
                } else {
                    Ok(t.clone())
                }
            })
            .collect::<Result<_>>()?;
        // One read lock per storage: a second read of a lock this thread holds could wait
        // behind a queued writer (two parameters may share storage, e.g. a cloned block).
        let first: Vec<usize> = (0..stored.len())
            .map(|i| (0..=i).find(|&j| Arc::ptr_eq(stored[j].storage(), stored[i].storage())).expect("i itself"))
            .collect();
        let guards: Vec<_> = stored.iter().enumerate().map(|(i, t)| (first[i] == i).then(|| t.read())).collect();
        let refs: Vec<(String, Vec<usize>, &[f32])> = params
            .iter()
            .zip(&stored)
            .zip(&first)
            .map(|(((name, _), t), &j)| (name.clone(), t.shape().to_vec(), &guards[j].as_ref().expect("locked")[..]))
            .collect();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_set(dir, |set| {
            write_safetensors(&set.join("model.safetensors"), &refs, meta)?;
            write_atomic(&set.join("config.json"), &serde_json::to_vec_pretty(config).expect("JSON values serialise"))
        })
    }

    /// Fills `params` from `stored` (removing what it uses); every parameter must be found with
    /// the right shape, and nothing but ignorable tensors may be left over.
    pub fn load(&self, params: &[(String, crate::Tensor)], stored: &mut StoredWeights) -> Result<()> {
        let source = &stored.source;
        let stored = &mut stored.tensors;
        for (name, param) in params {
            let mut candidates = vec![name.clone()];
            for p in self.optional_prefixes {
                if let Some(short) = name.strip_prefix(p) {
                    candidates.push(short.to_string());
                }
            }
            let with_aliases: Vec<String> =
                candidates.iter().flat_map(|c| std::iter::once(c.clone()).chain((self.aliases)(c))).collect();
            let Some(s) = with_aliases.iter().find_map(|c| stored.remove(c)) else {
                bail!(Format, "{source}: missing tensor {name}");
            };
            if s.integer {
                bail!(Format, "{source}: parameter {name} is stored with an integer dtype");
            }
            if !s.data.iter().all(|x| x.is_finite()) {
                bail!(Format, "{source}: {name} holds NaN or infinite values (a damaged or diverged checkpoint)");
            }
            let transposed = (self.transposed)(name);
            let expected: Vec<usize> =
                if transposed { param.shape().iter().rev().copied().collect() } else { param.shape().to_vec() };
            if s.shape != expected {
                bail!(Shape, "{source}: {name} has shape {:?}, the config implies {expected:?}", s.shape);
            }
            let data = crate::Tensor::from_vec(s.data, &s.shape)?;
            let data = if transposed { crate::no_grad(|| crate::ops::transpose(&data, 0, 1))? } else { data };
            param.assign(&data.read())?;
        }
        if let Some(extra) = stored.keys().find(|n| !(self.ignorable)(n)) {
            bail!(Format, "{source}: unexpected tensor {extra} (does config.json match the weights?)");
        }
        Ok(())
    }
}

/// Refuses a stored output head that is not the token embedding (the first of `embedding`
/// present): the models tie them, and files may carry the head as a copy, but a different one
/// would be silently replaced.
pub(crate) fn ensure_tied_head(stored: &StoredWeights, head: &str, embedding: &[&str]) -> Result<()> {
    let (source, stored) = (&stored.source, &stored.tensors);
    let Some(h) = stored.get(head) else { return Ok(()) };
    let tied = embedding.iter().find_map(|n| stored.get(*n)).is_some_and(|e| e.shape == h.shape && e.data == h.data);
    ensure!(tied, Format, "{source}: {head} differs from the token embedding (an untied head is not supported)");
    Ok(())
}

/// Refuses a config that needs more values than the weights file holds, before a model of
/// that config is allocated: a corrupt `config.json` (a vocabulary of 10¹⁰) must give an
/// error, not an allocation of terabytes.
pub(crate) fn ensure_weights_fit(needed: usize, stored: &StoredWeights) -> Result<()> {
    let held: usize = stored.tensors.values().map(|s| s.data.len()).sum();
    if needed > held {
        bail!(
            Format,
            "config.json describes a model with at least {needed} weights, but there are only {held} values in {} \
             (does config.json belong to these weights?)",
            stored.source
        );
    }
    Ok(())
}

/// Reads `config.json` and the weights `wanted` accepts (see [`read_weights`]) from a model
/// directory.
pub(crate) fn read_model_dir(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<(serde_json::Value, StoredWeights)> {
    finish_interrupted_save(dir)?;
    let config = parse_json(&read_file(&dir.join("config.json"))?, "config.json")?;
    Ok((config, read_weights(dir, wanted)?))
}

/// Where a set of files (a model directory, a checkpoint) is written, by [`write_set`] and
/// Python's `ferrolm.atomic.atomic_files`, and where it is kept once written whole, until it is
/// moved in.
const WRITING_SET: &str = ".files-being-written";
const WRITTEN_SET: &str = ".files-written";

/// Writes a set of files that belong together (weights and the config that describes them)
/// into `dir` (created if missing) whole: `write` fills a side directory, which is then moved
/// in, `config.json` last, by [`finish_interrupted_save`]. A failure while writing leaves the
/// old set as it was; a kill while moving in is finished by the next load, from Rust or Python
/// (the same protocol as Python's `atomic_files`).
fn write_set(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (writing, written) = (dir.join(WRITING_SET), dir.join(WRITTEN_SET));
    let _ = std::fs::remove_dir_all(&writing); // a set whose writing was cut short
    std::fs::create_dir_all(&writing).map_err(|e| Error::io(format!("creating {}", writing.display()), e))?;
    if let Err(e) = write(&writing) {
        let _ = std::fs::remove_dir_all(&writing);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&written); // an older set never moved in: this one replaces it
    std::fs::rename(&writing, &written).map_err(|e| Error::io(format!("moving {} in", writing.display()), e))?;
    finish_interrupted_save(dir)?;
    if std::fs::symlink_metadata(&written).is_ok() {
        // finish_interrupted_save leaves a set it cannot move in for a load to read around.
        return Err(Error::io(
            format!("moving the files of {} into {}", written.display(), dir.display()),
            std::io::Error::other("a file could not be moved"),
        ));
    }
    Ok(())
}

/// Moves into `dir` the files of a set that a save from Python wrote whole but had not moved in
/// when its process died, `config.json` last, as Python's loaders do before reading: else new
/// weights could be read with an old config or tokenizer. A file another process moved in
/// meanwhile is left to it. When no file can be moved (a directory this process may not write),
/// the directory is read as it is, the old set whole, as Python does (with a warning); a move
/// that fails after others succeeded, which would leave the sets mixed, is an error. A side
/// directory that is a symbolic link is not followed.
pub fn finish_interrupted_save(dir: &Path) -> Result<()> {
    let written = dir.join(WRITTEN_SET);
    if !std::fs::symlink_metadata(&written).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(&written) else { return Ok(()) };
    let Ok(mut files) = entries.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>() else {
        return Ok(());
    };
    files.sort_by_key(|f| f.file_name() == Some("config.json".as_ref()));
    let mut moved = false;
    for file in &files {
        let Some(name) = file.file_name() else { continue };
        match std::fs::rename(file, dir.join(name)) {
            Ok(()) => moved = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // another process moved it
            Err(e) if moved => {
                let context = format!("finishing a save cut short in {}: moving {}", dir.display(), file.display());
                return Err(Error::io(context, e));
            }
            Err(_) => return Ok(()),
        }
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all(); // the renames made durable, where a directory can be opened
    }
    let _ = std::fs::remove_dir(&written); // gone, or a newer set already there (another writer's)
    Ok(())
}

/// The index of a model saved in shards, as Hugging Face saves one larger than its shard size.
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// Weights files of other formats, named in the error for a directory that has only those.
const OTHER_FORMATS: [&str; 6] = [
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "tf_model.h5.index.json",
    "flax_model.msgpack",
    "flax_model.msgpack.index.json",
];

/// Where a model directory's weights are, as [`read_weights`] reads them.
pub enum Weights {
    /// `model.safetensors` (which may be missing: reading it says so).
    File(PathBuf),
    /// The shards `model.safetensors.index.json` (the path) names, each with its tensors' names.
    Shards(PathBuf, BTreeMap<String, Vec<String>>),
}

impl Weights {
    /// `model.safetensors`, or else the shards its index names (file names beside it); a
    /// directory holding its weights only in another format is refused by name.
    pub fn locate(dir: &Path) -> Result<Weights> {
        let (single, index) = (dir.join("model.safetensors"), dir.join(SHARD_INDEX));
        if single.exists() || !index.exists() {
            if let Some(other) = OTHER_FORMATS.iter().find(|f| !single.exists() && dir.join(f).exists()) {
                bail!(
                    Format,
                    "{} holds its weights as {other}, not safetensors: ferrolm reads safetensors only (a pickle \
                     can run code when loaded); save them as model.safetensors (transformers: save_pretrained, \
                     whose default it is)",
                    dir.display()
                );
            }
            return Ok(Weights::File(single));
        }
        let json = parse_json(&read_file(&index)?, SHARD_INDEX)?;
        let Some(weight_map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            bail!(Format, "{SHARD_INDEX} has no \"weight_map\" object (tensor name → shard file)");
        };
        let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, file) in weight_map {
            let Some(file) = file.as_str() else {
                bail!(Format, "{SHARD_INDEX} puts {name} in {file}, which is not a file name string");
            };
            // A shard is a file beside the index: a path elsewhere is not followed.
            let plain = !file.is_empty() && Path::new(file).file_name().is_some_and(|f| f == file);
            ensure!(plain, Format, "{SHARD_INDEX} puts {name} in {file:?}, which is not a file name in the directory");
            shards.entry(file.to_string()).or_default().push(name.clone());
        }
        Ok(Weights::Shards(index, shards))
    }

    /// The files that hold the weights, the index first (what identifies them); none when
    /// `model.safetensors` is missing.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Weights::File(path) => path.exists().then(|| path.clone()).into_iter().collect(),
            Weights::Shards(index, shards) => {
                let dir = index.parent().unwrap_or(Path::new("."));
                std::iter::once(index.clone()).chain(shards.keys().map(|f| dir.join(f))).collect()
            }
        }
    }
}

/// Tensors read from a model directory, with what errors call their source.
#[derive(Clone, Debug)]
pub struct StoredWeights {
    pub tensors: BTreeMap<String, Stored>,
    /// `model.safetensors`, or the shards of its index.
    pub source: String,
}

/// The tensors of a model directory whose names `wanted` accepts (see [`Weights::locate`]; of
/// shards, only those holding a wanted tensor are read).
pub fn read_weights(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<StoredWeights> {
    let shards = match Weights::locate(dir)? {
        Weights::File(path) => {
            let source = "model.safetensors".to_string();
            let tensors = from_safetensors_where(&read_file(&path)?, &source, wanted)?.0;
            return Ok(StoredWeights { tensors, source });
        }
        Weights::Shards(_, shards) => shards,
    };
    let mut tensors = BTreeMap::new();
    for (file, mut names) in shards {
        names.retain(|n| wanted(n));
        if names.is_empty() {
            continue;
        }
        let (read, _) = from_safetensors_where(&read_file(&dir.join(&file))?, &file, |n| names.iter().any(|w| w == n))?;
        if let Some(missing) = names.iter().find(|n| !read.contains_key(*n)) {
            bail!(Format, "{SHARD_INDEX} puts {missing} in {file}, which does not hold it");
        }
        tensors.extend(read);
    }
    Ok(StoredWeights { tensors, source: format!("the shards of {SHARD_INDEX}") })
}
