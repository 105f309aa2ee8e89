//! A turn: bring the session to the running text, then let the model continue
//! it, streaming what it writes, until the turn's budget, end of text, a
//! reverse prompt, or Ctrl-C.
//!
//! Tokenization rule at the turn boundary: the session's tokens are always
//! the tokenization of the whole running text (after `<|endoftext|>` when the
//! session started from no text). Each turn re-tokenizes the text, keeps the
//! cached prefix that agrees with it, and evaluates only from the first token
//! that differs. So a turn sees exactly what a fresh `gptq complete -p TEXT`
//! would, and usually only the new text is evaluated.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use gptq_core::{Error as CoreError, FinishReason, GenerateOptions};

use super::state::{Chat, TurnStats};

/// How a turn ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnEnd {
    /// Budget or end of text: the person continues from the end.
    Done,
    /// A reverse prompt: the person continues after it.
    Reverse(String),
    /// Ctrl-C.
    Cancelled,
}

impl Chat {
    fn eos(&self) -> u32 {
        let tok = self.model.tokenizer();
        tok.eos().or(tok.bos()).unwrap_or(0)
    }

    /// The tokens the running text stands for.
    fn target_tokens(&mut self) -> Vec<u32> {
        if self.text.is_empty() {
            self.eos_prefix = true;
        }
        let mut t = Vec::new();
        if self.eos_prefix {
            t.push(self.eos());
        }
        t.extend(self.model.tokenizer().encode_with_special(&self.text));
        t
    }

    /// Drops the start of the text so that what is left fits in half the
    /// context; the session is cleared (GPT-2 positions are absolute, so the
    /// kept window is evaluated again from position 0).
    fn keep_recent_window(&mut self) -> Result<()> {
        let n_ctx = self.session.n_ctx();
        let keep = (n_ctx / 2).max(1);
        let tokens = self.model.tokenizer().encode_with_special(&self.text);
        let cut = tokens.len().saturating_sub(keep);
        let kept_bytes = self.model.tokenizer().decode_bytes(&tokens[cut..])?.len();
        let mut start = self.text.len().saturating_sub(kept_bytes);
        while !self.text.is_char_boundary(start) {
            start += 1;
        }
        let dropped = self.text[..start].chars().count();
        self.text.drain(..start);
        self.eos_prefix = false;
        self.session.reset();
        self.last_turn = None;
        eprintln!(
            "\ngptq: context full ({n_ctx} tokens): keeping the most recent {} tokens of text (dropped {dropped} characters) and evaluating them again",
            tokens.len() - cut
        );
        Ok(())
    }

    /// Brings the session to the running text: keeps the agreeing cached
    /// prefix and evaluates the rest, leaving the logits of the last token.
    /// Returns false when cancelled.
    pub(super) fn sync(&mut self) -> Result<bool> {
        let mut target = self.target_tokens();
        if target.len() >= self.session.n_ctx() {
            self.keep_recent_window()?;
            target = self.target_tokens();
        }
        let cached = self.session.tokens();
        let mut p = cached
            .iter()
            .zip(&target)
            .take_while(|(a, b)| a == b)
            .count();
        if p == target.len() && p == cached.len() && self.session.logits().is_some() {
            return Ok(true);
        }
        // At least the last token is evaluated, for its logits.
        p = p.min(target.len() - 1);
        let redo = cached.len().saturating_sub(p).min(target.len() - p);
        self.session.rewind(cached.len() - p)?;
        let t = Instant::now();
        let r = self.session.feed(&target[p..]);
        self.stats.prompt.time += t.elapsed();
        match r {
            Ok(_) => {
                self.stats.prompt.n += target.len() - p;
                self.stats.reevaluated += redo;
                Ok(true)
            }
            Err(CoreError::Cancelled) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Continues the running text, streaming what the model writes to `out`.
    pub fn respond(&mut self, out: &mut dyn Write, enter: Instant) -> Result<TurnEnd> {
        self.stats = TurnStats::default();
        let mut budget = self.settings.n_predict.unwrap_or(usize::MAX);
        loop {
            if !self.sync()? {
                return Ok(TurnEnd::Cancelled);
            }
            let opts = self.settings.reverse.iter().fold(
                GenerateOptions::max_tokens(budget).stop_at_eos(!self.settings.ignore_eos),
                |opts, r| opts.stop(r.as_str()),
            );
            let t = Instant::now();
            let mut pieces = self.session.generate(&mut self.sampler, opts.clone());
            let mut result: Result<()> = Ok(());
            for piece in pieces.by_ref() {
                match piece {
                    Ok(piece) => {
                        if self.stats.first_token.is_none() {
                            self.stats.first_token = Some(enter.elapsed());
                        }
                        self.text.push_str(&piece);
                        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
                            result = Err(e.into());
                            break;
                        }
                    }
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
            let n = pieces.tokens().len();
            let reason = pieces.finish_reason();
            drop(pieces);
            self.stats.generation.n += n;
            self.stats.generation.time += t.elapsed();
            result?;
            budget = budget.saturating_sub(n);
            match reason {
                Some(FinishReason::Stop(i)) => {
                    let r = opts.stop_strings()[i].clone();
                    self.text.push_str(&r);
                    return Ok(TurnEnd::Reverse(r));
                }
                Some(FinishReason::Cancelled) => return Ok(TurnEnd::Cancelled),
                // With a token budget (-n N) a turn goes on past a full
                // context; with -n -1 it ends there (the next turn makes room).
                Some(FinishReason::ContextFull)
                    if self.settings.n_predict.is_some() && budget > 0 =>
                {
                    self.keep_recent_window()?;
                }
                _ => return Ok(TurnEnd::Done),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::tests::chat;
    use super::*;

    #[test]
    fn session_tokens_are_the_tokenized_text_across_a_joined_word() {
        let mut c = chat();
        c.text = "The weather is hel".into();
        assert!(c.sync().unwrap());
        let before = c.session.len();
        c.stats = TurnStats::default();
        // The new text joins the last word: "hel" + "lo" is re-tokenized.
        c.text.push_str("lo world");
        assert!(c.sync().unwrap());
        let whole = c.model.tokenizer().encode(&c.text);
        assert_eq!(c.session.tokens(), &whole[..]);
        assert!(c.stats.reevaluated >= 1, "{:?}", c.stats);
        assert!(
            c.stats.prompt.n < whole.len(),
            "the agreeing prefix was kept"
        );
        assert!(before > 0);
    }

    #[test]
    fn a_turn_appends_the_answer_and_keeps_the_cache() {
        let mut c = chat();
        c.text = "Once upon a time".into();
        let mut out = Vec::new();
        assert_eq!(c.respond(&mut out, Instant::now()).unwrap(), TurnEnd::Done);
        let answer = String::from_utf8(out).unwrap();
        assert_eq!(c.text, format!("Once upon a time{answer}"));
        assert_eq!(c.stats.generation.n, 8);
        assert!(c.stats.first_token.is_some());
        // The next turn evaluates only its own tokens.
        c.text.push_str(" The end.\n");
        let n_before = c.session.len();
        let mut out = Vec::new();
        c.respond(&mut out, Instant::now()).unwrap();
        assert_eq!(c.stats.reevaluated, 0);
        assert_eq!(
            c.stats.prompt.n,
            c.model.tokenizer().encode(&c.text).len() - 8 - n_before
        );
    }
}
