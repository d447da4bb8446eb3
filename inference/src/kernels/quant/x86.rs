//! The x86-64 tile kernels (AVX2, AVX-512 VNNI), chosen at run time by
//! [`super::Kernel::detect`]; each agrees bit for bit with the scalar one.

use super::{format_of, BlockQ8A, ROWS, TILE};
use std::arch::x86_64::*;

/// A whole tile per vector: lane i of every operand is row i.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
pub unsafe fn tile_512<const F: u8>(w: &[u8], xq: &[BlockQ8A], nb: usize, out: &mut [[f32; TILE]; ROWS]) {
    let fmt = format_of(F);
    let (tb, qo) = (fmt.tile_block_bytes(), fmt.qs_offset());
    let nrows = xq.len() / nb;
    let nibbles = _mm512_set1_epi8(0x0F);
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_ps(); ROWS];
    let mut acc_m = [_mm512_setzero_ps(); ROWS];
    for b in 0..nb {
        // SAFETY (all loads): w holds nb tile blocks of tb bytes; the
        // quants of a block are 4 (Q4) or 8 (Q8) vectors of 64 bytes.
        let blk = unsafe { w.as_ptr().add(b * tb) };
        let d = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(blk.cast()) });
        let m = if fmt.has_min() {
            _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(blk.add(2 * TILE).cast()) })
        } else {
            _mm512_setzero_ps()
        };
        let qs = unsafe { blk.add(qo) };
        let mut wv = [_mm512_setzero_si512(); 8];
        if F == super::Q8_0 {
            // vpdpbusd multiplies unsigned by signed bytes: feed it
            // q + 128 and take 128 sum(a) back off below.
            for (g, v) in wv.iter_mut().enumerate() {
                *v = _mm512_xor_si512(unsafe { _mm512_loadu_si512(qs.add(g * 64).cast()) }, flip);
            }
        } else {
            for k in 0..4 {
                let v = unsafe { _mm512_loadu_si512(qs.add(k * 64).cast()) };
                wv[k] = _mm512_and_si512(v, nibbles);
                wv[k + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibbles);
            }
        }
        for r in 0..nrows {
            // SAFETY: r < nrows, b < nb, xq.len() == nrows * nb.
            let a = unsafe { xq.get_unchecked(r * nb + b) };
            let mut isum = _mm512_setzero_si512();
            for (g, v) in wv.iter().enumerate() {
                isum = _mm512_dpbusd_epi32(isum, *v, _mm512_set1_epi32(a.word(g)));
            }
            // Q8_0 was fed as q + 128 above.
            let zp = if F == super::Q8_0 { 128 } else { fmt.zero_point() };
            if zp != 0 {
                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(zp * a.qsum));
            }
            let scale = _mm512_mul_ps(d, _mm512_set1_ps(a.d));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[r]);
            if fmt.has_min() {
                acc_m[r] = _mm512_add_ps(acc_m[r], _mm512_mul_ps(m, _mm512_set1_ps(a.s)));
            }
        }
    }
    for r in 0..nrows {
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), _mm512_add_ps(acc[r], acc_m[r])) };
    }
}

/// Half a tile per 256-bit vector, without VNNI: `vpmaddubsw` then
/// `vpmaddwd` into i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_avx2<const F: u8>(w: &[u8], xq: &[BlockQ8A], nb: usize, out: &mut [[f32; TILE]; ROWS]) {
    let fmt = format_of(F);
    let (tb, qo) = (fmt.tile_block_bytes(), fmt.qs_offset());
    let nrows = xq.len() / nb;
    let nibbles = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); ROWS];
        let mut acc_m = [_mm256_setzero_ps(); ROWS];
        for b in 0..nb {
            // SAFETY (all loads): as in tile_512, at this half's offset.
            let blk = unsafe { w.as_ptr().add(b * tb) };
            let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(blk.add(16 * half).cast()) });
            let m = if fmt.has_min() {
                _mm256_cvtph_ps(unsafe { _mm_loadu_si128(blk.add(2 * TILE + 16 * half).cast()) })
            } else {
                _mm256_setzero_ps()
            };
            let qs = unsafe { blk.add(qo + 32 * half) };
            let mut wv = [_mm256_setzero_si256(); 8];
            if F == super::Q8_0 {
                for (g, v) in wv.iter_mut().enumerate() {
                    *v = unsafe { _mm256_loadu_si256(qs.add(g * 64).cast()) };
                }
            } else {
                for k in 0..4 {
                    let v = unsafe { _mm256_loadu_si256(qs.add(k * 64).cast()) };
                    wv[k] = _mm256_and_si256(v, nibbles);
                    wv[k + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibbles);
                }
            }
            for r in 0..nrows {
                // SAFETY: r < nrows, b < nb, xq.len() == nrows * nb.
                let a = unsafe { xq.get_unchecked(r * nb + b) };
                let mut isum = _mm256_setzero_si256();
                for (g, v) in wv.iter().enumerate() {
                    let y = _mm256_set1_epi32(a.word(g));
                    // Products of u8 x i8 pairs must fit i16: nibbles
                    // do (15 * 127 * 2); signed Q8 goes through |q| and
                    // a * sign(q) (at most 128 * 127 * 2).
                    let pairs = if F == super::Q8_0 {
                        _mm256_maddubs_epi16(_mm256_sign_epi8(*v, *v), _mm256_sign_epi8(y, *v))
                    } else {
                        _mm256_maddubs_epi16(*v, y)
                    };
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, ones));
                }
                let zp = fmt.zero_point();
                if zp != 0 {
                    isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(zp * a.qsum));
                }
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
                if fmt.has_min() {
                    acc_m[r] = _mm256_add_ps(acc_m[r], _mm256_mul_ps(m, _mm256_set1_ps(a.s)));
                }
            }
        }
        for r in 0..nrows {
            unsafe { _mm256_storeu_ps(out[r].as_mut_ptr().add(8 * half), _mm256_add_ps(acc[r], acc_m[r])) };
        }
    }
}
