//! Which slot a request takes, and how much of the slot's cache it reuses.
//!
//! A slot keeps the tokens of its last request in its KV cache. A new
//! request takes the free slot whose cache shares the longest reusable
//! prefix with its prompt, so a conversation that grows turn by turn, or
//! requests sharing a long preamble, skip re-evaluating that prefix.
//!
//! Reuse is exact: a request gives the same tokens as on a fresh slot (and
//! as `gptq complete`), because only whole `n_batch` chunks of earlier
//! *prompt processing* starting at position 0 are reused, and evaluation
//! resumes at a chunk boundary. Those are the chunks a fresh evaluation
//! computes too, with the same products; positions computed otherwise
//! (decoded tokens, a prompt's last partial chunk) round differently in
//! their last bits, so they are evaluated again.

/// What the scheduler knows about a slot when placing a request.
#[derive(Clone, Copy, Debug)]
pub struct SlotView<'a> {
    /// Whether the slot is free.
    pub free: bool,
    /// Tokens in its cache.
    pub tokens: &'a [u32],
    /// Leading cached positions that are reusable exactly (a multiple of
    /// `n_batch`).
    pub exact: usize,
}

/// Length of the common prefix of `a` and `b`.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Tokens of `slot`'s cache a request with `prompt` can keep: the common
/// prefix, cut to the exactly reusable chunks and to less than the whole
/// prompt (its last token must be evaluated for its logits).
pub fn reusable(slot: &SlotView<'_>, prompt: &[u32], n_batch: usize) -> usize {
    let common = common_prefix(slot.tokens, prompt).min(slot.exact);
    let common = common.min(prompt.len().saturating_sub(1));
    common - common % n_batch.max(1)
}

/// The free slot for `prompt` and the tokens it reuses: the longest
/// reusable prefix; among equals, the slot holding the fewest tokens (which
/// keeps longer caches for requests that may extend them). `None` when no
/// slot is free.
pub fn choose(
    slots: &[SlotView<'_>],
    prompt: &[u32],
    n_batch: usize,
    reuse: bool,
) -> Option<(usize, usize)> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.free)
        .map(|(i, s)| {
            let r = if reuse {
                reusable(s, prompt, n_batch)
            } else {
                0
            };
            (i, r, s.tokens.len())
        })
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)).then(b.0.cmp(&a.0)))
        .map(|(i, r, _)| (i, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(free: bool, tokens: &[u32], exact: usize) -> SlotView<'_> {
        SlotView {
            free,
            tokens,
            exact,
        }
    }

    #[test]
    fn reuse_is_whole_exact_chunks_short_of_the_prompt() {
        let cache: Vec<u32> = (0..20).collect();
        let prompt: Vec<u32> = (0..30).collect();
        assert_eq!(reusable(&view(true, &cache, 16), &prompt, 4), 16);
        assert_eq!(reusable(&view(true, &cache, 8), &prompt, 4), 8);
        // The common prefix (20) cut to chunks of 8.
        assert_eq!(reusable(&view(true, &cache, 16), &prompt, 8), 16);
        // The same prompt again: its last token is evaluated anew.
        assert_eq!(reusable(&view(true, &cache, 20), &cache, 4), 16);
        assert_eq!(reusable(&view(true, &cache, 20), &cache, 1), 19);
        // Nothing shared.
        assert_eq!(reusable(&view(true, &[9, 9], 2), &prompt, 1), 0);
    }

    #[test]
    fn choose_prefers_longest_reuse_then_smallest_cache() {
        let a: Vec<u32> = (0..8).collect();
        let b: Vec<u32> = (0..16).collect();
        let c: Vec<u32> = vec![7; 40];
        let prompt: Vec<u32> = (0..20).collect();
        let slots = [view(true, &a, 8), view(true, &b, 16), view(true, &c, 40)];
        assert_eq!(choose(&slots, &prompt, 4, true), Some((1, 16)));
        assert_eq!(choose(&slots, &prompt, 4, false), Some((0, 0)));
        let busy = [view(false, &b, 16), view(true, &c, 40)];
        assert_eq!(choose(&busy, &prompt, 4, true), Some((1, 0)));
        assert_eq!(choose(&[view(false, &a, 8)], &prompt, 4, true), None);
    }
}
