//! Model implementations, one per file, behind one [`Decoder`] trait.
//!
//! - `llama_gguf`: our CPU SIMD kernels over repacked GGUF weights (the
//!   default, and the fastest on a CPU).
//! - `llama_device`: the same decoder on candle tensors, for any candle
//!   device: CUDA on a GPU host, or the CPU to check that path without one.

use crate::error::Result;
use crate::gguf::LlamaConfig;

pub mod llama_device;
pub mod llama_gguf;

/// Which logits a sequence of the batch needs back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (a prefill chunk that is not the prompt's last).
    None,
    /// The last token's (next-token distribution).
    Last,
    /// Every token's (prompt logprobs; the last row is the next-token one).
    All,
}

/// One sequence's part of a forward batch.
#[derive(Debug)]
pub struct BatchSeq<'a, C> {
    /// Tokens to run, at positions `start_pos..start_pos + tokens.len()`.
    pub tokens: &'a [u32],
    /// Position of the first token; the cache must hold exactly this many.
    pub start_pos: usize,
    /// This sequence's cache, extended by the call.
    pub cache: &'a mut C,
    /// Which logits to return.
    pub logits: Logits,
}

/// A sequence's key/value cache, as the engine sees it.
pub trait SequenceCache: Send {
    /// Positions written so far.
    fn len(&self) -> usize;
    /// Whether nothing has been written.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes currently allocated.
    fn allocated_bytes(&self) -> usize;
    /// Make this empty cache hold the first `len` positions of `from`: a
    /// prompt prefilled once, copied into the other sequences that share it.
    fn copy_prefix(&mut self, from: &Self, len: usize) -> crate::error::Result<()>
    where
        Self: Sized;
}

/// A loaded decoder the engine can drive: stateless across calls, every
/// sequence's state lives in its own cache.
pub trait Decoder: Send + 'static {
    /// Per-sequence key/value cache.
    type Cache: SequenceCache;
    /// Buffers reused from one step to the next.
    type Scratch: Default;

    /// Hyperparameters.
    fn config(&self) -> &LlamaConfig;
    /// Bytes of weights held in memory.
    fn weight_bytes(&self) -> usize;
    /// An empty cache for one sequence of at most `positions` positions
    /// (its prompt and `max_tokens`: what admission reserved for it), with
    /// room for all of them from the start: growing later would copy, with
    /// both copies alive past what the KV budget counts.
    fn new_cache(&self, positions: usize) -> Result<Self::Cache>;
    /// Run one batch. Extends each sequence's cache by its tokens and writes
    /// the requested logits to `logits`, in batch order (`Last`: one row,
    /// `All`: one row per token), `vocab_size` floats per row.
    fn forward(
        &self,
        batch: &mut [BatchSeq<'_, Self::Cache>],
        scratch: &mut Self::Scratch,
        logits: &mut Vec<f32>,
    ) -> Result<()>;
}

/// Checks every backend makes before a forward pass: the cache must hold
/// exactly the positions before the batch, and every token must exist.
pub(crate) fn check_batch<C: SequenceCache>(batch: &[BatchSeq<'_, C>], vocab_size: usize) -> Result<()> {
    use crate::error::Error;
    for b in batch {
        if b.cache.len() != b.start_pos {
            return Err(Error::InvalidRequest {
                param: "start_pos",
                message: format!("cache holds {} positions, batch starts at {}", b.cache.len(), b.start_pos),
            });
        }
        if let Some(&bad) = b.tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(Error::InvalidRequest {
                param: "prompt",
                message: format!("token id {bad} is outside the vocabulary (size {vocab_size})"),
            });
        }
    }
    Ok(())
}

/// Rows of the batch output whose logits were asked for, in batch order.
pub(crate) fn logit_rows<C>(batch: &[BatchSeq<'_, C>], rows: &mut Vec<usize>) {
    rows.clear();
    let mut t = 0;
    for b in batch {
        let n = b.tokens.len();
        match b.logits {
            Logits::None => {}
            Logits::Last => rows.push(t + n - 1),
            Logits::All => rows.extend(t..t + n),
        }
        t += n;
    }
}
