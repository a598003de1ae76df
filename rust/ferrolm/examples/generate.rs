//! Generate text from a model directory saved by Python (`ferrolm pretrain`), without Python.
//!
//! ```text
//! cargo run --release -p ferrolm --example generate -- out-causal \
//!     --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --top-k 200 --seed 0
//! ```
//! A temperature of 0 is greedy decoding. Text is printed as it is generated.

use std::io::Write;
use std::path::PathBuf;

use ferrolm::generate::{Generation, Sampling};
use ferrolm::model::Gpt;
use ferrolm::tokenizer::{EncodeOptions, Tokenizer};

struct Args {
    dir: PathBuf,
    prompt: String,
    max_new_tokens: usize,
    sampling: Sampling,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: generate MODEL_DIR [--prompt TEXT] [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]")?;
    let mut parsed = Args {
        dir: dir.into(),
        prompt: "\n".into(),
        max_new_tokens: 200,
        sampling: Sampling { temperature: 0.8, top_k: Some(200), ..Sampling::default() },
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--prompt" => parsed.prompt = value,
            "--max-new-tokens" => parsed.max_new_tokens = num(&value)? as usize,
            "--temperature" => parsed.sampling.temperature = num(&value)? as f32,
            "--top-k" => parsed.sampling.top_k = Some(num(&value)? as usize),
            "--top-p" => parsed.sampling.top_p = Some(num(&value)? as f32),
            "--seed" => parsed.sampling.seed = num(&value)? as u64,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(parsed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    ferrolm::init_thread_pool(); // this thread drives the decoding loop: let its ops start here
    let model = Gpt::load(&args.dir)?;
    let tokenizer = Tokenizer::from_file(args.dir.join("tokenizer.json"))?;
    let prompt: Vec<i64> =
        tokenizer.encode(&args.prompt, &EncodeOptions::default())?.into_iter().map(i64::from).collect();
    let mut generation = Generation::new(&model, &[prompt], args.sampling, Vec::new())?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", args.prompt)?;
    // Byte-level BPE and character text is the concatenation of the tokens' bytes: print each
    // token's bytes once they end on a character boundary; bytes that are not UTF-8 (a
    // byte-level model may emit them) print as U+FFFD, as Python's decoding does. WordPiece
    // spaces pieces by their neighbours, so its text is decoded whole and printed as it grows.
    let concatenative = tokenizer.kind() != "wordpiece";
    let (mut pending, mut ids, mut printed) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.max_new_tokens {
        let Some(token) = generation.step()?[0] else { break };
        if concatenative {
            pending.extend(tokenizer.decode_bytes(&[token as u32], false)?);
            let end = complete_utf8(&pending);
            write!(out, "{}", String::from_utf8_lossy(&pending[..end]))?;
            pending.drain(..end);
        } else {
            ids.push(token as u32);
            let text = tokenizer.decode(&ids, false)?;
            write!(out, "{}", text.get(printed..).unwrap_or_default())?;
            printed = text.len();
        }
        out.flush()?;
    }
    writeln!(out)?;
    Ok(())
}

/// Length of the longest prefix of `bytes` that does not end inside a UTF-8 character.
fn complete_utf8(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(4) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 != 0x80 {
            // A lead byte or ASCII: is the character it starts complete?
            let need = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if back >= need { bytes.len() } else { bytes.len() - back };
        }
    }
    bytes.len()
}
