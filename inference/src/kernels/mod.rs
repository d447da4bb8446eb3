//! CPU kernels of the llama forward pass: quantized matmul (`quant`) and the
//! small element-wise and attention ops (`ops`); softmax and GELU over whole
//! rows for Whisper's encoder (`vector`). They work on plain `f32` slices
//! owned by the caller, so the forward pass allocates nothing per step.
//! `multiversion!` builds plain-Rust bodies per instruction set and picks
//! one at run time; the matmul tiles have hand-written SIMD (`quant::x86`).

/// Which build of a [`multiversion!`] body this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The best [`Level`] this CPU has (the feature checks are cached by std).
pub(crate) fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        // Every feature the AVX-512 build enables, VL included (Xeon Phi and
        // some VMs have F without it).
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("fma") {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// `pub fn name(args)` running `generic` (an `#[inline(always)]` function of
/// plain Rust) compiled for the best instruction set this CPU has: AVX-512,
/// AVX2 + FMA, or the baseline. The builds compute the same operations, so
/// they agree bit for bit wherever the body does not reassociate.
macro_rules! multiversion {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) => $generic:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                match $crate::kernels::level() {
                    // SAFETY: `level` found the features each build enables.
                    $crate::kernels::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::kernels::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::Level::Baseline => {}
                }
            }
            $generic($($arg),*)
        }
    };
}

pub mod ops;
pub mod quant;
pub mod vector;
