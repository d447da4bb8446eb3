//! Element-wise ops and attention over plain `f32` slices.

/// `out = x / rms(x) * weight`, row by row (`x.len()` a multiple of `weight.len()`).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        // Sum in f64, as ggml does: long rows lose bits in an f32 sum.
        let ss: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let scale = 1.0 / ((ss / n as f64) as f32 + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// `gate_up` rows are `[gate | up]`; writes `silu(gate) * up` into `out` rows.
pub fn silu_mul(gate_up: &[f32], n_ff: usize, out: &mut [f32]) {
    for (gu, o) in gate_up.chunks_exact(2 * n_ff).zip(out.chunks_exact_mut(n_ff)) {
        let (g, u) = gu.split_at(n_ff);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    }
}

/// `x += y` element-wise.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Cosines and sines of RoPE for one position, computed as ggml does
/// (`theta *= base^(-2/dims)` per pair) so rounding follows llama.cpp.
pub fn rope_angles(pos: usize, rope_dim: usize, base: f32, freq_factors: Option<&[f32]>, cs: &mut [(f32, f32)]) {
    let theta_scale = base.powf(-2.0 / rope_dim as f32);
    let mut theta = pos as f32;
    for (i, c) in cs.iter_mut().take(rope_dim / 2).enumerate() {
        let t = match freq_factors {
            Some(f) => theta / f.get(i).copied().unwrap_or(1.0),
            None => theta,
        };
        *c = (t.cos(), t.sin());
        theta *= theta_scale;
    }
}

/// Rotate every head of one token's Q or K row in place.
pub fn rope(row: &mut [f32], head_dim: usize, cs: &[(f32, f32)], neox: bool) {
    for head in row.chunks_exact_mut(head_dim) {
        if neox {
            let half = cs.len();
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = a * s + b * c;
            }
        } else {
            for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cs) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = a * s + b * c;
            }
        }
    }
}

/// Causal attention of one query head over `len` cached positions.
/// `k` and `v` hold `len` rows of `kv_stride` floats; this head's slice
/// starts at `kv_off`. `scores` is scratch of at least `len`.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    kv_stride: usize,
    kv_off: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut max = f32::NEG_INFINITY;
    for (p, s) in scores.iter_mut().take(len).enumerate() {
        let kr = &k[p * kv_stride + kv_off..p * kv_stride + kv_off + hd];
        let dot: f32 = q.iter().zip(kr).map(|(a, b)| a * b).sum();
        *s = dot * scale;
        max = max.max(*s);
    }
    let mut sum = 0f32;
    for s in scores.iter_mut().take(len) {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    out.fill(0.0);
    for (p, &s) in scores.iter().take(len).enumerate() {
        let w = s * inv;
        let vr = &v[p * kv_stride + kv_off..p * kv_stride + kv_off + hd];
        for (o, &x) in out.iter_mut().zip(vr) {
            *o += w * x;
        }
    }
}

/// Log-softmax of `logits` into `out`.
pub fn log_softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let lse = max + sum.ln();
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = l - lse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x = [3.0f32, -4.0, 0.0, 5.0];
        let mut out = [0f32; 4];
        rms_norm(&x, &[1.0; 4], 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let mut cs = vec![(0.0, 0.0); 4];
        rope_angles(0, 8, 10_000.0, None, &mut cs);
        let mut row: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let orig = row.clone();
        rope(&mut row, 8, &cs, false);
        assert_eq!(row, orig);
        rope_angles(17, 8, 10_000.0, None, &mut cs);
        for neox in [false, true] {
            let mut r = orig.clone();
            rope(&mut r, 8, &cs, neox);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = r.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-3);
            assert_ne!(r, orig);
        }
    }

    #[test]
    fn attention_over_one_position_returns_its_value() {
        let q = [1.0f32, 0.0];
        let k = [0.5f32, 0.5, 9.0, 9.0];
        let v = [2.0f32, 3.0, 7.0, 7.0];
        let mut scores = [0f32; 1];
        let mut out = [0f32; 2];
        attend(&q, &k, &v, 1, 4, 0, &mut scores, &mut out);
        assert_eq!(out, [2.0, 3.0]);
    }
}
