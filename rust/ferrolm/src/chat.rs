//! The chat template of models fine-tuned by `ferrolm sft`: Python's `ferrolm.chat` renders
//! through it, so a Rust program asks them what Python trained them on:
//!
//! ```text
//! [<|system|> text] <|user|> prompt <|assistant|> answer <|end|> <|user|> ... <|assistant|>
//! ```
//!
//! Turn text is encoded as plain text (special-token look-alikes in it stay text), so only the
//! markers are special ids; an answer ends at `<|end|>`, or at a marker that would start
//! another turn ([`ChatTemplate::turn_ends`]).
//!
//! ```no_run
//! use ferrolm::chat::{ChatTemplate, Role};
//! use ferrolm::generate::{Sampling, TextGeneration};
//! # fn main() -> ferrolm::Result<()> {
//! let (model, tokenizer) = (ferrolm::model::Gpt::load("sft")?, ferrolm::tokenizer::Tokenizer::from_file("sft")?);
//! let template = ChatTemplate::new(&tokenizer)?;
//! let prompt = template.prompt_ids(&tokenizer, &[(Role::User, "Who goes there?")])?;
//! let sampling = Sampling { temperature: 0.0, ..Sampling::default() };
//! let answer = TextGeneration::from_ids(&model, &tokenizer, prompt, 100, sampling, &[], &template.turn_ends())?;
//! println!("{}", answer.collect::<ferrolm::Result<String>>()?);
//! # Ok(())
//! # }
//! ```

use crate::tokenizer::{EncodeOptions, Tokenizer};
use crate::{bail, Result};

pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";
pub const END: &str = "<|end|>";
/// Opens a system turn: a model has it once fine-tuned on conversations with system turns.
pub const SYSTEM: &str = "<|system|>";

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl std::str::FromStr for Role {
    type Err = crate::Error;

    /// A role by its name in a conversation's messages: "system", "user" or "assistant".
    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => bail!(Argument, "unknown role {name:?}: system, user or assistant"),
        })
    }
}

/// The marker ids of a chat model's tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    pub user: u32,
    pub assistant: u32,
    pub end: u32,
    /// None: the model has no system role.
    pub system: Option<u32>,
}

impl ChatTemplate {
    /// The template of `tokenizer`'s chat tokens; an [`crate::Error::Argument`] when it lacks
    /// them (the model is not a chat model: `ferrolm sft` adds them).
    pub fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let id = |t| tokenizer.token_to_id(t);
        match (id(USER), id(ASSISTANT), id(END)) {
            (Some(user), Some(assistant), Some(end)) => Ok(ChatTemplate { user, assistant, end, system: id(SYSTEM) }),
            _ => bail!(
                Argument,
                "the tokenizer lacks the chat tokens {USER} {ASSISTANT} {END}: not a model from `ferrolm sft`"
            ),
        }
    }

    /// What ends an answer: `<|end|>`, or a marker that starts another turn.
    pub fn turn_ends(&self) -> Vec<u32> {
        let others = [Some(self.user), Some(self.assistant), self.system].into_iter().flatten();
        std::iter::once(self.end).chain(others.filter(|&t| t != self.end)).collect()
    }

    /// The ids an answer is generated after: an optional system turn first, then user and
    /// assistant turns alternating from the user's, the last one the user's (to be answered).
    /// Earlier exchanges are rendered as the model was fine-tuned on them. A turn order other
    /// than that, or a system turn for a model without the role, is an argument error.
    pub fn prompt_ids(&self, tokenizer: &Tokenizer, turns: &[(Role, &str)]) -> Result<Vec<u32>> {
        self.conversation_ids(tokenizer, turns, true)
    }

    /// A conversation's ids: with `open`, a prompt (see [`ChatTemplate::prompt_ids`]); else an
    /// optional system turn and whole exchanges, each answer closed by `<|end|>` (what `ferrolm
    /// sft` trains on; none at all is empty).
    pub fn conversation_ids(&self, tokenizer: &Tokenizer, turns: &[(Role, &str)], open: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut expected = Role::User;
        for (i, &(role, text)) in turns.iter().enumerate() {
            let opening = match (role, self.system) {
                (Role::System, Some(system)) if i == 0 => system,
                (Role::System, None) if i == 0 => bail!(
                    Argument,
                    "this chat model has no system role (its tokenizer lacks {SYSTEM}): fine-tune it on \
                     conversations that have system turns (`ferrolm sft` adds the role for them; from Python, \
                     ChatTemplate.prepare(model, system=True))"
                ),
                // `expected` is never System: a system turn past the first is refused here.
                _ if role != expected => bail!(
                    Argument,
                    "turn {i} is {role:?}: a conversation is an optional system turn, then user and assistant turns \
                     alternating from the user's, so it should be {expected:?}"
                ),
                (Role::User, _) => self.user,
                _ => self.assistant,
            };
            ids.push(opening);
            ids.extend(tokenizer.encode(text, &EncodeOptions::ordinary())?);
            match role {
                Role::System => {}
                Role::User => expected = Role::Assistant,
                Role::Assistant => {
                    ids.push(self.end);
                    expected = Role::User;
                }
            }
        }
        match (open, expected) {
            (true, Role::Assistant) => ids.push(self.assistant),
            (true, _) => bail!(Argument, "a chat prompt ends with the user turn to answer"),
            (false, Role::Assistant) => {
                bail!(
                    Argument,
                    "the conversation ends with a user turn: whole exchanges end with the assistant's answer"
                )
            }
            (false, _) => {}
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{ModelKind, TrainerConfig};

    fn chars(text: &str) -> Tokenizer {
        Tokenizer::train_from_texts(&[text], TrainerConfig::new(ModelKind::Chars, 100)).unwrap()
    }

    fn chat_tokenizer(system: bool) -> Tokenizer {
        let mut tok = chars("abc xyz<|end>"); // Python: Tokenizer.train_from_iterator([...], kind="char")
        let specials: &[&str] = if system { &[USER, ASSISTANT, END, SYSTEM] } else { &[USER, ASSISTANT, END] };
        tok.add_special_tokens(specials).unwrap();
        tok
    }

    #[test]
    fn conversations_render_as_python_renders_them() {
        let tok = chat_tokenizer(true);
        let t = ChatTemplate::new(&tok).unwrap();
        let turns = [(Role::System, "x"), (Role::User, "ab"), (Role::Assistant, "c"), (Role::User, "<|end|>")];
        // Python's ChatTemplate(tok).prompt_ids of the same conversation, on the same tokenizer
        // (tests/test_posttrain.py holds the same ids): <|system|> x <|user|> a b <|assistant|> c
        // <|end|> <|user|> < | e n d | > <|assistant|>, the last user turn's look-alike as text.
        let python = [16, 9, 13, 3, 4, 14, 5, 15, 13, 1, 12, 7, 8, 6, 12, 2, 14];
        assert_eq!(t.prompt_ids(&tok, &turns).unwrap(), python);
        // Closed: the first exchange with its <|end|>, or the system turn alone.
        let closed = t.conversation_ids(&tok, &turns[..3], false).unwrap();
        assert_eq!(closed, python[..8]);
        assert_eq!(t.conversation_ids(&tok, &turns[..1], false).unwrap(), python[..2]);
        assert!(t.conversation_ids(&tok, &turns, false).is_err()); // it ends with a user turn
        assert_eq!(t.turn_ends(), vec![15, 13, 14, 16]); // as Python's turn_ends
        assert_eq!("assistant".parse::<Role>().unwrap(), Role::Assistant);
        assert!("bot".parse::<Role>().unwrap_err().to_string().contains("unknown role \"bot\""));
    }

    #[test]
    fn wrong_turn_orders_and_missing_tokens_are_refused() {
        let tok = chat_tokenizer(false);
        let t = ChatTemplate::new(&tok).unwrap();
        for turns in [
            &[(Role::Assistant, "a")][..],
            &[(Role::User, "a"), (Role::Assistant, "b")],
            &[(Role::User, "a"), (Role::User, "b")],
            &[(Role::User, "a"), (Role::System, "b")],
            &[],
        ] {
            assert!(t.prompt_ids(&tok, turns).is_err(), "{turns:?}");
        }
        let err = t.prompt_ids(&tok, &[(Role::System, "s"), (Role::User, "a")]).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
        assert_eq!(t.turn_ends(), vec![t.end, t.user, t.assistant]);
        let plain = chars("abc");
        assert!(ChatTemplate::new(&plain).unwrap_err().to_string().contains("lacks the chat tokens"));
    }
}
