//! Text generation with a KV cache ([`crate::ops::KvCache`], filled by
//! [`crate::ops::attention_cached`]): a batch of prompts of different lengths is left-padded,
//! prefilled once, then extended one token per step, each step computing only its new token.
//!
//! When a sequence reaches the model's context, its cache is rebuilt from its last half context
//! (learned positions cannot simply be shifted), so generation can run past `block_size` at the
//! cost of recomputing half a context every `block_size / 2` tokens. In a batch only the rows
//! that reached the context are recomputed; the others keep all their cached tokens (moved to
//! the front of the cache), so greedy rows continue as their prompts would alone (up to float
//! rounding: a batch of 3 rows or more decodes through packed weights, [`PackedWeights`]).
//! Sampled rows draw from random streams of their own, row 0's being the one the prompt alone
//! would use.

use crate::model::{Batch, Gpt};
use crate::ops::{self, KvCache, PackedWeights};
use crate::rng::{mix, Rng};
use crate::tokenizer::{EncodeOptions, Model, Tokenizer};
use crate::{compute, ensure, no_grad, Result};

/// How the next token is chosen from the logits.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens, and those tied with the k-th (0 or None: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (nucleus sampling).
    pub top_p: Option<f32>,
    /// > 1 discourages tokens already in the sequence (CTRL's rule, as in Hugging Face).
    pub repetition_penalty: f32,
    /// Seeds the sampling (each prompt of a batch draws its own stream from it): the same seed
    /// gives the same text. The default is 0, so vary it for different samples.
    pub seed: u64,
    /// Only ids below this are picked (None: all). A model's vocabulary may be padded past its
    /// tokenizer's (nanoGPT pads GPT-2's 50257 to 50304), and text cannot hold the extra ids.
    pub vocab_limit: Option<usize>,
    /// Ids never picked: the gaps of a tokenizer's vocabulary ([`Sampling::within`]).
    pub excluded: Vec<u32>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
            vocab_limit: None,
            excluded: Vec::new(),
        }
    }
}

impl Sampling {
    /// Refuses a temperature below 0 or not finite, a `top_p` outside (0, 1], a repetition
    /// penalty not above 0 or not finite, and a `vocab_limit` of 0 (each an
    /// [`crate::Error::Argument`]).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.temperature >= 0.0 && self.temperature.is_finite(),
            Argument,
            "temperature must be ≥ 0 and finite, got {}",
            self.temperature
        );
        if let Some(p) = self.top_p {
            ensure!(p > 0.0 && p <= 1.0, Argument, "top_p must be in (0, 1], got {p}");
        }
        ensure!(
            self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite(),
            Argument,
            "repetition_penalty must be > 0 and finite, got {}",
            self.repetition_penalty
        );
        ensure!(self.vocab_limit != Some(0), Argument, "vocab_limit must be at least 1");
        Ok(())
    }

    /// These settings, picking only ids `tokenizer` has: below its vocabulary's size (a model's
    /// may be padded past it) and not in its gaps ([`Tokenizer::unused_ids`]). What text
    /// generation samples with: decoding any other id would fail.
    pub fn within(self, tokenizer: &Tokenizer) -> Sampling {
        let limit = self.vocab_limit.map_or(tokenizer.vocab_size(), |n| n.min(tokenizer.vocab_size()));
        let mut excluded = self.excluded;
        excluded.extend(tokenizer.unused_ids());
        Sampling { vocab_limit: Some(limit), excluded, ..self }
    }

    /// Picks a token from one row of logits, given the tokens seen so far. The logits are
    /// left as they were; non-finite ones (a damaged or diverged model's) are an error, not a
    /// token picked from them.
    pub(crate) fn pick(&self, logits: &mut [f32], seen: &[i64], rng: &mut Rng) -> Result<i64> {
        let logits = match self.vocab_limit {
            Some(n) if n < logits.len() => &mut logits[..n],
            _ => logits,
        };
        ensure!(
            logits.iter().all(|x| x.is_finite()),
            Argument,
            "generate: the model's next-token logits hold NaN or infinite values (are its weights damaged or \
             diverged?)"
        );
        // (id, logit before) of each logit changed, restored in reverse order.
        let mut changed = Vec::new();
        if self.repetition_penalty != 1.0 {
            let mut ids: Vec<usize> = seen.iter().map(|&t| t as usize).filter(|&t| t < logits.len()).collect();
            ids.sort_unstable();
            ids.dedup();
            for t in ids {
                let l = &mut logits[t];
                changed.push((t, *l));
                // Kept finite: a tiny penalty would make inf, and the weights NaN.
                let p = if *l > 0.0 { *l / self.repetition_penalty } else { *l * self.repetition_penalty };
                *l = p.clamp(f32::MIN, f32::MAX);
            }
        }
        for &t in &self.excluded {
            if let Some(l) = logits.get_mut(t as usize) {
                changed.push((t as usize, *l));
                *l = f32::NEG_INFINITY; // weight 0, never the argmax while any id is left
            }
        }
        ensure!(
            self.excluded.is_empty() || logits.iter().any(|&l| l > f32::NEG_INFINITY),
            Argument,
            "generate: every id the model can pick is excluded (the tokenizer has none of them)"
        );
        let token = self.pick_from(logits, rng);
        for (t, l) in changed.into_iter().rev() {
            logits[t] = l;
        }
        Ok(token)
    }

    /// `pick` from finite logits, penalties applied.
    fn pick_from(&self, logits: &[f32], rng: &mut Rng) -> i64 {
        if self.temperature == 0.0 {
            return argmax(logits) as i64;
        }
        // Candidates: every token, in id order for plain sampling; for top-k and top-p, the best
        // ones, found by selection rather than by sorting the vocabulary for every token (O(V)).
        let mut order: Vec<usize> = (0..logits.len()).collect();
        let best_first = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
        if let Some(k) = self.top_k.filter(|&k| k > 0 && k < logits.len()) {
            order.select_nth_unstable_by(k - 1, best_first);
            // Tokens tied with the k-th best stay in, as in Hugging Face, which drops only
            // those below it (identical embedding rows, as new tokens' often are, tie).
            // (Not sorted: the draw and the nucleus need no order, and ties can keep the whole
            // vocabulary.)
            let kth = logits[order[k - 1]];
            order.retain(|&i| logits[i] >= kth);
        }
        let max = order.iter().map(|&i| logits[i]).fold(f32::NEG_INFINITY, f32::max);
        let weight = |i: usize| ((logits[i] - max) / self.temperature).exp();
        if let Some(top_p) = self.top_p.filter(|&p| p < 1.0) {
            // The nucleus: the fewest best tokens whose probability reaches top_p. Found like
            // quickselect: split the undecided range at its middle rank; if the better half
            // holds the remaining mass the nucleus ends inside it, else it is all in.
            let mut need = top_p * order.iter().map(|&i| weight(i)).sum::<f32>();
            let (mut lo, mut hi) = (0, order.len());
            while hi - lo > 32 {
                let mid = lo + (hi - lo) / 2;
                order[lo..hi].select_nth_unstable_by(mid - lo, best_first);
                let mass: f32 = order[lo..mid].iter().map(|&i| weight(i)).sum();
                if mass >= need {
                    hi = mid;
                } else {
                    need -= mass;
                    lo = mid;
                }
            }
            order[lo..hi].sort_unstable_by(best_first);
            let mut cumulative = 0.0;
            let reached = order[lo..hi].iter().position(|&i| {
                cumulative += weight(i);
                cumulative >= need
            });
            order.truncate(reached.map_or(hi, |j| lo + j + 1));
        }
        let weights: Vec<f32> = order.iter().map(|&i| weight(i)).collect();
        let mut r = rng.uniform() * weights.iter().sum::<f32>();
        for (&i, w) in order.iter().zip(&weights) {
            r -= w;
            if r < 0.0 {
                return i as i64;
            }
        }
        // Rounding left r ≥ 0 after the last weight: the last candidate that has any.
        let last = order.iter().zip(&weights).rev().find(|(_, &w)| w > 0.0);
        last.map_or(order[order.len() - 1], |(&i, _)| i) as i64
    }
}

fn argmax(xs: &[f32]) -> usize {
    xs.iter().enumerate().fold(0, |best, (i, &x)| if x > xs[best] { i } else { best })
}

/// Refuses token ids outside a vocabulary of `vocab_size`, naming `what` holds them.
fn check_vocabulary(ids: &[i64], vocab_size: usize, what: &str) -> Result<()> {
    match ids.iter().find(|&&id| id < 0 || id as usize >= vocab_size) {
        Some(id) => crate::bail!(Index, "generate: {what} has token id {id}, outside the vocabulary of {vocab_size}"),
        None => Ok(()),
    }
}

/// Row `i`'s random stream for a generation seeded with `seed`.
fn row_stream(seed: u64, i: usize) -> Rng {
    Rng::new(mix(seed ^ mix(i as u64 + 1)))
}

/// One sequence of a generation batch.
#[derive(Clone)]
struct Row {
    /// Prompt and generated tokens, unpadded.
    tokens: Vec<i64>,
    finished: bool,
    rng: Rng,
}

/// A generation in progress over a batch of prompts; call [`Generation::step`] for each token.
/// Its calls run through [`compute`], so any thread may drive it. A clone has a cache of its
/// own and draws what the original would (see [`Generation::reseed`]): a system prompt
/// prefilled once can start many conversations, each cloned and
/// [`extend`](Generation::extend)ed with its own turns.
#[derive(Clone)]
pub struct Generation {
    model: Gpt,
    sampling: Sampling,
    stop_tokens: Vec<i64>,
    rows: Vec<Row>,
    cache: KvCache,
    /// Left padding of each row in the cache.
    pads: Vec<usize>,
    /// Whether the cache has dropped tokens to make room (rows go on from a window).
    windowed: bool,
    /// Next-token logits of each row [B, V], from the last forward pass.
    logits: Vec<f32>,
    /// The weights packed for the decoding steps of a batch (of 3 rows or more).
    packed: PackedWeights,
}

/// The sampling settings, each row's tokens and whether it finished, and the cache's fill.
impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<_> = self.rows.iter().map(|r| (&r.tokens, r.finished)).collect();
        f.debug_struct("Generation")
            .field("sampling", &self.sampling)
            .field("stop_tokens", &self.stop_tokens)
            .field("rows", &rows)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// Validates the prompts (non-empty, ids in the vocabulary, at most `block_size` tokens)
    /// and prefills the cache with them.
    pub fn new(model: &Gpt, prompts: &[Vec<i64>], sampling: Sampling, stop_tokens: Vec<i64>) -> Result<Self> {
        sampling.validate()?;
        let cfg = model.config();
        ensure!(!prompts.is_empty(), Argument, "generate: no prompts given");
        for (i, p) in prompts.iter().enumerate() {
            let prompt = if prompts.len() == 1 { "the prompt".to_string() } else { format!("prompt {i}") };
            ensure!(!p.is_empty(), Argument, "generate: {prompt} is empty (give at least one token)");
            ensure!(
                p.len() <= cfg.block_size,
                Argument,
                "generate: {prompt} has {} tokens, more than the model's context of {}; shorten it",
                p.len(),
                cfg.block_size
            );
            check_vocabulary(p, cfg.vocab_size, &prompt)?;
        }
        check_vocabulary(&stop_tokens, cfg.vocab_size, "stop_tokens")?;
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Row { tokens: p.clone(), finished: false, rng: row_stream(sampling.seed, i) })
            .collect();
        let mut g = Generation {
            cache: model.new_cache(prompts.len())?,
            model: model.clone(),
            sampling,
            stop_tokens,
            rows,
            pads: vec![0; prompts.len()],
            windowed: false,
            logits: Vec::new(),
            packed: PackedWeights::default(),
        };
        compute(|| g.prefill())?;
        Ok(g)
    }

    /// Fills the empty cache with the prompts, left-padded to one length.
    fn prefill(&mut self) -> Result<()> {
        let t = self.rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        let b = self.rows.len();
        self.pads = self.rows.iter().map(|r| t - r.tokens.len()).collect();
        let mut ids = vec![0i64; b * t];
        let mut positions = vec![0i64; b * t];
        let mut mask = vec![false; b * t];
        for (r, row) in self.rows.iter().enumerate() {
            let pad = self.pads[r];
            for (j, &id) in row.tokens.iter().enumerate() {
                ids[r * t + pad + j] = id;
                positions[r * t + pad + j] = j as i64;
                mask[r * t + pad + j] = true;
            }
        }
        self.run_through(&Batch { positions: Some(&positions), key_mask: Some(&mask), ..Batch::new(&ids, b, t) })
    }

    /// Runs `batch` through the model into the cache and keeps each row's next-token logits.
    /// Rows are left-padded, so they come from the last position: only that position goes
    /// through the head (all of them would be [B, T, V]); a decoding step has only that one.
    fn run_through(&mut self, batch: &Batch) -> Result<()> {
        let filled = self.cache.len();
        let logits = no_grad(|| {
            let hidden = self.model.hidden(batch, None, Some(&mut self.cache))?;
            let last = if batch.len == 1 { hidden } else { ops::narrow(&hidden, 1, batch.len - 1, 1)? };
            self.model.logits(&last)
        })
        // Failed after the cache took the batch (no memory for the logits, say): it forgets
        // them, so the rows and the cache stay in step for the caller's rollback.
        .inspect_err(|_| self.cache.truncate(filled))?;
        self.logits = logits.to_vec();
        Ok(())
    }

    /// Samples one token for every unfinished row and feeds it through the model. Returns,
    /// per row, the new token, or `None` for rows that had already finished. A row finishes
    /// when it produces a stop token (which is returned).
    pub fn step(&mut self) -> Result<Vec<Option<i64>>> {
        compute(|| self.step_here())
    }

    fn step_here(&mut self) -> Result<Vec<Option<i64>>> {
        // A step that fails (no memory for the forward pass, say) leaves the rows as they were,
        // so the generation can go on: what they were, to go back to. (A cache that was full
        // stays windowed: its oldest positions, dropped to make room, stay dropped.)
        let before: Vec<(usize, bool, Rng)> =
            self.rows.iter().map(|r| (r.tokens.len(), r.finished, r.rng.clone())).collect();
        let stepped = self.sample_and_feed();
        if stepped.is_err() {
            for (row, (len, finished, rng)) in self.rows.iter_mut().zip(before) {
                row.tokens.truncate(len);
                (row.finished, row.rng) = (finished, rng);
            }
        }
        stepped
    }

    fn sample_and_feed(&mut self) -> Result<Vec<Option<i64>>> {
        let v = self.model.config().vocab_size;
        let mut out = Vec::with_capacity(self.rows.len());
        for (r, row) in self.rows.iter_mut().enumerate() {
            if row.finished {
                out.push(None);
                continue;
            }
            let token = self.sampling.pick(&mut self.logits[r * v..(r + 1) * v], &row.tokens, &mut row.rng)?;
            row.tokens.push(token);
            row.finished = self.stop_tokens.contains(&token);
            out.push(Some(token));
        }
        if self.rows.iter().all(|r| r.finished) {
            return Ok(out);
        }
        if self.cache.len() == self.cache.capacity() {
            self.make_room()?;
        }
        self.feed(&out).map(|_| out)
    }

    /// Frees cache positions for the next token once the cache is full. Rows that filled the
    /// context keep its last half: the token just sampled (fed next) and the `half - 1` before
    /// it, recomputed at positions from 0. Every other row keeps its whole cache, moved forward
    /// with the rest; finished rows keep what fits (their outputs are ignored).
    fn make_room(&mut self) -> Result<()> {
        let (len, half) = (self.cache.len(), (self.cache.capacity() / 2).max(1));
        let live = |r: &usize| !self.rows[*r].finished;
        let full: Vec<usize> = (0..self.rows.len()).filter(live).filter(|&r| self.pads[r] == 0).collect();
        let longest_other = (0..self.rows.len()).filter(live).map(|r| len - self.pads[r]).filter(|&n| n < len).max();
        let kept = longest_other.unwrap_or(0).max(half - 1);
        // The rows' recomputed positions first: should that fail, the cache is as it was.
        let n = half - 1;
        let fresh = if n > 0 && !full.is_empty() {
            let ids: Vec<i64> =
                full.iter().flat_map(|&r| self.rows[r].tokens.iter().rev().skip(1).take(n).rev()).copied().collect();
            let cfg = self.model.config();
            let mut fresh = KvCache::new(cfg.n_layer, full.len(), cfg.n_head, n, cfg.n_embd / cfg.n_head)?;
            no_grad(|| self.model.hidden(&Batch::new(&ids, full.len(), n), None, Some(&mut fresh)))?;
            Some(fresh)
        } else {
            None
        };
        self.cache.drop_oldest(len - kept)?;
        self.windowed = true;
        for pad in &mut self.pads {
            *pad = pad.saturating_sub(len - kept);
        }
        if let Some(fresh) = fresh {
            self.cache.overwrite_rows(&fresh, &full)?;
        }
        for &r in &full {
            self.pads[r] = kept - n;
        }
        Ok(())
    }

    /// Runs the newly sampled tokens through the model, one position per row.
    fn feed(&mut self, new: &[Option<i64>]) -> Result<()> {
        let b = self.rows.len();
        let len = self.cache.len();
        let ids: Vec<i64> = new.iter().map(|t| t.unwrap_or(0)).collect();
        let positions: Vec<i64> = (0..b).map(|r| (len - self.pads[r]) as i64).collect();
        // Keys: real tokens of each row, its padding masked; finished rows keep attending to
        // their own history (their outputs are ignored).
        let mut mask = vec![true; b * (len + 1)];
        for r in 0..b {
            mask[r * (len + 1)..r * (len + 1) + self.pads[r]].fill(false);
        }
        let batch = Batch { positions: Some(&positions), key_mask: Some(&mask), ..Batch::new(&ids, b, 1) };
        // Every step multiplies by the same weights: a batch of several rows packs them once.
        let mut packed = std::mem::take(&mut self.packed);
        let fed = packed.scope(|| self.run_through(&batch));
        self.packed = packed;
        fed
    }

    /// Continues a one-row generation with more tokens (a chat's next turn): `ids` are appended
    /// to the row and run through the cache after what it holds, so nothing before them is
    /// recomputed, and [`Generation::step`] goes on after them. A stop token that finished the
    /// row was never run through the model and is dropped first: the caller's `ids` say how
    /// that turn ends. They must fit in the cache's free positions ([`Generation::room`]).
    pub fn extend(&mut self, ids: &[i64]) -> Result<()> {
        ensure!(
            self.rows.len() == 1,
            Argument,
            "generate: extend continues one sequence, not a batch of {}",
            self.rows.len()
        );
        ensure!(!ids.is_empty(), Argument, "generate: extend needs at least one token");
        check_vocabulary(ids, self.model.config().vocab_size, "extend")?;
        ensure!(
            ids.len() <= self.room(),
            Argument,
            "generate: {} more tokens do not fit the {} free positions of the context of {}",
            ids.len(),
            self.room(),
            self.cache.capacity()
        );
        let (len, pad) = (self.cache.len(), self.pads[0]);
        let positions: Vec<i64> = (len - pad..len - pad + ids.len()).map(|p| p as i64).collect();
        let mask: Vec<bool> = (0..len + ids.len()).map(|k| k >= pad).collect();
        let batch = Batch { positions: Some(&positions), key_mask: Some(&mask), ..Batch::new(ids, 1, ids.len()) };
        // The row takes the tokens once they are through, so a call that fails (no memory for the
        // forward pass, say) leaves it as it was, as a failed step does.
        compute(|| self.run_through(&batch))?;
        let row = &mut self.rows[0];
        if row.finished {
            row.tokens.pop();
            row.finished = false;
        }
        row.tokens.extend_from_slice(ids);
        Ok(())
    }

    /// Whether the cache has dropped a row's oldest tokens to make room for new ones, so it no
    /// longer holds every row from its start.
    pub fn windowed(&self) -> bool {
        self.windowed
    }

    /// Draws from now on as a generation seeded with `seed` would have from its start (each row
    /// its own stream). A clone repeats its original's draws until reseeded: reseed each of a
    /// prefilled prompt's clones for samples that differ (best of n).
    pub fn reseed(&mut self, seed: u64) {
        self.sampling.seed = seed;
        for (i, row) in self.rows.iter_mut().enumerate() {
            row.rng = row_stream(seed, i);
        }
    }

    /// Free positions in the cache: how many tokens [`Generation::extend`] can add (each
    /// generated token takes one too, until the cache makes room by dropping old ones).
    pub fn room(&self) -> usize {
        self.cache.capacity() - self.cache.len()
    }

    /// All tokens of each row so far (prompt included).
    pub fn tokens(&self) -> Vec<Vec<i64>> {
        self.rows.iter().map(|r| r.tokens.clone()).collect()
    }

    pub fn finished(&self) -> bool {
        self.rows.iter().all(|r| r.finished)
    }

    /// Runs up to `max_new_tokens` steps; returns the generated tokens of each row.
    pub fn run(&mut self, max_new_tokens: usize) -> Result<Vec<Vec<i64>>> {
        let mut generated = vec![Vec::new(); self.rows.len()];
        for _ in 0..max_new_tokens {
            if self.finished() {
                break;
            }
            for (g, t) in generated.iter_mut().zip(self.step()?) {
                g.extend(t);
            }
        }
        Ok(generated)
    }
}

/// Text in, text out: `prompt` encoded by `tokenizer` (without the tokens its template adds, such
/// as BERT's `[CLS]`; a special token's text written in the prompt, `<|endoftext|>`, is that
/// token), continued for up to `max_new_tokens` tokens, and decoded as they come
/// ([`TextStream`]: the text ends at the first stop string, which is dropped, or stop token,
/// such as an end of text: generation does not stop at one unless told to). Only ids below the
/// tokenizer's size are sampled (a model's vocabulary may be padded past them). Iterate for the text's pieces as they become final, or
/// collect them: `.collect::<Result<String>>()`.
///
/// ```no_run
/// # fn main() -> ferrolm::Result<()> {
/// use ferrolm::{generate::{Sampling, TextGeneration}, model::Gpt, tokenizer::Tokenizer};
/// let (model, tokenizer) = (Gpt::load("out-causal")?, Tokenizer::from_file("out-causal")?);
/// let sampling = Sampling { temperature: 0.8, top_k: Some(200), ..Sampling::default() };
/// let end = tokenizer.token_to_id("<|endoftext|>"); // a GPT-2 tokenizer's end of text, if it has one
/// for piece in TextGeneration::new(&model, &tokenizer, "ROMEO:", 200, sampling, &[], end.as_slice())? {
///     print!("{}", piece?);
/// }
/// # Ok(())
/// # }
/// ```
pub struct TextGeneration<'t> {
    tokenizer: &'t Tokenizer,
    generation: Generation,
    text: TextStream,
    left: usize,
    ended: bool,
}

impl std::fmt::Debug for TextGeneration<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextGeneration")
            .field("generation", &self.generation)
            .field("tokens_left", &self.left)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<'t> TextGeneration<'t> {
    /// Encodes `prompt` and starts generating. Errors: a prompt that encodes to no token or to
    /// more than the model's context, an empty stop string, stop tokens outside the model's
    /// vocabulary, sampling settings [`Sampling::validate`] refuses.
    pub fn new(
        model: &Gpt,
        tokenizer: &'t Tokenizer,
        prompt: &str,
        max_new_tokens: usize,
        sampling: Sampling,
        stops: &[String],
        stop_tokens: &[u32],
    ) -> Result<Self> {
        let ids = tokenizer.encode(prompt, &EncodeOptions { add_special_tokens: false, ..Default::default() })?;
        ensure!(
            !ids.is_empty(),
            Argument,
            "generate: the prompt {prompt:?} encodes to no tokens; give at least one character the tokenizer keeps"
        );
        Self::from_ids(model, tokenizer, ids, max_new_tokens, sampling, stops, stop_tokens)
    }

    /// As [`TextGeneration::new`], from a prompt already encoded (a chat prompt from
    /// [`crate::chat::ChatTemplate::prompt_ids`], say).
    pub fn from_ids(
        model: &Gpt,
        tokenizer: &'t Tokenizer,
        ids: Vec<u32>,
        max_new_tokens: usize,
        sampling: Sampling,
        stops: &[String],
        stop_tokens: &[u32],
    ) -> Result<Self> {
        let text = TextStream::new(stops, stop_tokens)?;
        let sampling = sampling.within(tokenizer);
        let text = text.after(&ids);
        let prompt = ids.into_iter().map(i64::from).collect();
        let generation =
            Generation::new(model, &[prompt], sampling, stop_tokens.iter().map(|&t| i64::from(t)).collect())?;
        Ok(TextGeneration { tokenizer, generation, text, left: max_new_tokens, ended: false })
    }
}

impl Iterator for TextGeneration<'_> {
    type Item = Result<String>;

    /// The next non-empty piece of text; None once the text has ended (or after an error).
    fn next(&mut self) -> Option<Result<String>> {
        while !self.ended {
            let piece = if self.left == 0 || self.text.is_done() {
                self.ended = true;
                Ok(self.text.flush())
            } else {
                self.left -= 1;
                // The row finishes at a stop token, which ends the text too: a step before that gives a token.
                let token = self.generation.step().map(|tokens| tokens[0].expect("an unfinished row"));
                token.and_then(|t| self.text.push(self.tokenizer, t as u32))
            };
            match piece {
                Ok(piece) if piece.is_empty() => continue,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                piece => return Some(piece),
            }
        }
        None
    }
}

/// Generated token ids turned into text as they come: bytes are decoded once they form whole
/// UTF-8 characters (bytes that are not UTF-8 become U+FFFD, as in [`Tokenizer::decode`]);
/// text that could be the start of a stop string is held back until it is known not to be
/// one; a stop string ends the text (and is dropped), as does a stop token.
///
/// Byte-level BPE and character text is the concatenation of the tokens' bytes, so each
/// token decodes only its own; WordPiece spaces pieces by their neighbours and decodes all
/// ids again. The tokenizer is passed to each call, so a stream holds no borrow.
#[derive(Clone, Debug, Default)]
pub struct TextStream {
    stops: Vec<String>,
    stop_tokens: Vec<u32>,
    /// The prompt's last id (see [`TextStream::after`]), then the generated ones.
    ids: Vec<u32>,
    /// How many of `ids` are the prompt's (0 or 1).
    prompt_len: usize,
    /// Bytes of an unfinished character (concatenative tokenizers).
    pending: Vec<u8>,
    /// The text so far, cut at a stop string.
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    done: bool,
    stopped_by_string: bool,
}

impl TextStream {
    /// A stream that ends at any of `stops` or `stop_tokens`. An empty stop string is an
    /// [`crate::Error::Argument`]: it would stop at nothing.
    pub fn new(stops: &[String], stop_tokens: &[u32]) -> Result<TextStream> {
        ensure!(
            stops.iter().all(|s| !s.is_empty()),
            Argument,
            "an empty stop string stops at nothing; give the text to stop at"
        );
        Ok(TextStream { stops: stops.to_vec(), stop_tokens: stop_tokens.to_vec(), ..TextStream::default() })
    }

    /// The stream of a continuation of `prompt`: WordPiece joins a piece to its neighbour
    /// (`##`) or spaces it from it, so the first generated piece is decoded after the prompt's
    /// last one (the only piece that decides how it is joined).
    pub fn after(mut self, prompt: &[u32]) -> TextStream {
        self.ids = prompt.last().copied().into_iter().collect();
        self.prompt_len = self.ids.len();
        self
    }

    /// Adds a generated token; returns the text that became final.
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> Result<String> {
        if self.done {
            return Ok(String::new());
        }
        if self.stop_tokens.contains(&token) {
            return Ok(self.flush());
        }
        let mut before = self.text.len();
        if matches!(tokenizer.model(), Model::WordPiece(_)) {
            self.ids.push(token);
            // Whole pieces, so always complete; the prompt piece's text is a prefix of the whole,
            // and the text only grows (a piece brings its separator, which cleanup alone removes).
            let whole = tokenizer.decode(&self.ids, false)?;
            let prompt = tokenizer.decode(&self.ids[..self.prompt_len], false)?;
            self.text = match whole.strip_prefix(&prompt) {
                Some(continuation) => continuation.to_string(),
                None => tokenizer.decode(&self.ids[self.prompt_len..], false)?,
            };
            before = 0;
        } else {
            self.pending.extend(tokenizer.decode_bytes(&[token], false)?);
            let end = complete_utf8(&self.pending);
            self.text.push_str(&String::from_utf8_lossy(&self.pending[..end]));
            self.pending.drain(..end);
        }
        // The earliest stop string that the new text completes (searched only where it could).
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| {
                let mut from = before.saturating_sub(s.len() - 1);
                while !self.text.is_char_boundary(from) {
                    from -= 1;
                }
                self.text[from..].find(s.as_str()).map(|at| from + at)
            })
            .min();
        if let Some(at) = first_stop {
            // Text already handed out stays (possible only after a mid-stream flush).
            self.text.truncate(at.max(self.emitted));
            self.pending.clear();
            self.stopped_by_string = true;
            return Ok(self.flush());
        }
        let text = &self.text;
        let hold = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).filter(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k])))
            .max()
            .unwrap_or(0);
        Ok(self.take(self.text.len() - hold))
    }

    /// Ends the stream and returns everything not yet handed out; the bytes of a character
    /// left unfinished become U+FFFD, as [`Tokenizer::decode`] gives them.
    pub fn flush(&mut self) -> String {
        self.text.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
        self.done = true;
        self.take(self.text.len())
    }

    /// The whole text so far (cut at a stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the text has ended: at a stop string, a stop token, or [`TextStream::flush`].
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether a stop string ended the text: the tokens that spelled it were generated (a KV
    /// cache holds them), but the text drops them.
    pub fn stopped_by_string(&self) -> bool {
        self.stopped_by_string
    }

    fn take(&mut self, upto: usize) -> String {
        let upto = upto.max(self.emitted);
        let piece = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        piece
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Frequencies of `pick` over many draws against the distribution it should sample:
    /// softmax(logits / T) restricted to the top k, then to the nucleus, renormalised.
    #[test]
    fn pick_samples_the_truncated_softmax() {
        let logits = [1.0f32, 3.0, 0.5, 2.5, -1.0, 2.0, 0.0, 2.9];
        let softmax = |t: f32| -> Vec<f64> {
            let e: Vec<f64> = logits.iter().map(|&l| ((l - 3.0) / t).exp() as f64).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        };
        let cases = [(1.0, None, None), (0.7, Some(3), None), (1.0, None, Some(0.8)), (1.3, Some(4), Some(0.7))];
        for (temperature, top_k, top_p) in cases {
            let sampling = Sampling { temperature, top_k, top_p, ..Default::default() };
            // Expected: best-first order, cut at k, then at the nucleus.
            let p = softmax(temperature);
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            order.truncate(top_k.unwrap_or(logits.len()));
            let total: f64 = order.iter().map(|&i| p[i]).sum();
            if let Some(top_p) = top_p {
                let mut cumulative = 0.0;
                let keep = order.iter().position(|&i| {
                    cumulative += p[i] / total;
                    cumulative >= top_p as f64
                });
                order.truncate(keep.map_or(order.len(), |i| i + 1));
            }
            let kept: f64 = order.iter().map(|&i| p[i]).sum();
            let mut expected = vec![0.0; logits.len()];
            for &i in &order {
                expected[i] = p[i] / kept;
            }
            let mut rng = Rng::new(7);
            let draws = 200_000;
            let mut counts = vec![0usize; logits.len()];
            for _ in 0..draws {
                counts[sampling.pick(&mut logits.clone(), &[], &mut rng).unwrap() as usize] += 1;
            }
            let tv: f64 =
                counts.iter().zip(&expected).map(|(&c, &e)| (c as f64 / draws as f64 - e).abs()).sum::<f64>() / 2.0;
            assert!(tv < 0.006, "{temperature} {top_k:?} {top_p:?}: total variation {tv}");
            assert!(counts.iter().zip(&expected).all(|(&c, &e)| e > 0.0 || c == 0), "sampled outside the cut");
        }
    }

    /// top_k keeps the tokens tied with the k-th best too, as Hugging Face's does (it kept
    /// exactly k, dropping tied tokens by id).
    #[test]
    fn top_k_keeps_the_tokens_tied_with_the_kth() {
        let logits = [1.0f32, 3.0, 0.5, 2.0, -1.0, 2.0, 0.0, 2.0];
        let sampling = Sampling { top_k: Some(2), ..Default::default() };
        let mut rng = Rng::new(5);
        let mut drawn = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            drawn.insert(sampling.pick(&mut logits.clone(), &[], &mut rng).unwrap());
        }
        assert_eq!(drawn.into_iter().collect::<Vec<_>>(), [1, 3, 5, 7]);
    }

    /// A penalty so small that a seen token's logit would overflow keeps it finite: that token
    /// is all but certain (with inf the weights were NaN and the last id came out).
    #[test]
    fn a_tiny_repetition_penalty_keeps_the_logits_finite() {
        let sampling = Sampling { repetition_penalty: 1e-40, ..Default::default() };
        let mut rng = Rng::new(1);
        for _ in 0..20 {
            assert_eq!(sampling.pick(&mut [1.0, 2.0, 0.5], &[0], &mut rng).unwrap(), 0);
        }
    }

    /// Non-finite logits are an error, greedy or sampled (a NaN first logit made greedy
    /// decoding return id 0 at every step, and a NaN or inf weight made sampling return the last
    /// id); ids past the vocabulary limit are not looked at. A penalty leaves the logits as
    /// they were, so a step can be picked again.
    #[test]
    fn non_finite_logits_are_refused_and_logits_are_left_as_they_were() {
        let mut rng = Rng::new(1);
        for temperature in [0.0, 1.0] {
            let sampling = Sampling { temperature, ..Default::default() };
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let err = sampling.pick(&mut [bad, 1.0, 2.0], &[], &mut rng).unwrap_err().to_string();
                assert!(err.contains("NaN or infinite"), "{err}");
            }
            let limited = Sampling { vocab_limit: Some(2), ..sampling };
            assert!(limited.pick(&mut [1.0, 2.0, f32::NAN], &[], &mut rng).is_ok());
        }
        let sampling = Sampling { repetition_penalty: 3.0, temperature: 0.0, ..Default::default() };
        let mut logits = [1.0, 2.0, -0.5];
        assert_eq!(sampling.pick(&mut logits, &[1, 2], &mut rng).unwrap(), 0);
        assert_eq!(logits, [1.0, 2.0, -0.5]);
    }

    /// Excluded ids (a tokenizer's gaps) are never picked, greedy, sampled, top-k or top-p,
    /// penalised or not, and the logits are left as they were; excluding every id is an error.
    #[test]
    fn excluded_ids_are_never_picked() {
        let mut rng = Rng::new(2);
        let original = [3.0, 0.5, 2.9, 0.4, -1.0];
        for (temperature, top_k, top_p, repetition_penalty) in
            [(0.0, None, None, 1.0), (5.0, None, None, 1.0), (5.0, Some(2), None, 1.5), (5.0, None, Some(0.99), 0.5)]
        {
            let sampling = Sampling {
                temperature,
                top_k,
                top_p,
                repetition_penalty,
                excluded: vec![0, 2, 9],
                ..Default::default()
            };
            let mut logits = original;
            let picked: Vec<i64> = (0..300).map(|_| sampling.pick(&mut logits, &[0, 1], &mut rng).unwrap()).collect();
            assert!(picked.iter().all(|&t| t != 0 && t != 2), "{picked:?}");
            assert_eq!(logits, original);
        }
        let none_left = Sampling { vocab_limit: Some(3), excluded: vec![0, 1, 2], ..Default::default() };
        let err = none_left.pick(&mut [1.0, 2.0, 3.0, 4.0], &[], &mut rng).unwrap_err().to_string();
        assert!(err.contains("every id the model can pick is excluded"), "{err}");
    }

    /// A nucleus of hundreds of tokens (found through several rounds of selection), alone or
    /// within a top-k cut, is the set of best tokens that reaches top_p, up to the boundary
    /// token's rounding.
    #[test]
    fn a_large_nucleus_is_found_whole() {
        let mut rng = Rng::new(3);
        let logits: Vec<f32> = (0..1000).map(|_| rng.uniform() * 0.5).collect();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        for top_k in [None, Some(600)] {
            let candidates = &order[..top_k.unwrap_or(order.len())];
            let weights: Vec<f64> = candidates.iter().map(|&i| (logits[i] as f64).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut cumulative = 0.0;
            let size = weights.iter().position(|w| {
                cumulative += w / total;
                cumulative >= 0.9
            });
            let nucleus: std::collections::HashSet<usize> = candidates[..size.unwrap() + 1].iter().copied().collect();
            assert!(nucleus.len() > 500);
            let sampling = Sampling { top_k, top_p: Some(0.9), ..Default::default() };
            let mut drawn = std::collections::HashSet::new();
            for _ in 0..30_000 {
                drawn.insert(sampling.pick(&mut logits.clone(), &[], &mut rng).unwrap() as usize);
            }
            let outside = drawn.difference(&nucleus).count();
            let missed = nucleus.difference(&drawn).count();
            assert!(
                outside <= 1 && missed <= 1,
                "{top_k:?}: {outside} drawn outside the nucleus, {missed} never drawn"
            );
        }
    }
}
