//! What ollama does with a prompt longer than the request's context
//! (`num_ctx`): it answers from the part that fits.
//!
//! - `/api/chat` first drops whole messages, oldest first: the last message
//!   and every system (or developer) message before the kept ones always
//!   stay ([`recent_messages`]).
//! - Then (and for `/api/generate`) the tokens: the first `num_keep`
//!   (ollama's default 4) stay, and the oldest ones after them go until the
//!   rest fits ([`keep_fitting`]).
//!
//! ollama does this instead of failing, and its clients rely on it (a long
//! document sent with the default `num_ctx` is answered from its end).
//!
//! A prompt that fits the context with room for one more token is fed as
//! it is. ollama cuts one that does not to the whole context and then,
//! generating, shifts the context (drops half of what follows the kept
//! start) to make room. With `--context-shift` gptq does the same (its
//! shift reads the kept part again: GPT-2's positions are learned), but for
//! the one token it needs free to read the prompt. Without it gptq does not
//! shift, so the cut leaves the room at once: the answer's `num_predict`
//! tokens, up to half the context, half when unlimited
//! ([`Plan::cut_to`](super::options::Plan::cut_to)). With
//! `"truncate": false` a prompt that does not fit is refused, as in ollama.

use super::super::chat_template::Message;
use super::super::error::ApiError;

/// ollama's default `num_keep`.
pub(super) const NUM_KEEP: i64 = 4;

/// `ids` cut to at most `limit` tokens (`limit` ≥ 1) as ollama's runner
/// cuts an input that does not fit: the first `num_keep` tokens (all of
/// them when negative, and at most `limit - 1`, so that at least one token
/// of the end stays), then the last ones that fit.
pub(super) fn keep_fitting(mut ids: Vec<u32>, limit: usize, num_keep: i64) -> Vec<u32> {
    if ids.len() <= limit {
        return ids;
    }
    let keep = usize::try_from(num_keep)
        .unwrap_or(ids.len())
        .min(limit.saturating_sub(1));
    let discard = ids.len() - limit;
    ids.drain(keep..keep + discard);
    ids
}

/// The messages ollama renders for a conversation: the newest suffix
/// `messages[i..]` whose transcript (with the system messages before `i`
/// in front) `fits`, at least the last message. `fits` is monotone (fewer
/// messages, fewer tokens), so the oldest fitting start is found by
/// bisection: a few renderings, not one per message.
pub(super) fn recent_messages(
    messages: &[Message],
    mut fits: impl FnMut(&[Message]) -> Result<bool, ApiError>,
) -> Result<Vec<Message>, ApiError> {
    let from = |i: usize| -> Vec<Message> {
        // `developer` messages are system text too (see `chat_template`).
        let system = messages[..i]
            .iter()
            .filter(|m| m.role == "system" || m.role == "developer");
        system.chain(&messages[i..]).cloned().collect()
    };
    let last = messages.len().saturating_sub(1);
    // The oldest start that fits lies in `lo..=hi`; `hi` (the last message
    // alone) is taken whether it fits or not.
    let (mut lo, mut hi) = (0, last);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(&from(mid))? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(from(hi))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn tokens_keep_the_first_and_the_last() {
        let ids: Vec<u32> = (0..10).collect();
        assert_eq!(keep_fitting(ids.clone(), 10, 4), ids);
        assert_eq!(keep_fitting(ids.clone(), 6, 4), vec![0, 1, 2, 3, 8, 9]);
        // At most limit - 1 kept, so the last token always stays.
        assert_eq!(keep_fitting(ids.clone(), 3, 4), vec![0, 1, 9]);
        assert_eq!(keep_fitting(ids.clone(), 3, -1), vec![0, 1, 9]);
        assert_eq!(keep_fitting(ids.clone(), 4, 0), vec![6, 7, 8, 9]);
        assert_eq!(keep_fitting(ids, 1, 4), vec![9]);
    }

    fn msg(role: &str, text: &str) -> Message {
        Message {
            role: role.into(),
            content: Value::String(text.into()),
        }
    }

    #[test]
    fn old_messages_go_first_system_ones_stay() {
        let m = vec![
            msg("system", "s"),
            msg("user", "a"),
            msg("assistant", "b"),
            msg("user", "c"),
            msg("assistant", "d"),
            msg("developer", "e"),
            msg("user", "f"),
        ];
        let text = |v: &[Message]| {
            v.iter()
                .map(|m| m.content.as_str().unwrap_or_default())
                .collect::<String>()
        };
        for budget in 0..9 {
            let got = recent_messages(&m, |v| Ok(v.len() <= budget)).unwrap();
            // What ollama's scan from the newest message keeps.
            let want = match budget {
                // The developer message is system text: kept too.
                0..=3 => "sef",
                4 => "sdef",
                5 => "scdef",
                6 => "sbcdef",
                _ => "sabcdef",
            };
            assert_eq!(text(&got), want, "budget {budget}");
        }
        assert_eq!(
            text(&recent_messages(&m[1..2], |_| Ok(false)).unwrap()),
            "a"
        );
    }
}
