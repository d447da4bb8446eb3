//! Quantized matrix multiplication on the CPU: the decode hot path.
//!
//! Weights are repacked at load from GGUF blocks into blocks with f32
//! scales (no f16 conversion in the inner loop). Activations are quantized
//! per row to 8-bit blocks, as llama.cpp does (`Q8_1` for Q4_x weights,
//! `Q8_0` for Q8_0 weights: one activation format, [`BlockQ8A`], serves both),
//! so a weight row is dotted against an activation row with integer SIMD.
//!
//! `matmul` streams each weight row once per call and dots it against every
//! activation row of the batch (tiles of four), which is what makes a batched
//! decode step cost little more than a single-sequence one. Work is split into
//! many more row chunks than threads so that rayon's work stealing absorbs a
//! thread that the OS descheduled, instead of the whole step waiting on it.
//!
//! Each output element is the same sequence of float operations whatever the
//! batch size or the chunking, so a sequence's logits do not depend on what
//! else is in the batch (the batch-equivalence guarantee of the engine).

use rayon::prelude::*;

/// Values per quantization block (all formats used here).
pub const QK: usize = 32;

/// A Q4_0/Q4_1 weight block: `x[i] = d * q[i] + m`, q in 0..16.
/// Low nibbles of `qs` hold elements 0..16, high nibbles 16..32.
/// (Q4_0 is `d * (q - 8)`, stored here as `m = -8 d`.)
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4 {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

/// A Q8_0 weight block: `x[i] = d * q[i]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8W {
    d: f32,
    qs: [i8; 32],
}

/// An activation block: `x[i] ~= d * q[i]`, `s = d * sum(q)` (for Q4_1's offset).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ8A {
    d: f32,
    s: f32,
    qs: [i8; 32],
}

/// A weight matrix `[rows, cols]` in one of the formats we have kernels for.
#[derive(Debug)]
pub enum QMatrix {
    /// Q4_0 / Q4_1 blocks.
    Q4 {
        /// Output features.
        rows: usize,
        /// Input features (a multiple of 32).
        cols: usize,
        /// `rows * cols / 32` blocks, row-major.
        blocks: Vec<BlockQ4>,
    },
    /// Q8_0 blocks.
    Q8 {
        /// Output features.
        rows: usize,
        /// Input features (a multiple of 32).
        cols: usize,
        /// `rows * cols / 32` blocks, row-major.
        blocks: Vec<BlockQ8W>,
    },
}

fn f16(lo: u8, hi: u8) -> f32 {
    half::f16::from_le_bytes([lo, hi]).to_f32()
}

impl QMatrix {
    /// Repack GGUF Q4_0 bytes (18-byte blocks: f16 d, 16 nibble bytes).
    pub fn from_q4_0(rows: usize, cols: usize, raw: &[u8]) -> Option<Self> {
        let blocks = raw
            .chunks_exact(18)
            .map(|b| {
                let d = f16(b[0], b[1]);
                let mut qs = [0u8; 16];
                qs.copy_from_slice(&b[2..18]);
                BlockQ4 { d, m: -8.0 * d, qs }
            })
            .collect::<Vec<_>>();
        (cols.is_multiple_of(QK) && blocks.len() * QK == rows * cols).then_some(Self::Q4 { rows, cols, blocks })
    }

    /// Repack GGUF Q4_1 bytes (20-byte blocks: f16 d, f16 m, 16 nibble bytes).
    pub fn from_q4_1(rows: usize, cols: usize, raw: &[u8]) -> Option<Self> {
        let blocks = raw
            .chunks_exact(20)
            .map(|b| {
                let mut qs = [0u8; 16];
                qs.copy_from_slice(&b[4..20]);
                BlockQ4 {
                    d: f16(b[0], b[1]),
                    m: f16(b[2], b[3]),
                    qs,
                }
            })
            .collect::<Vec<_>>();
        (cols.is_multiple_of(QK) && blocks.len() * QK == rows * cols).then_some(Self::Q4 { rows, cols, blocks })
    }

    /// Repack GGUF Q8_0 bytes (34-byte blocks: f16 d, 32 i8).
    pub fn from_q8_0(rows: usize, cols: usize, raw: &[u8]) -> Option<Self> {
        let blocks = raw
            .chunks_exact(34)
            .map(|b| {
                let mut qs = [0i8; 32];
                for (q, &byte) in qs.iter_mut().zip(&b[2..34]) {
                    *q = byte as i8;
                }
                BlockQ8W { d: f16(b[0], b[1]), qs }
            })
            .collect::<Vec<_>>();
        (cols.is_multiple_of(QK) && blocks.len() * QK == rows * cols).then_some(Self::Q8 { rows, cols, blocks })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        match self {
            Self::Q4 { rows, .. } | Self::Q8 { rows, .. } => *rows,
        }
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        match self {
            Self::Q4 { cols, .. } | Self::Q8 { cols, .. } => *cols,
        }
    }

    /// Bytes held by the repacked weights.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Self::Q4 { blocks, .. } => std::mem::size_of_val(blocks.as_slice()),
            Self::Q8 { blocks, .. } => std::mem::size_of_val(blocks.as_slice()),
        }
    }

    /// Concatenate matrices with the same format and column count along the
    /// rows (fusing Q/K/V or gate/up into one matmul). `None` if they differ.
    pub fn concat_rows(parts: Vec<QMatrix>) -> Option<QMatrix> {
        let mut it = parts.into_iter();
        let mut acc = it.next()?;
        for p in it {
            match (&mut acc, p) {
                (Self::Q4 { rows, cols, blocks }, Self::Q4 { rows: r, cols: c, blocks: b }) if *cols == c => {
                    *rows += r;
                    blocks.extend(b);
                }
                (Self::Q8 { rows, cols, blocks }, Self::Q8 { rows: r, cols: c, blocks: b }) if *cols == c => {
                    *rows += r;
                    blocks.extend(b);
                }
                _ => return None,
            }
        }
        Some(acc)
    }

    /// Dequantize one row into `out` (embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let cols = self.cols();
        let nb = cols / QK;
        match self {
            Self::Q4 { blocks, .. } => {
                for (b, o) in blocks[row * nb..(row + 1) * nb].iter().zip(out.chunks_exact_mut(QK)) {
                    for j in 0..16 {
                        o[j] = b.d * f32::from(b.qs[j] & 0x0F) + b.m;
                        o[j + 16] = b.d * f32::from(b.qs[j] >> 4) + b.m;
                    }
                }
            }
            Self::Q8 { blocks, .. } => {
                for (b, o) in blocks[row * nb..(row + 1) * nb].iter().zip(out.chunks_exact_mut(QK)) {
                    for (x, &q) in o.iter_mut().zip(&b.qs) {
                        *x = b.d * f32::from(q);
                    }
                }
            }
        }
    }

    /// `out[r][j] = sum_k w[j][k] * x[r][k]` for `m` activation rows that were
    /// quantized with [`quantize_rows`] (`xq` holds `m * cols / 32` blocks).
    /// Runs on the current rayon pool.
    pub fn matmul(&self, xq: &[BlockQ8A], m: usize, out: &mut [f32]) {
        let n = self.rows();
        let nb = self.cols() / QK;
        debug_assert_eq!(xq.len(), m * nb);
        debug_assert!(out.len() >= m * n);
        let acts: Vec<&[BlockQ8A]> = xq.chunks_exact(nb).collect();
        // Many small chunks so work stealing evens out a slow thread.
        let threads = rayon::current_num_threads().max(1);
        let chunk = (n / (threads * 8)).clamp(8, 256);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let kernel = Kernel::detect();
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let out_ptr = &out_ptr;
            let j0 = c * chunk;
            let j1 = (j0 + chunk).min(n);
            let mut tile = [0f32; 4];
            for j in j0..j1 {
                for (t, rows) in acts.chunks(4).enumerate() {
                    match self {
                        Self::Q4 { blocks, .. } => kernel.dot_q4(&blocks[j * nb..(j + 1) * nb], rows, &mut tile),
                        Self::Q8 { blocks, .. } => kernel.dot_q8(&blocks[j * nb..(j + 1) * nb], rows, &mut tile),
                    }
                    for (i, v) in tile.iter().take(rows.len()).enumerate() {
                        let r = t * 4 + i;
                        // SAFETY: (r, j) is written by exactly one chunk (the
                        // one owning column j) and r < m, j < n, out.len() >= m*n.
                        unsafe { *out_ptr.0.add(r * n + j) = *v };
                    }
                }
            }
        });
    }
}

struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes, see `matmul`.
unsafe impl Sync for SendPtr {}

/// Quantize `m` rows of `cols` floats (`x.len() == m * cols`) into activation
/// blocks, as llama.cpp's `quantize_row_q8_1`: `d = amax / 127` rounded to
/// f16, `q = round(x / d)`, `s = d * sum(q)` rounded to f16.
pub fn quantize_rows(x: &[f32], out: &mut Vec<BlockQ8A>) {
    out.clear();
    out.reserve(x.len() / QK);
    for chunk in x.chunks_exact(QK) {
        let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
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
            qs,
        });
    }
}

/// Which instruction set the dot products use, chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA (x86-64-v3).
    Avx2,
    /// AVX-512 VNNI on 256-bit vectors (`vpdpbusd`).
    AvxVnni,
}

impl Kernel {
    /// The best kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                return Self::AvxVnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    fn dot_q4(self, w: &[BlockQ4], rows: &[&[BlockQ8A]], out: &mut [f32; 4]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() checked the CPU features.
            Self::Avx2 => unsafe { x86::dot_q4_avx2(w, rows, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() checked the CPU features.
            Self::AvxVnni => unsafe { x86::dot_q4_vnni(w, rows, out) },
            _ => scalar::dot_q4(w, rows, out),
        }
    }

    fn dot_q8(self, w: &[BlockQ8W], rows: &[&[BlockQ8A]], out: &mut [f32; 4]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() checked the CPU features.
            Self::Avx2 => unsafe { x86::dot_q8_avx2(w, rows, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() checked the CPU features.
            Self::AvxVnni => unsafe { x86::dot_q8_vnni(w, rows, out) },
            _ => scalar::dot_q8(w, rows, out),
        }
    }
}

mod scalar {
    use super::{BlockQ4, BlockQ8A, BlockQ8W};

    pub fn dot_q4(w: &[BlockQ4], rows: &[&[BlockQ8A]], out: &mut [f32; 4]) {
        for (r, a) in rows.iter().enumerate() {
            let mut acc = 0f32;
            for (wb, ab) in w.iter().zip(a.iter()) {
                let mut isum = 0i32;
                for j in 0..16 {
                    isum += i32::from(wb.qs[j] & 0x0F) * i32::from(ab.qs[j]);
                    isum += i32::from(wb.qs[j] >> 4) * i32::from(ab.qs[j + 16]);
                }
                acc += wb.d * ab.d * isum as f32 + wb.m * ab.s;
            }
            out[r] = acc;
        }
    }

    pub fn dot_q8(w: &[BlockQ8W], rows: &[&[BlockQ8A]], out: &mut [f32; 4]) {
        for (r, a) in rows.iter().enumerate() {
            let mut acc = 0f32;
            for (wb, ab) in w.iter().zip(a.iter()) {
                let isum: i32 = wb.qs.iter().zip(&ab.qs).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
                acc += wb.d * ab.d * isum as f32;
            }
            out[r] = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockQ4, BlockQ8A, BlockQ8W};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The 32 nibbles of a Q4 block as bytes, in element order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn unpack_q4(b: &BlockQ4) -> __m256i {
        // SAFETY: qs is 16 bytes; unaligned load.
        let q = unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    macro_rules! dot_q4_body {
        ($w:expr, $rows:expr, $out:expr, $isum:expr) => {{
            let nrows = $rows.len();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut summ = [0f32; 4];
            for (b, wb) in $w.iter().enumerate() {
                let wq = unpack_q4(wb);
                for r in 0..nrows {
                    // SAFETY: every activation row has as many blocks as the weight row.
                    let ab = unsafe { $rows.get_unchecked(r).get_unchecked(b) };
                    let y = unsafe { _mm256_loadu_si256(ab.qs.as_ptr().cast()) };
                    let p = _mm256_cvtepi32_ps($isum(wq, y));
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wb.d * ab.d), p, acc[r]);
                    summ[r] += wb.m * ab.s;
                }
            }
            for r in 0..nrows {
                $out[r] = hsum(acc[r]) + summ[r];
            }
        }};
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_avx2(w: &[BlockQ4], rows: &[&[BlockQ8A]], out: &mut [f32; 4]) {
        let ones = _mm256_set1_epi16(1);
        // u8 x i8 pairs -> i16 (no saturation: 15*127*2 < 32767) -> i32.
        let isum = |x: __m256i, y: __m256i| _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones);
        dot_q4_body!(w, rows, out, isum)
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub unsafe fn dot_q4_vnni(w: &[BlockQ4], rows: &[&[BlockQ8A]], out: &mut [f32; 4]) {
        let isum = |x: __m256i, y: __m256i| _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y);
        dot_q4_body!(w, rows, out, isum)
    }

    macro_rules! dot_q8_body {
        ($w:expr, $rows:expr, $out:expr, $isum:expr) => {{
            let nrows = $rows.len();
            let mut acc = [_mm256_setzero_ps(); 4];
            for (b, wb) in $w.iter().enumerate() {
                // SAFETY: qs is 32 bytes; unaligned load.
                let x = unsafe { _mm256_loadu_si256(wb.qs.as_ptr().cast()) };
                // Signed x signed via |x| * (y * sign(x)), as llama.cpp does.
                let ax = _mm256_sign_epi8(x, x);
                for r in 0..nrows {
                    // SAFETY: every activation row has as many blocks as the weight row.
                    let ab = unsafe { $rows.get_unchecked(r).get_unchecked(b) };
                    let y = unsafe { _mm256_loadu_si256(ab.qs.as_ptr().cast()) };
                    let p = _mm256_cvtepi32_ps($isum(ax, _mm256_sign_epi8(y, x)));
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wb.d * ab.d), p, acc[r]);
                }
            }
            for r in 0..nrows {
                $out[r] = hsum(acc[r]);
            }
        }};
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_avx2(w: &[BlockQ8W], rows: &[&[BlockQ8A]], out: &mut [f32; 4]) {
        let ones = _mm256_set1_epi16(1);
        let isum = |x: __m256i, y: __m256i| _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones);
        dot_q8_body!(w, rows, out, isum)
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub unsafe fn dot_q8_vnni(w: &[BlockQ8W], rows: &[&[BlockQ8A]], out: &mut [f32; 4]) {
        let isum = |x: __m256i, y: __m256i| _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y);
        dot_q8_body!(w, rows, out, isum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q4_1_bytes(rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as u8
        };
        let mut raw = Vec::new();
        for _ in 0..rows * cols / QK {
            raw.extend_from_slice(&half::f16::from_f32(0.01 + f32::from(next() % 7) * 0.003).to_le_bytes());
            raw.extend_from_slice(&half::f16::from_f32(-0.05 + f32::from(next() % 5) * 0.01).to_le_bytes());
            for _ in 0..16 {
                raw.push(next());
            }
        }
        raw
    }

    /// Activations as the kernels see them (after 8-bit quantization).
    fn dequantized(xq: &[BlockQ8A]) -> Vec<f32> {
        xq.iter().flat_map(|b| b.qs.iter().map(move |&q| b.d * f32::from(q))).collect()
    }

    /// `w @ x` by our kernels agrees with a plain f32 matmul over the
    /// dequantized weights and dequantized activations, and every row
    /// computed alone is bit-identical to the same row in the batch.
    fn check_against_reference(w: &QMatrix, m: usize) {
        let (rows, cols) = (w.rows(), w.cols());
        let mut wd = vec![0f32; rows * cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut wd[r * cols..(r + 1) * cols]);
        }
        let x: Vec<f32> = (0..m * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let mut xq = Vec::new();
        quantize_rows(&x, &mut xq);
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
    fn q4_1_matmul_matches_reference_for_all_batch_sizes() {
        let (rows, cols) = (40, 96);
        let w = QMatrix::from_q4_1(rows, cols, &q4_1_bytes(rows, cols, 7)).expect("shape");
        for m in [1usize, 3, 4, 7] {
            check_against_reference(&w, m);
        }
    }

    #[test]
    fn q8_0_matmul_matches_reference() {
        let (rows, cols) = (12, 64);
        let mut raw = Vec::new();
        for b in 0..rows * cols / QK {
            raw.extend_from_slice(&half::f16::from_f32(0.02 + b as f32 * 0.001).to_le_bytes());
            // Q8_0 quants are in [-127, 127] (llama.cpp never writes -128).
            raw.extend((0..32).map(|i| (((i * 7 + b * 13) % 255) as i32 - 127) as i8 as u8));
        }
        let w = QMatrix::from_q8_0(rows, cols, &raw).expect("shape");
        check_against_reference(&w, 5);
    }

    #[test]
    fn simd_kernels_agree_with_scalar() {
        let (rows, cols) = (4, 64);
        let w = QMatrix::from_q4_1(rows, cols, &q4_1_bytes(rows, cols, 3)).expect("shape");
        let x: Vec<f32> = (0..cols * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut xq = Vec::new();
        quantize_rows(&x, &mut xq);
        let acts: Vec<&[BlockQ8A]> = xq.chunks_exact(2).collect();
        let QMatrix::Q4 { blocks, .. } = &w else { unreachable!() };
        let mut want = [0f32; 4];
        Kernel::Scalar.dot_q4(&blocks[..2], &acts, &mut want);
        let detected = Kernel::detect();
        let avx2 = (detected == Kernel::AvxVnni).then_some(Kernel::Avx2);
        for k in std::iter::once(detected).chain(avx2) {
            let mut got = [0f32; 4];
            k.dot_q4(&blocks[..2], &acts, &mut got);
            for r in 0..2 {
                assert!((want[r] - got[r]).abs() < 1e-4 * want[r].abs().max(1.0), "{k:?}");
            }
        }
    }
}
