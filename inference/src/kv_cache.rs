//! Per-sequence key/value cache.
//!
//! Each sequence owns one buffer per layer for K and one for V, rows of
//! `kv_dim` floats by position. We chose per-sequence buffers over paged
//! blocks: on the CPU, attention reads each row sequentially from one
//! contiguous buffer (no block table indirection), a finished sequence frees
//! its memory at once by being dropped, and fragmentation is not a concern
//! because admission reserves every sequence's worst case (prompt +
//! max_tokens) up front against the configured KV budget (see `engine`), so
//! the cache never needs to preempt. Each buffer's capacity is that
//! reservation from the start, so it is never reallocated (and the pages
//! are only touched, on Linux, as positions are written); the positions in
//! use grow in steps of [`GROW_TOKENS`] within it.

/// Positions added at a time when a buffer grows.
pub const GROW_TOKENS: usize = 64;

/// K and V for every layer of one sequence.
#[derive(Debug)]
pub struct KvCache {
    kv_dim: usize,
    len: usize,
    /// Positions in use in every buffer (zeroed, ready to write).
    cap: usize,
    /// Positions the buffers have room for without reallocating.
    room: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    /// An empty cache for a model with `n_layer` layers of `kv_dim` wide
    /// rows, with room for `positions` positions.
    pub fn new(n_layer: usize, kv_dim: usize, positions: usize) -> Self {
        let buffers = || (0..n_layer).map(|_| Vec::with_capacity(positions * kv_dim)).collect();
        Self { kv_dim, len: 0, cap: 0, room: positions, k: buffers(), v: buffers() }
    }

    /// Bytes one position costs across all layers (K and V, f32).
    pub fn bytes_per_token(n_layer: usize, kv_dim: usize) -> usize {
        2 * n_layer * kv_dim * std::mem::size_of::<f32>()
    }

    /// Positions written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Make room for `positions` positions.
    pub fn reserve(&mut self, positions: usize) {
        if positions <= self.cap {
            return;
        }
        // In steps, but never past the room made at the start (that would
        // reallocate) unless more positions are asked for than it holds.
        let stepped = positions.div_ceil(GROW_TOKENS) * GROW_TOKENS;
        let cap = if positions <= self.room { stepped.min(self.room) } else { stepped };
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            buf.resize(cap * self.kv_dim, 0.0);
        }
        self.cap = cap;
    }

    /// Write K and V of position `pos` in `layer`. Positions are written in
    /// order; the last layer's write of a position makes it count.
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        self.reserve(pos + 1);
        let r = pos * self.kv_dim..(pos + 1) * self.kv_dim;
        self.k[layer][r.clone()].copy_from_slice(k);
        self.v[layer][r].copy_from_slice(v);
        if layer + 1 == self.k.len() {
            self.len = self.len.max(pos + 1);
        }
    }

    /// All K and V rows of a layer (at least `len()` positions; during a
    /// forward pass also the positions written in this step).
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.k[layer], &self.v[layer])
    }

    /// Bytes currently allocated.
    pub fn allocated_bytes(&self) -> usize {
        2 * self.k.len() * self.cap * self.kv_dim * std::mem::size_of::<f32>()
    }
}

impl crate::models::SequenceCache for KvCache {
    fn len(&self) -> usize {
        self.len
    }

    fn allocated_bytes(&self) -> usize {
        KvCache::allocated_bytes(self)
    }

    fn copy_prefix(&mut self, from: &Self, len: usize) -> crate::error::Result<()> {
        if from.len < len || from.kv_dim != self.kv_dim || from.k.len() != self.k.len() {
            return Err(crate::error::Error::Backend(format!("cannot copy {len} positions from a cache of {}", from.len)));
        }
        self.reserve(len);
        let n = len * self.kv_dim;
        for (dst, src) in self.k.iter_mut().zip(&from.k).chain(self.v.iter_mut().zip(&from.v)) {
            dst[..n].copy_from_slice(&src[..n]);
        }
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_in_steps_and_counts_positions_after_last_layer() {
        let mut c = KvCache::new(2, 4, 100);
        c.write(0, 0, &[1.0; 4], &[2.0; 4]);
        assert_eq!(c.len(), 0);
        c.write(1, 0, &[3.0; 4], &[4.0; 4]);
        assert_eq!(c.len(), 1);
        assert_eq!(c.allocated_bytes(), 2 * 2 * GROW_TOKENS * 4 * 4);
        let (k, v) = c.layer(1);
        assert_eq!(&k[..4], &[3.0; 4]);
        assert_eq!(&v[..4], &[4.0; 4]);
    }

    /// Growing stays within the room made at the start: no buffer is ever
    /// reallocated, and none holds more than the sequence's reservation.
    #[test]
    fn never_reallocates_within_its_reservation() {
        let mut c = KvCache::new(1, 4, 70);
        let at = c.k[0].as_ptr();
        for pos in 0..70 {
            c.write(0, pos, &[1.0; 4], &[1.0; 4]);
        }
        assert_eq!(c.k[0].as_ptr(), at, "reallocated");
        assert_eq!(c.allocated_bytes(), 2 * 70 * 4 * 4);
    }
}
