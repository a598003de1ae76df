//! Generate text from a model directory saved by Python (`ferrolm pretrain`), without Python.
//!
//! ```text
//! cargo run --release -p ferrolm --example generate -- out-causal \
//!     --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --top-k 200 --seed 0 --stop "JULIET:"
//! ```
//! A temperature of 0 is greedy decoding. Text is printed as it is generated, decoded by the
//! same `TextStream` as Python's `generate(stream=True)`. A chat model's (from `ferrolm sft`)
//! prompt is a user turn and only its answer is printed, as `ferrolm generate` does; `--raw`
//! continues the prompt as plain text instead. `--system TEXT` opens a chat with a system turn
//! (a model fine-tuned on system turns has the role), and `--conversation FILE` gives a whole
//! conversation to answer: a JSON list of `{"role", "content"}` turns, or `{"messages": [...]}`
//! (`ferrolm sft`'s layout), ending with the user turn to answer. `--dtype bfloat16` decodes from
//! bfloat16 copies of the weights (`gemm::set_matmul_precision`), as `ferrolm generate` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ferrolm::chat::{ChatTemplate, Role};
use ferrolm::gemm::{set_matmul_precision, MatmulPrecision};
use ferrolm::generate::{Sampling, TextGeneration};
use ferrolm::model::Gpt;
use ferrolm::tokenizer::Tokenizer;

const USAGE: &str = "usage: generate MODEL_DIR [--prompt TEXT] [--max-new-tokens N] [--temperature T] [--top-k K] \
                     [--top-p P] [--repetition-penalty R] [--seed S] [--stop TEXT]... [--stop-token TOKEN]... \
                     [--dtype float32|bfloat16] [--raw] [--system TEXT] [--conversation FILE]";

struct Args {
    dir: PathBuf,
    /// None: a newline, where nanoGPT starts.
    prompt: Option<String>,
    max_new_tokens: usize,
    sampling: Sampling,
    stops: Vec<String>,
    /// Tokens (their text, as `<|endoftext|>`) that end the text.
    stop_tokens: Vec<String>,
    precision: MatmulPrecision,
    /// A chat model's prompt continued as plain text, not answered as a user turn.
    raw: bool,
    system: Option<String>,
    /// A JSON file of the turns to answer, in place of `prompt`.
    conversation: Option<PathBuf>,
}

/// The command line, or None when it asks for help.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or(USAGE)?;
    if dir == "-h" || dir == "--help" {
        return Ok(None);
    }
    let mut parsed = Args {
        dir: dir.into(),
        prompt: None,
        max_new_tokens: 200,
        sampling: Sampling { temperature: 0.8, top_k: Some(200), ..Sampling::default() },
        stops: Vec::new(),
        stop_tokens: Vec::new(),
        precision: MatmulPrecision::F32,
        raw: false,
        system: None,
        conversation: None,
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if flag == "--raw" {
            parsed.raw = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--prompt" => parsed.prompt = Some(value),
            "--system" => parsed.system = Some(value),
            "--conversation" => parsed.conversation = Some(value.into()),
            "--max-new-tokens" => parsed.max_new_tokens = num(&flag, &value)?,
            "--temperature" => parsed.sampling.temperature = num(&flag, &value)?,
            "--top-k" => parsed.sampling.top_k = Some(num(&flag, &value)?),
            "--top-p" => parsed.sampling.top_p = Some(num(&flag, &value)?),
            "--repetition-penalty" => parsed.sampling.repetition_penalty = num(&flag, &value)?,
            "--seed" => parsed.sampling.seed = num(&flag, &value)?,
            "--stop" => parsed.stops.push(value),
            "--stop-token" => parsed.stop_tokens.push(value),
            "--dtype" => {
                parsed.precision = match value.as_str() {
                    "float32" => MatmulPrecision::F32,
                    "bfloat16" => MatmulPrecision::Bf16,
                    _ => return Err(format!("--dtype {value}: float32 or bfloat16")),
                }
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(Some(parsed))
}

/// `v` as the flag's number type (a seed stays a u64, a count a usize).
fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(|e| format!("{flag} {v}: {e}"))
}

fn main() -> ExitCode {
    let result = parse_args().map_err(Box::from).and_then(|args| match args {
        Some(args) => run(args),
        None => {
            println!("{USAGE}");
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    ferrolm::init_thread_pool()?; // this thread drives the decoding loop: let its ops start here
    set_matmul_precision(args.precision);
    if args.precision == MatmulPrecision::Bf16 && !ferrolm::gemm::bf16_supported() {
        eprintln!("generate: this CPU has no AVX512-BF16: decoding stays float32");
    }
    let model = Gpt::load(&args.dir)?;
    let tokenizer = Tokenizer::from_file(&args.dir)?;
    let mut stop_tokens = (args.stop_tokens.iter())
        .map(|t| tokenizer.token_to_id(t).ok_or(format!("--stop-token {t}: not a token of {}", args.dir.display())))
        .collect::<Result<Vec<u32>, String>>()?;
    let (prompt, n) = (args.prompt.as_deref().unwrap_or("\n"), args.max_new_tokens);
    let chat = ChatTemplate::new(&tokenizer).ok().filter(|_| !args.raw);
    if prompt.is_empty() {
        return Err("--prompt is empty (leave it out to start where nanoGPT does: a newline)".into());
    }
    let pieces = match chat {
        Some(template) => {
            stop_tokens.extend(template.turn_ends());
            let turns = chat_turns(&args, prompt)?;
            let turns: Vec<(Role, &str)> = turns.iter().map(|(role, text)| (*role, text.as_str())).collect();
            let ids = template.prompt_ids(&tokenizer, &turns).map_err(|e| match &args.conversation {
                Some(path) => e.context(format!("--conversation {}", path.display())),
                None => e,
            })?;
            TextGeneration::from_ids(&model, &tokenizer, ids, n, args.sampling, &args.stops, &stop_tokens)?
        }
        None if args.system.is_some() || args.conversation.is_some() => {
            let given = if args.system.is_some() { "--system" } else { "--conversation" };
            let why =
                if args.raw { "--raw continues plain text" } else { "the model is not one (`ferrolm sft` makes one)" };
            return Err(format!("{given} gives a chat model's turns: {why}").into());
        }
        None => TextGeneration::new(&model, &tokenizer, prompt, n, args.sampling, &args.stops, &stop_tokens)?,
    };
    // Said once the prompt is taken, as `ferrolm generate` says it.
    let mut out = std::io::stdout().lock();
    match chat {
        Some(_) if args.conversation.is_some() => {
            eprintln!("(chat model: the conversation's last turn is answered, the answer ends at <|end|>)")
        }
        Some(_) => eprintln!(
            "(chat model: the prompt is a user turn, the answer ends at <|end|>; --raw continues text instead)"
        ),
        None => write!(out, "{prompt}")?,
    }
    for piece in pieces {
        write!(out, "{}", piece?)?;
        out.flush()?;
    }
    writeln!(out)?;
    Ok(())
}

/// The turns a chat model answers: --system's, then --conversation's, or the prompt as the
/// user's.
fn chat_turns(args: &Args, prompt: &str) -> Result<Vec<(Role, String)>, String> {
    match &args.conversation {
        Some(_) if args.prompt.is_some() => Err("give --prompt or --conversation, not both".into()),
        // The file's turns are numbered as they stand in it.
        Some(_) if args.system.is_some() => {
            Err("--conversation: give its system turn in the file, not --system".into())
        }
        Some(path) => read_conversation(path),
        None => {
            let system = args.system.iter().map(|text| (Role::System, text.clone()));
            Ok(system.chain([(Role::User, prompt.to_string())]).collect())
        }
    }
}

/// A conversation file's turns: a JSON list of `{"role", "content"}`, or `{"messages": [...]}`.
fn read_conversation(path: &Path) -> Result<Vec<(Role, String)>, String> {
    use serde_json::Value;
    let said = |e: &dyn std::fmt::Display| format!("--conversation {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| said(&e))?;
    let value: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| said(&e))?;
    let turns = match &value {
        Value::Object(record) => record.get("messages"),
        _ => Some(&value),
    };
    let Some(Value::Array(turns)) = turns else {
        return Err(said(&"not a JSON list of {\"role\", \"content\"} turns, nor {\"messages\": [...]}"));
    };
    (turns.iter().enumerate()).map(|(i, turn)| turn_of(turn).map_err(|e| said(&format!("turn {i}: {e}")))).collect()
}

/// One `{"role", "content"}` turn.
fn turn_of(turn: &serde_json::Value) -> Result<(Role, String), String> {
    let text = |key: &str| turn.get(key).and_then(serde_json::Value::as_str).ok_or(format!("no text {key:?}"));
    Ok((text("role")?.parse().map_err(|e: ferrolm::Error| e.to_string())?, text("content")?.to_string()))
}
