//! GPT-2 byte-level BPE tokenizer.
