//! Sharded checkpoints: `*.index.json` whose `weight_map` names, for every tensor,
//! the file beside it that holds it. Each shard is opened (mapped) once.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use super::{Checkpoint, TensorMeta, open_weights_file};

/// A checkpoint split over several files, described by an index file.
pub struct ShardedCheckpoint {
    index: PathBuf,
    shards: Vec<Box<dyn Checkpoint>>,
    tensors: Vec<TensorMeta>,
    /// Tensor name → (shard, position in `tensors`).
    by_name: HashMap<String, (usize, usize)>,
}

impl ShardedCheckpoint {
    /// Reads the index (`model.safetensors.index.json` or `pytorch_model.bin.index.json`)
    /// and opens every shard it names (`.safetensors` shards with the safetensors
    /// reader, others as PyTorch files). Every tensor of the weight map must be in its shard.
    pub fn open(index: &Path) -> anyhow::Result<Self> {
        let file = index.display();
        let text =
            std::fs::read_to_string(index).map_err(|e| anyhow!("{file}: cannot read: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| anyhow!("{file}: invalid JSON: {e}"))?;
        let map = json
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .with_context(|| format!("{file}: no \"weight_map\" object"))?;
        let mut weight_map: HashMap<&str, &str> = HashMap::with_capacity(map.len());
        for (tensor, shard) in map {
            let shard = shard.as_str().with_context(|| {
                format!("{file}: weight_map entry '{tensor}' is not a file name")
            })?;
            let plain = Path::new(shard)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
            if shard.is_empty() || !plain {
                bail!(
                    "{file}: weight_map entry '{tensor}': '{shard}' is not a file beside the index"
                );
            }
            weight_map.insert(tensor.as_str(), shard);
        }
        let shard_names: BTreeSet<&str> = weight_map.values().copied().collect();
        let dir = index.parent().unwrap_or(Path::new("."));

        let mut shards = Vec::with_capacity(shard_names.len());
        let mut tensors = Vec::with_capacity(weight_map.len());
        let mut by_name = HashMap::with_capacity(weight_map.len());
        for shard_name in shard_names {
            let shard = open_weights_file(&dir.join(shard_name))
                .map_err(|e| anyhow!("{file}: shard '{shard_name}': {e:#}"))?;
            let shard_index = shards.len();
            for meta in shard.tensors() {
                // A tensor the index assigns to another shard (or to none) is not ours here.
                if weight_map.get(meta.name.as_str()) == Some(&shard_name) {
                    by_name.insert(meta.name.clone(), (shard_index, tensors.len()));
                    tensors.push(meta.clone());
                }
            }
            shards.push(shard);
        }
        let mut missing: Vec<(&str, &str)> = weight_map
            .iter()
            .filter(|(tensor, _)| !by_name.contains_key(**tensor))
            .map(|(t, s)| (*t, *s))
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            let shown: Vec<String> = missing
                .iter()
                .take(5)
                .map(|(t, s)| format!("'{t}' (in '{s}')"))
                .collect();
            bail!(
                "{file}: {} tensor(s) of the weight map are not in their shard: {}{}",
                missing.len(),
                shown.join(", "),
                if missing.len() > 5 { ", ..." } else { "" }
            );
        }
        Ok(ShardedCheckpoint {
            index: index.to_path_buf(),
            shards,
            tensors,
            by_name,
        })
    }

    /// The shard files, in the order their tensors are listed.
    pub fn shard_sources(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.source()).collect()
    }
}

impl Checkpoint for ShardedCheckpoint {
    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn read_f32(&self, name: &str) -> anyhow::Result<Vec<f32>> {
        let &(shard, _) = self
            .by_name
            .get(name)
            .with_context(|| format!("{}: no tensor named '{name}'", self.index.display()))?;
        self.shards[shard].read_f32(name)
    }

    fn source(&self) -> &Path {
        &self.index
    }

    fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.by_name.get(name).map(|&(_, i)| &self.tensors[i])
    }
}
