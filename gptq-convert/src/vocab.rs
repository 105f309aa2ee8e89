//! The checkpoint's tokenizer (`vocab.json` + `merges.txt`, or
//! `tokenizer.json`) as GGUF stores it: tokens by id, merges by rank, a type
//! per token.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use gptq_core::model::layout::VocabData;
use serde_json::Value;

/// llama.cpp's token types.
pub const TOKEN_NORMAL: i32 = 1;
/// A special token (`<|endoftext|>`).
pub const TOKEN_CONTROL: i32 = 3;
/// A token added by the user that is not special.
pub const TOKEN_USER_DEFINED: i32 = 4;
/// Padding that fills the vocabulary up to the embedding's size.
pub const TOKEN_UNUSED: i32 = 5;

/// Reads `vocab.json` + `merges.txt` when both exist, else `tokenizer.json`.
/// `n_vocab` is the embedding's row count: missing ids up to it are filled
/// with unused padding tokens; ids beyond it are an error. `bos` and `eos`
/// become control tokens.
pub fn read_vocab(dir: &Path, n_vocab: usize, bos: u32, eos: u32) -> Result<VocabData> {
    let (vj, mt, tj) = (
        dir.join("vocab.json"),
        dir.join("merges.txt"),
        dir.join("tokenizer.json"),
    );
    if vj.is_file() && mt.is_file() {
        let vocab = read_text(&vj)?;
        let merges = read_text(&mt)?;
        vocab_from_files(&vocab, &merges, n_vocab, bos, eos)
            .with_context(|| format!("{} + {}", vj.display(), mt.display()))
    } else if tj.is_file() {
        let text = read_text(&tj)?;
        vocab_from_tokenizer_json(&text, n_vocab, bos, eos)
            .with_context(|| tj.display().to_string())
    } else {
        bail!(
            "{}: no tokenizer found (looked for vocab.json + merges.txt, and tokenizer.json)",
            dir.display()
        );
    }
}

/// The vocabulary from the texts of `vocab.json` and `merges.txt` (see
/// [`read_vocab`] for `n_vocab`, `bos` and `eos`).
pub fn vocab_from_files(
    vocab_json: &str,
    merges: &str,
    n_vocab: usize,
    bos: u32,
    eos: u32,
) -> Result<VocabData> {
    let v: Value = serde_json::from_str(vocab_json).context("vocab.json: not valid JSON")?;
    let map = vocab_map(&v).context("vocab.json")?;
    finish(map, merges_txt(merges), &[], n_vocab, bos, eos)
}

/// The vocabulary from the text of `tokenizer.json` (see [`read_vocab`] for
/// `n_vocab`, `bos` and `eos`).
pub fn vocab_from_tokenizer_json(
    text: &str,
    n_vocab: usize,
    bos: u32,
    eos: u32,
) -> Result<VocabData> {
    let v: Value = serde_json::from_str(text).context("not valid JSON")?;
    let (map, merges, added) = tokenizer_json(&v)?;
    finish(map, merges, &added, n_vocab, bos, eos)
}

fn finish(
    map: VocabMap,
    merges: Vec<String>,
    added: &[(String, u32, bool)],
    n_vocab: usize,
    bos: u32,
    eos: u32,
) -> Result<VocabData> {
    let (tokens, types, merges) = build(map, merges, added, n_vocab, &[bos, eos])?;
    Ok(VocabData {
        tokens,
        types,
        merges,
        bos,
        eos,
    })
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn vocab_map(v: &Value) -> Result<Vec<(String, u32)>> {
    let obj = v
        .as_object()
        .context("the vocabulary must be a JSON object of token → id")?;
    obj.iter()
        .map(|(k, id)| {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .with_context(|| format!("token {k:?} has id {id}, not a token id"))?;
            Ok((k.clone(), id))
        })
        .collect()
}

fn merges_txt(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

type Added = Vec<(String, u32, bool)>;
/// A vocabulary as (token text, id) pairs.
type VocabMap = Vec<(String, u32)>;

fn tokenizer_json(v: &Value) -> Result<(VocabMap, Vec<String>, Added)> {
    let model = v.get("model").context("no 'model' object")?;
    if let Some(t) = model.get("type").and_then(Value::as_str)
        && t != "BPE"
    {
        bail!("tokenizer model type is '{t}', GPT-2 needs 'BPE'");
    }
    let map = vocab_map(model.get("vocab").context("no 'model.vocab'")?)?;
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .context("no 'model.merges' list")?
        .iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Ok(format!("{a} {b}")),
                _ => bail!("merge {i} is not a pair of strings"),
            },
            _ => bail!("merge {i} is neither a string nor a pair"),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut added = Vec::new();
    for a in v
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let content = a
            .get("content")
            .and_then(Value::as_str)
            .context("added token without 'content'")?;
        let id = a
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .with_context(|| format!("added token {content:?} without a valid 'id'"))?;
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        added.push((content.to_string(), id, special));
    }
    Ok((map, merges, added))
}

type Built = (Vec<String>, Vec<i32>, Vec<String>);

fn build(
    map: Vec<(String, u32)>,
    merges: Vec<String>,
    added: &[(String, u32, bool)],
    n_vocab: usize,
    special_ids: &[u32],
) -> Result<Built> {
    // Ids are u32: a larger vocabulary could not be numbered (and the padding
    // below is sized from `n_vocab`, which the caller has checked against the
    // token embedding's rows).
    if u32::try_from(n_vocab).is_err() {
        bail!("a vocabulary of {n_vocab} tokens does not fit 32-bit token ids");
    }
    let mut by_id: HashMap<u32, (String, i32)> = HashMap::with_capacity(map.len());
    for (tok, id) in map {
        if let Some((prev, _)) = by_id.insert(id, (tok.clone(), TOKEN_NORMAL)) {
            bail!("tokens {prev:?} and {tok:?} share id {id}");
        }
    }
    for (tok, id, special) in added {
        let ty = if *special {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
        by_id.insert(*id, (tok.clone(), ty));
    }
    if let Some(&max) = by_id.keys().max()
        && max as usize >= n_vocab
    {
        bail!("token id {max} is outside the model's vocabulary of {n_vocab} (config vocab_size)");
    }
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    for id in 0..n_vocab as u32 {
        match by_id.remove(&id) {
            Some((tok, ty)) => {
                tokens.push(tok);
                types.push(if special_ids.contains(&id) {
                    TOKEN_CONTROL
                } else {
                    ty
                });
            }
            None => {
                tokens.push(format!("[PAD{id}]"));
                types.push(TOKEN_UNUSED);
            }
        }
    }
    for (i, m) in merges.iter().enumerate() {
        if m.split(' ').count() != 2 {
            bail!("merge {i} ({m:?}) is not two symbols separated by one space");
        }
    }
    Ok((tokens, types, merges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_from_both_forms_alike() {
        let vocab = json!({"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3});
        let from_files = build(
            vocab_map(&vocab).unwrap(),
            merges_txt("#version: 0.2\na b\n"),
            &[],
            4,
            &[3],
        )
        .unwrap();
        let tj = json!({"model": {"type": "BPE", "vocab": vocab, "merges": [["a", "b"]]},
                        "added_tokens": [{"id": 3, "content": "<|endoftext|>", "special": true}]});
        let (m, mg, ad) = tokenizer_json(&tj).unwrap();
        let from_json = build(m, mg, &ad, 4, &[3]).unwrap();
        assert_eq!(from_files, from_json);
        assert_eq!(from_files.1, vec![1, 1, 1, 3]);
        assert_eq!(from_files.2, vec!["a b"]);
    }

    #[test]
    fn pads_and_rejects() {
        let v = build(vec![("a".into(), 0)], vec![], &[], 3, &[]).unwrap();
        assert_eq!(v.0, vec!["a", "[PAD1]", "[PAD2]"]);
        assert_eq!(v.1, vec![1, 5, 5]);
        assert!(build(vec![("a".into(), 5)], vec![], &[], 3, &[]).is_err());
        assert!(build(vec![("a".into(), 0), ("b".into(), 0)], vec![], &[], 3, &[]).is_err());
        assert!(build(vec![("a".into(), 0)], vec!["a b c".into()], &[], 1, &[]).is_err());
    }
}
