//! Quantized matrix multiplication on the CPU: the decode hot path.
//!
//! Weights are repacked at load from GGUF's row-major blocks into *tiles* of
//! [`TILE`] (16) output rows, interleaved four quants at a time: in each
//! 64-byte vector of a tile block, bytes `4i..4i+4` belong to row `i`. One
//! `vpdpbusd` against four activation bytes broadcast to every lane then
//! advances sixteen output rows at once, and each 32-bit lane ends a block
//! holding one row's exact integer dot product. The per-block float work
//! (convert, scale, accumulate) is one vector operation per sixteen rows,
//! where a row-at-a-time kernel pays it per row plus a horizontal sum. This is
//! the layout llama.cpp's repacked `Q4_0_8x8` GEMM kernels use, widened to 16.
//!
//! Activations are quantized per row to 8-bit blocks as llama.cpp does
//! (`Q8_1`-style: one format, [`BlockQ8A`], serves every weight format).
//! `matmul` streams each weight tile once per call and runs it against every
//! activation row of the batch (four rows per kernel call, the tile staying in
//! L1), which is what makes a batched decode step cost little more than a
//! single-sequence one. Work is split into many more tile chunks than threads
//! so that rayon's work stealing absorbs a thread that the OS descheduled.
//!
//! Every output element is the same sequence of operations whatever the batch
//! size, the chunking or the kernel: exact integer block sums, then per block
//! `acc = fma(isum, d_w * d_a, acc)` (and `fma(m_w, s_a, acc)` for Q4_1), so a
//! sequence's logits do not depend on what else is in the batch (the engine's
//! batch-equivalence guarantee) and the SIMD kernels agree bit for bit with
//! the scalar one.

use rayon::prelude::*;

/// Values per quantization block (all formats used here).
pub const QK: usize = 32;

/// Weight rows per interleaved tile (the lanes of a 512-bit vector of i32).
pub const TILE: usize = 16;

/// Activation rows per kernel call.
const ROWS: usize = 4;

/// The GGUF weight formats we have kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QFormat {
    /// `x = d * (q - 8)`, q in 0..16.
    Q4_0,
    /// `x = d * q + m`, q in 0..16.
    Q4_1,
    /// `x = d * q`, q in -128..128.
    Q8_0,
}

impl QFormat {
    /// Bytes of one 32-value block in a GGUF file.
    fn ggml_block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    fn has_min(self) -> bool {
        self == Self::Q4_1
    }

    /// The integer offset the stored quants carry: Q4_0 stores `q + 8`, so
    /// its dot product is `sum(q' a) - 8 sum(a)`.
    const fn zero_point(self) -> i32 {
        match self {
            Self::Q4_0 => 8,
            Self::Q4_1 | Self::Q8_0 => 0,
        }
    }

    /// Offset of the quants in a tile block: `TILE` f16 scales, then (Q4_1)
    /// `TILE` f16 mins.
    fn qs_offset(self) -> usize {
        if self.has_min() {
            4 * TILE
        } else {
            2 * TILE
        }
    }

    /// Bytes of one tile block (`TILE` rows x 32 values).
    fn tile_block_bytes(self) -> usize {
        self.qs_offset()
            + match self {
                Self::Q4_0 | Self::Q4_1 => TILE * QK / 2,
                Self::Q8_0 => TILE * QK,
            }
    }
}

/// An activation block: `x[i] ~= d * q[i]`, `s = d * sum(q)` rounded to f16
/// (Q4_1's offset term, as llama.cpp computes it), `qsum = sum(q)` exactly
/// (Q4_0's zero point, folded into the integer sum).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ8A {
    d: f32,
    s: f32,
    qsum: i32,
    qs: [i8; 32],
}

impl BlockQ8A {
    /// Quants `4g..4g+4` as one little-endian word (a broadcast operand).
    #[inline(always)]
    fn word(&self, g: usize) -> i32 {
        i32::from_le_bytes([self.qs[4 * g] as u8, self.qs[4 * g + 1] as u8, self.qs[4 * g + 2] as u8, self.qs[4 * g + 3] as u8])
    }
}

/// A weight matrix `[rows, cols]` repacked into tiles.
#[derive(Debug)]
pub struct QMatrix {
    format: QFormat,
    rows: usize,
    cols: usize,
    /// `ceil(rows / TILE)` tiles, each `cols / 32` tile blocks. Rows past
    /// `rows` in the last tile are zero and never written out.
    data: Vec<u8>,
}

impl QMatrix {
    /// Repack GGUF blocks of `format` holding a row-major `[rows, cols]`
    /// matrix. `None` if `raw` does not have that shape.
    pub fn from_ggml(format: QFormat, rows: usize, cols: usize, raw: &[u8]) -> Option<Self> {
        let gb = format.ggml_block_bytes();
        if cols == 0 || !cols.is_multiple_of(QK) || raw.len() != rows * cols / QK * gb {
            return None;
        }
        let nb = cols / QK;
        let tb = format.tile_block_bytes();
        let qo = format.qs_offset();
        let tiles = rows.div_ceil(TILE);
        let mut data = vec![0u8; tiles * nb * tb];
        for row in 0..rows {
            let (t, i) = (row / TILE, row % TILE);
            for b in 0..nb {
                let src = &raw[(row * nb + b) * gb..(row * nb + b + 1) * gb];
                let dst = &mut data[(t * nb + b) * tb..(t * nb + b + 1) * tb];
                dst[2 * i..2 * i + 2].copy_from_slice(&src[..2]);
                let quants = match format {
                    QFormat::Q4_0 => &src[2..],
                    QFormat::Q4_1 => {
                        dst[2 * TILE + 2 * i..2 * TILE + 2 * i + 2].copy_from_slice(&src[2..4]);
                        &src[4..]
                    }
                    QFormat::Q8_0 => &src[2..],
                };
                // Word k of a row goes to lane i of vector k. For Q4 a GGUF
                // byte j holds elements j (low nibble) and j + 16 (high), so
                // vector k's low nibbles are elements 4k.. and its high
                // nibbles elements 16 + 4k..: the kernels' groups k and k + 4.
                for (k, word) in quants.chunks_exact(4).enumerate() {
                    let at = qo + k * 4 * TILE + 4 * i;
                    dst[at..at + 4].copy_from_slice(word);
                }
            }
        }
        Some(Self { format, rows, cols, data })
    }

    /// Quantize a row-major `[rows, cols]` float matrix to Q8_0 (per 32
    /// values: `d = amax / 127` as f16, `q = round(x / d)` with the f16 `d`
    /// that is stored, so the quants reproduce what dequantization sees),
    /// for weights that come unquantized (Whisper's).
    /// `None` if `w` does not have that shape.
    pub fn quantize_q8_0(rows: usize, cols: usize, w: &[f32]) -> Option<Self> {
        if w.len() != rows * cols || !cols.is_multiple_of(QK) {
            return None;
        }
        let mut raw = Vec::with_capacity(rows * cols / QK * QFormat::Q8_0.ggml_block_bytes());
        for block in w.chunks_exact(QK) {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = half::f16::from_f32(amax / 127.0);
            let id = if amax > 0.0 { 1.0 / d.to_f32() } else { 0.0 };
            raw.extend_from_slice(&d.to_le_bytes());
            raw.extend(block.iter().map(|v| (v * id).round().clamp(-127.0, 127.0) as i8 as u8));
        }
        Self::from_ggml(QFormat::Q8_0, rows, cols, &raw)
    }

    /// The weight format.
    pub fn format(&self) -> QFormat {
        self.format
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held by the repacked weights.
    pub fn size_in_bytes(&self) -> usize {
        self.data.len()
    }

    fn tile_bytes(&self) -> usize {
        self.cols / QK * self.format.tile_block_bytes()
    }

    /// Dequantize one row into `out` (embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let fmt = self.format;
        let (tb, qo) = (fmt.tile_block_bytes(), fmt.qs_offset());
        let (t, i) = (row / TILE, row % TILE);
        let tile = &self.data[t * self.tile_bytes()..(t + 1) * self.tile_bytes()];
        for (blk, o) in tile.chunks_exact(tb).zip(out.chunks_exact_mut(QK)) {
            let f16_at = |at: usize| half::f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
            let d = f16_at(2 * i);
            let qs = &blk[qo..];
            match fmt {
                QFormat::Q4_0 | QFormat::Q4_1 => {
                    let (m, zero) = if fmt.has_min() { (f16_at(2 * TILE + 2 * i), 0.0) } else { (0.0, 8.0) };
                    for k in 0..4 {
                        for j in 0..4 {
                            let byte = qs[k * 4 * TILE + 4 * i + j];
                            o[4 * k + j] = d * (f32::from(byte & 0x0F) - zero) + m;
                            o[16 + 4 * k + j] = d * (f32::from(byte >> 4) - zero) + m;
                        }
                    }
                }
                QFormat::Q8_0 => {
                    for g in 0..8 {
                        for j in 0..4 {
                            o[4 * g + j] = d * f32::from(qs[g * 4 * TILE + 4 * i + j] as i8);
                        }
                    }
                }
            }
        }
    }

    /// `out[r][j] = sum_k w[j][k] * x[r][k]` for `m` activation rows that were
    /// quantized with [`quantize_rows`] (`xq` holds `m * cols / 32` blocks).
    /// Runs on the current rayon pool.
    pub fn matmul(&self, xq: &[BlockQ8A], m: usize, out: &mut [f32]) {
        self.matmul_with(Kernel::detect(), xq, m, out);
    }

    fn matmul_with(&self, kernel: Kernel, xq: &[BlockQ8A], m: usize, out: &mut [f32]) {
        let (n, nb) = (self.rows, self.cols / QK);
        assert!(xq.len() >= m * nb && out.len() >= m * n, "matmul: buffers too small for {m} rows");
        let tiles = n.div_ceil(TILE);
        let tile_bytes = self.tile_bytes();
        // Many small chunks so work stealing evens out a slow thread.
        let threads = rayon::current_num_threads().max(1);
        let per_chunk = (tiles / (threads * 8)).clamp(1, 16);
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..tiles.div_ceil(per_chunk)).into_par_iter().for_each(|c| {
            let out_ptr = &out_ptr;
            let mut buf = [[0f32; TILE]; ROWS];
            for t in c * per_chunk..((c + 1) * per_chunk).min(tiles) {
                let w = &self.data[t * tile_bytes..(t + 1) * tile_bytes];
                let j0 = t * TILE;
                let width = TILE.min(n - j0);
                for r0 in (0..m).step_by(ROWS) {
                    let nr = ROWS.min(m - r0);
                    kernel.tile(self.format, w, &xq[r0 * nb..(r0 + nr) * nb], nb, &mut buf);
                    for (r, vals) in buf.iter().take(nr).enumerate() {
                        // SAFETY: rows r0 + r < m and columns j0..j0 + width
                        // <= n lie inside `out` (checked above), and only the
                        // chunk owning tile t writes these columns.
                        unsafe {
                            std::ptr::copy_nonoverlapping(vals.as_ptr(), out_ptr.0.add((r0 + r) * n + j0), width);
                        }
                    }
                }
            }
        });
    }
}

struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes, see `matmul_with`.
unsafe impl Sync for SendPtr {}

multiversion! {
    /// Quantize `m` rows of `cols` floats (`x.len() == m * cols`) into activation
    /// blocks, as llama.cpp's `quantize_row_q8_1`: `d = amax / 127` rounded to
    /// f16, `q = round(x / d)`, `s = d * sum(q)` rounded to f16.
    pub fn quantize_rows(x: &[f32], out: &mut Vec<BlockQ8A>) => quantize_rows_generic
}

#[inline(always)]
fn quantize_rows_generic(x: &[f32], out: &mut Vec<BlockQ8A>) {
    out.clear();
    out.reserve(x.len() / QK);
    for chunk in x.chunks_exact(QK) {
        let amax = block_amax(chunk);
        let d = amax / 127.0;
        // 127 / amax rather than 1 / d: the rounding llama.cpp's SIMD path has.
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(chunk) {
            // round-half-even, as the AVX path of llama.cpp rounds.
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        out.push(BlockQ8A {
            d: half::f16::from_f32(d).to_f32(),
            s: half::f16::from_f32(d * sum as f32).to_f32(),
            qsum: sum,
            qs,
        });
    }
}

/// The largest |x| of a block, as a halving tree over lanes so that it
/// vectorises (a running maximum is a chain LLVM keeps scalar). Exact: the
/// order of a maximum does not change it, and a NaN counts as 0, as in the
/// `f32::max` fold from 0 it replaces.
#[inline(always)]
fn block_amax(block: &[f32]) -> f32 {
    let max = |a: f32, b: f32| if a > b { a } else { b };
    // NaN > 0 is false: NaN (and -0) become 0.
    let abs = |v: f32| if v.abs() > 0.0 { v.abs() } else { 0.0 };
    let mut m = [0f32; QK / 2];
    for (i, m) in m.iter_mut().enumerate() {
        *m = max(abs(block[i]), abs(block[i + QK / 2]));
    }
    let mut width = QK / 4;
    while width > 0 {
        for i in 0..width {
            m[i] = max(m[i], m[i + width]);
        }
        width /= 2;
    }
    m[0]
}

/// Which instruction set the kernels use, chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64-v3), 256-bit, half a tile at a time.
    Avx2,
    /// AVX-512 VNNI, a whole tile per 512-bit vector (`vpdpbusd`).
    Avx512Vnni,
}

impl Kernel {
    /// The best kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Self::Avx512Vnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// Run one weight tile (`nb` tile blocks) against `xq.len() / nb` <= 4
    /// activation rows; row r's sixteen outputs land in `out[r]`.
    fn tile(self, fmt: QFormat, w: &[u8], xq: &[BlockQ8A], nb: usize, out: &mut [[f32; TILE]; ROWS]) {
        debug_assert!(w.len() == nb * fmt.tile_block_bytes() && xq.len() <= ROWS * nb);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() checked the CPU features; the shapes are
            // asserted above and by `matmul_with`.
            Self::Avx512Vnni => unsafe {
                match fmt {
                    QFormat::Q4_0 => x86::tile_512::<Q4_0>(w, xq, nb, out),
                    QFormat::Q4_1 => x86::tile_512::<Q4_1>(w, xq, nb, out),
                    QFormat::Q8_0 => x86::tile_512::<Q8_0>(w, xq, nb, out),
                }
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Self::Avx2 => unsafe {
                match fmt {
                    QFormat::Q4_0 => x86::tile_avx2::<Q4_0>(w, xq, nb, out),
                    QFormat::Q4_1 => x86::tile_avx2::<Q4_1>(w, xq, nb, out),
                    QFormat::Q8_0 => x86::tile_avx2::<Q8_0>(w, xq, nb, out),
                }
            },
            _ => scalar_tile(fmt, w, xq, nb, out),
        }
    }
}

// Formats as const-generic parameters, so each kernel is compiled per format
// with its branches folded away.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

const fn format_of(f: u8) -> QFormat {
    match f {
        Q4_0 => QFormat::Q4_0,
        Q4_1 => QFormat::Q4_1,
        _ => QFormat::Q8_0,
    }
}

fn scalar_tile(fmt: QFormat, w: &[u8], xq: &[BlockQ8A], nb: usize, out: &mut [[f32; TILE]; ROWS]) {
    let (tb, qo) = (fmt.tile_block_bytes(), fmt.qs_offset());
    let zp = fmt.zero_point();
    for (r, row) in xq.chunks_exact(nb).enumerate() {
        for i in 0..TILE {
            let (mut acc, mut acc_m) = (0f32, 0f32);
            for (blk, a) in w.chunks_exact(tb).zip(row) {
                let f16_at = |at: usize| half::f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
                let qs = &blk[qo..];
                let mut isum = 0i32;
                for g in 0..8 {
                    for j in 0..4 {
                        let q = match fmt {
                            QFormat::Q4_0 | QFormat::Q4_1 => {
                                let byte = qs[(g % 4) * 4 * TILE + 4 * i + j];
                                i32::from(if g < 4 { byte & 0x0F } else { byte >> 4 })
                            }
                            QFormat::Q8_0 => i32::from(qs[g * 4 * TILE + 4 * i + j] as i8),
                        };
                        isum += q * i32::from(a.qs[4 * g + j]);
                    }
                }
                isum -= zp * a.qsum;
                acc = (isum as f32).mul_add(f16_at(2 * i) * a.d, acc);
                if fmt.has_min() {
                    acc_m += f16_at(2 * TILE + 2 * i) * a.s;
                }
            }
            out[r][i] = acc + acc_m;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random GGUF blocks of `fmt` for a `[rows, cols]` matrix.
    fn ggml_bytes(fmt: QFormat, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as u8
        };
        let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
        let mut raw = Vec::new();
        for _ in 0..rows * cols / QK {
            raw.extend_from_slice(&f16(0.01 + f32::from(next() % 7) * 0.003));
            if fmt == QFormat::Q4_1 {
                raw.extend_from_slice(&f16(-0.05 + f32::from(next() % 5) * 0.01));
            }
            let n = if fmt == QFormat::Q8_0 { 32 } else { 16 };
            // Every byte value, -128 included for Q8_0, which llama.cpp
            // never writes but a file may hold.
            raw.extend((0..n).map(|_| next()));
        }
        raw
    }

    /// Activations as the kernels see them (after 8-bit quantization).
    fn dequantized(xq: &[BlockQ8A]) -> Vec<f32> {
        xq.iter().flat_map(|b| b.qs.iter().map(move |&q| b.d * f32::from(q))).collect()
    }

    fn activations(m: usize, cols: usize) -> Vec<BlockQ8A> {
        let x: Vec<f32> = (0..m * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let mut xq = Vec::new();
        quantize_rows(&x, &mut xq);
        xq
    }

    /// `w @ x` by our kernels agrees with a plain f32 matmul over the
    /// dequantized weights and activations, and every row computed alone is
    /// bit-identical to the same row in the batch.
    fn check_against_reference(w: &QMatrix, m: usize) {
        let (rows, cols) = (w.rows(), w.cols());
        let mut wd = vec![0f32; rows * cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut wd[r * cols..(r + 1) * cols]);
        }
        let xq = activations(m, cols);
        let xd = dequantized(&xq);
        let mut out = vec![0f32; m * rows];
        w.matmul(&xq, m, &mut out);
        for r in 0..m {
            for j in 0..rows {
                let want: f32 = (0..cols).map(|k| wd[j * cols + k] * xd[r * cols + k]).sum();
                let got = out[r * rows + j];
                assert!((want - got).abs() < 1e-3 * want.abs().max(1.0), "m={m} r={r} j={j}: {got} vs {want}");
            }
            let mut single = vec![0f32; rows];
            w.matmul(&xq[r * cols / QK..(r + 1) * cols / QK], 1, &mut single);
            assert_eq!(&single[..], &out[r * rows..(r + 1) * rows], "batch equivalence, row {r}");
        }
    }

    #[test]
    fn every_format_matches_reference_for_all_batch_sizes() {
        // 40 rows: two full tiles and a partial one.
        let (rows, cols) = (40, 96);
        for fmt in [QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0] {
            let w = QMatrix::from_ggml(fmt, rows, cols, &ggml_bytes(fmt, rows, cols, 7)).expect("shape");
            for m in [1usize, 3, 4, 7, 9] {
                check_against_reference(&w, m);
            }
        }
    }

    #[test]
    fn dequantize_row_reads_ggml_blocks() {
        // One Q4_1 row by hand: d = 0.5, m = -1, element j has quant j % 16.
        let mut raw = Vec::new();
        raw.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        raw.extend_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
        raw.extend((0..16u8).map(|j| j | (j << 4)));
        let w = QMatrix::from_ggml(QFormat::Q4_1, 1, 32, &raw).expect("shape");
        let mut row = [0f32; 32];
        w.dequantize_row(0, &mut row);
        let want: Vec<f32> = (0..32).map(|j| 0.5 * (j % 16) as f32 - 1.0).collect();
        assert_eq!(&row[..], &want[..]);
    }

    /// Float weights quantized here multiply like the floats, to Q8's precision.
    #[test]
    fn quantized_float_weights_match_a_float_matmul() {
        let (rows, cols, m) = (20, 96, 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
        let x: Vec<f32> = (0..m * cols).map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0).collect();
        let q = QMatrix::quantize_q8_0(rows, cols, &w).expect("shape");
        let mut xq = Vec::new();
        quantize_rows(&x, &mut xq);
        let mut out = vec![0f32; m * rows];
        q.matmul(&xq, m, &mut out);
        for r in 0..m {
            for j in 0..rows {
                let exact: f32 = (0..cols).map(|k| w[j * cols + k] * x[r * cols + k]).sum();
                let scale: f32 = (0..cols).map(|k| (w[j * cols + k] * x[r * cols + k]).abs()).sum();
                assert!((out[r * rows + j] - exact).abs() <= 0.02 * scale, "[{r}][{j}] {} vs {exact}", out[r * rows + j]);
            }
        }
        assert!(QMatrix::quantize_q8_0(rows, cols + 1, &w).is_none());
    }

    #[test]
    fn wrong_shape_is_refused() {
        let raw = ggml_bytes(QFormat::Q8_0, 2, 64, 1);
        assert!(QMatrix::from_ggml(QFormat::Q8_0, 3, 64, &raw).is_none());
        assert!(QMatrix::from_ggml(QFormat::Q8_0, 4, 32, &raw[..raw.len() - 1]).is_none());
        assert!(QMatrix::from_ggml(QFormat::Q8_0, 2, 0, &[]).is_none());
    }

    #[test]
    fn simd_kernels_agree_with_scalar_bit_for_bit() {
        let (rows, cols, m) = (20, 128, 6);
        let xq = activations(m, cols);
        let mut kernels = vec![Kernel::detect()];
        if kernels[0] == Kernel::Avx512Vnni {
            kernels.push(Kernel::Avx2);
        }
        for fmt in [QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0] {
            let w = QMatrix::from_ggml(fmt, rows, cols, &ggml_bytes(fmt, rows, cols, 3)).expect("shape");
            let mut want = vec![0f32; m * rows];
            w.matmul_with(Kernel::Scalar, &xq, m, &mut want);
            for &k in &kernels {
                let mut got = vec![0f32; m * rows];
                w.matmul_with(k, &xq, m, &mut got);
                assert_eq!(got, want, "{k:?} {fmt:?}");
            }
        }
    }
}
