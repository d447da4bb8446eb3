//! Capacity on the caller's side: a slot and a KV reservation per request,
//! refused at once (`Overloaded`) with an estimated `retry_after`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Capacity bookkeeping shared by handles and the engine thread.
#[derive(Debug)]
pub(super) struct Admission {
    pub(super) slots: Arc<Semaphore>,
    pub(super) kv_budget: usize,
    pub(super) kv_reserved: AtomicUsize,
    /// Generation tokens admitted but not yet produced (for retry estimates).
    pub(super) outstanding_tokens: AtomicUsize,
    /// Sequences decoded together (the rest of the slots wait).
    pub(super) max_running: usize,
    /// Running + waiting slots.
    pub(super) total_slots: usize,
}

/// Capacity held by one request; released when the sequence is dropped.
#[derive(Debug)]
pub(super) struct Reservation {
    pub(super) admission: Arc<Admission>,
    pub(super) kv_bytes: usize,
    pub(super) tokens: usize,
    pub(super) _slot: OwnedSemaphorePermit,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.admission.kv_reserved.fetch_sub(self.kv_bytes, Ordering::AcqRel);
        self.admission.outstanding_tokens.fetch_sub(self.tokens, Ordering::AcqRel);
    }
}

impl Admission {
    pub(super) fn reserve(self: &Arc<Self>, kv_bytes: usize, tokens: usize, rate: f64) -> Result<Reservation> {
        let retry_after = || {
            // Time for the work already admitted to drain at the current rate.
            let pending = self.outstanding_tokens.load(Ordering::Acquire) as f64;
            let secs = if rate > 0.0 { pending / rate } else { 1.0 };
            Duration::from_secs_f64(secs.clamp(1.0, 120.0).ceil())
        };
        let slot = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| Error::Overloaded {
            reason: "too many requests",
            retry_after: retry_after(),
        })?;
        let mut cur = self.kv_reserved.load(Ordering::Acquire);
        loop {
            if cur + kv_bytes > self.kv_budget {
                return Err(Error::Overloaded {
                    reason: "kv cache full",
                    retry_after: retry_after(),
                });
            }
            match self
                .kv_reserved
                .compare_exchange_weak(cur, cur + kv_bytes, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.outstanding_tokens.fetch_add(tokens, Ordering::AcqRel);
        Ok(Reservation {
            admission: Arc::clone(self),
            kv_bytes,
            tokens,
            _slot: slot,
        })
    }
}
