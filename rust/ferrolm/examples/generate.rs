//! Generate text from a model directory saved by Python (`ferrolm pretrain`), without Python.
//!
//! ```text
//! cargo run --release -p ferrolm --example generate -- out-shakespeare-char \
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
    // Print whole UTF-8 characters as soon as their bytes are complete.
    let (mut ids, mut printed) = (Vec::new(), 0);
    for _ in 0..args.max_new_tokens {
        let Some(token) = generation.step()?[0] else { break };
        ids.push(token as u32);
        let bytes = tokenizer.decode_bytes(&ids, false)?;
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid prefix"),
        };
        write!(out, "{}", &text[printed..])?;
        out.flush()?;
        printed = text.len();
    }
    writeln!(out)?;
    Ok(())
}
