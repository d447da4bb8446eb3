//! A real decoder (SmolLM2 on our kernels) that fails on request, the way
//! a backend bug would: for testing that the engine contains faults.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use inference::gguf::GgufFile;
use inference::models::llama_gguf::LlamaModel;
use inference::models::{BatchSeq, Decoder};

/// A fault to inject, once each, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next forward pass writes half the logits it should: reading
    /// them (sampling, outside the forward pass) panics.
    ShortLogits,
    /// The next new sequence's cache cannot be made: a panic in the engine
    /// loop itself, outside any sequence.
    PanicInNewCache,
}

/// Arms faults in a running [`Faulty`] decoder.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<VecDeque<Fault>>>);

impl Faults {
    /// Inject `fault` at its next occasion.
    pub fn arm(&self, fault: Fault) {
        self.0.lock().expect("faults").push_back(fault);
    }

    fn take(&self, fault: Fault) -> bool {
        let mut q = self.0.lock().expect("faults");
        if q.front() == Some(&fault) {
            q.pop_front();
            true
        } else {
            false
        }
    }
}

/// SmolLM2 with injectable faults.
#[derive(Debug)]
pub struct Faulty {
    inner: LlamaModel,
    faults: Faults,
}

impl Faulty {
    /// The real model, and the handle that arms its faults.
    pub fn smollm2() -> (Self, Faults) {
        let mut g = GgufFile::open(&crate::smollm2_path()).expect("gguf");
        let faults = Faults::default();
        (Self { inner: LlamaModel::from_gguf(&mut g).expect("model"), faults: faults.clone() }, faults)
    }
}

impl Decoder for Faulty {
    type Cache = <LlamaModel as Decoder>::Cache;
    type Scratch = <LlamaModel as Decoder>::Scratch;

    fn config(&self) -> &inference::gguf::LlamaConfig {
        self.inner.config()
    }

    fn weight_bytes(&self) -> usize {
        self.inner.weight_bytes()
    }

    #[allow(clippy::panic, reason = "the fault this decoder exists to inject")]
    fn new_cache(&self, positions: usize) -> inference::Result<Self::Cache> {
        if self.faults.take(Fault::PanicInNewCache) {
            panic!("injected: no cache for a new sequence");
        }
        self.inner.new_cache(positions)
    }

    fn forward(&self, batch: &mut [BatchSeq<'_, Self::Cache>], scratch: &mut Self::Scratch, logits: &mut Vec<f32>) -> inference::Result<()> {
        self.inner.forward(batch, scratch, logits)?;
        if self.faults.take(Fault::ShortLogits) {
            logits.truncate(logits.len() / 2);
        }
        Ok(())
    }
}
