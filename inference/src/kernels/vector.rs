//! Element-wise math over whole rows, vectorised for the CPU it runs on:
//! softmax and GELU (erf form), the transcendental functions Whisper's
//! encoder spends its time in besides matmuls (a 15 s window is 13.5 M
//! exponentials in attention and 4.6 M erfs in the MLPs for tiny.en).
//!
//! The bodies are plain Rust over fixed-width lane arrays that LLVM
//! vectorises, built per instruction set and picked at run time
//! ([`multiversion!`](crate::kernels)), so one binary runs everywhere. `exp` is Cephes'
//! polynomial (relative error ~1e-7 over the range softmax uses) and `erf`
//! Eigen's rational approximation (a few ulp, under 5e-7): both at the level
//! of f32 rounding, not of the model's accuracy.

/// Lanes per partial accumulator: a 512-bit vector of f32.
const LANES: usize = 16;

multiversion! {
    /// Softmax of each row of `cols` values of `x`, in place (`-inf` gives 0).
    pub fn softmax_rows(x: &mut [f32], cols: usize) => softmax_rows_generic
}

multiversion! {
    /// `x * Φ(x)` with Φ by erf, as Whisper's (and PyTorch's default) GELU, in place.
    pub fn gelu_erf(x: &mut [f32]) => gelu_erf_generic
}

#[inline(always)]
fn softmax_rows_generic(x: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        let mut m = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (m, &v) in m.iter_mut().zip(c) {
                *m = if v > *m { v } else { *m };
            }
        }
        let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
        max = m.iter().fold(max, |a, &v| if v > a { v } else { a });
        if max == f32::NEG_INFINITY {
            // Every key masked: no weight anywhere (candle's softmax gives NaN here).
            row.fill(0.0);
            continue;
        }
        let mut s = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (s, v) in s.iter_mut().zip(c.iter_mut()) {
                *v = exp(*v - max);
                *s += *v;
            }
        }
        let mut sum: f32 = s.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[inline(always)]
fn gelu_erf_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// e^x (Cephes `expf`): 2^n * p(r) with x = n ln 2 + r, |r| <= ln 2 / 2.
/// Below -87.3 (the smallest normal's log) it is 0.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.0);
    let n = (xc * std::f32::consts::LOG2_E + 0.5).floor();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let p = (p * r).mul_add(r, r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        p * scale
    }
}

/// erf(x) as a rational function of x on [-4, 4] (beyond it erf is ±1 in
/// f32): the approximation Eigen and XLA use, within a few ulp (5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.954_600_1e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329_2e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_within_f32_rounding_of_libm() {
        for i in -20_000..=20_000 {
            let x = i as f32 / 1000.0;
            let want = x.exp();
            assert!(((exp(x) - want) / want).abs() < 3e-7, "exp({x}) = {} vs {want}", exp(x));
            let want = libm::erff(x);
            assert!((erf(x) - want).abs() < 5e-7, "erf({x}) = {} vs {want}", erf(x));
        }
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_mask_to_zero() {
        let cols = 37;
        let mut x: Vec<f32> = (0..3 * cols).map(|i| ((i * 29 % 53) as f32 - 26.0) / 5.0).collect();
        x[cols + 3] = f32::NEG_INFINITY;
        x[2 * cols..].fill(f32::NEG_INFINITY);
        let orig = x.clone();
        softmax_rows(&mut x, cols);
        for (r, row) in x.chunks(cols).enumerate().take(2) {
            let src = &orig[r * cols..(r + 1) * cols];
            let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = src.iter().map(|v| (v - max).exp()).sum();
            for (y, s) in row.iter().zip(src) {
                assert!((y - (s - max).exp() / sum).abs() < 1e-6);
            }
        }
        assert_eq!(x[cols + 3], 0.0);
        assert!(x[2 * cols..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn gelu_matches_its_definition() {
        let mut x: Vec<f32> = (-400..400).map(|i| i as f32 / 50.0).collect();
        let orig = x.clone();
        gelu_erf(&mut x);
        for (y, v) in x.iter().zip(&orig) {
            let want = 0.5 * v * (1.0 + libm::erff(v / std::f32::consts::SQRT_2));
            assert!((y - want).abs() < 1e-6, "gelu({v}) = {y} vs {want}");
        }
    }
}
