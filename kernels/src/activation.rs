//! GELU with the exact (erf-based) curve, vectorisable: candle's CPU `gelu_erf` calls libm's `erf`
//! once per value (a 32-passage batch of e5 makes 150 million calls), which profiles showed as a
//! large share of both a question's and a batch's time. The error function here is the rational
//! approximation Eigen uses for `float` (odd polynomial over even polynomial on [-4, 4], beyond
//! which erf is ±1 in f32): plain arithmetic the compiler turns into SIMD, within 1e-6 of libm.
//! (Not `mul_add`: without FMA in the build's target features it becomes a call to libm's
//! software `fmaf`, slower than the `erf` it replaces.)

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

/// erf(x) for f32, to within about 1e-6 absolute.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_473_9e-2;
    p / q
}

/// e^x for x ≤ 0 (a softmax's scores less their maximum), within 2e-7 relative of libm; below
/// -87 it stays at e⁻⁸⁷ (1.6e-38, nothing beside the maximum's 1). Cephes' `expf` (x = n·ln 2 +
/// r, a degree-7 polynomial in r, 2ⁿ built from its bits) in plain arithmetic the compiler
/// vectorises, where libm's `expf` is one call per score — 9 million of them for one passage of
/// 256 tokens. Nothing in it branches, converts a float to an integer with Rust's saturating `as`
/// (whose NaN and range checks kept the loop scalar) or adds with an overflow check (test builds
/// keep them, and they kept it scalar too): n is rounded by adding 1.5 · 2²³ and read from the
/// sum's bits.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds |v| < 2²² to an integer
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 0.0 { 0.0 } else { x };
    // n = x / ln 2 rounded to the nearest integer (−126..0), as a float and from its bits.
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let whole = shifted - ROUND;
    let n = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - whole * LN2_HIGH - whole * LN2_LOW;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

/// e^x for eight x ≤ 0 at once with AVX2 and FMA: the range reduction of
/// [`exp_nonpositive`], then a degree-5 polynomial (1 + r + r²·(c₂ + c₃r + c₄r² + c₅r³), fitted for
/// least relative error on |r| ≤ ln 2 / 2: within 3e-7 of libm in f32, the degree-7 one 2e-7)
/// in fused multiply-adds: 14 vector operations for eight values where the plain arithmetic
/// takes about twice as many. A softmax takes one exponential per attention score, 9 million
/// for one passage of 256 tokens.
#[cfg(target_arch = "x86_64")]
pub mod fused {
    #![allow(unsafe_code)]

    use std::arch::x86_64::*;

    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    const C2: f32 = 0.499_992_3;
    const C3: f32 = 0.166_671_14;
    const C4: f32 = 0.041_890_115;
    const C5: f32 = 0.008_312_524;

    /// e^x of each lane (x ≤ 0; below −87 it stays at e⁻⁸⁷, a NaN becomes e⁻⁸⁷ too).
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn exp_nonpositive(x: __m256) -> __m256 {
        // `max` returns its second operand when the first is NaN.
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let round = _mm256_set1_ps(ROUND);
        let shifted = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), round);
        let whole = _mm256_sub_ps(shifted, round);
        let r = _mm256_fnmadd_ps(whole, _mm256_set1_ps(LN2_HIGH), x);
        let r = _mm256_fnmadd_ps(whole, _mm256_set1_ps(LN2_LOW), r);
        let mut p = _mm256_fmadd_ps(_mm256_set1_ps(C5), r, _mm256_set1_ps(C4));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C2));
        let e = _mm256_fmadd_ps(_mm256_mul_ps(r, r), p, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // 2ⁿ from the bits of n = shifted − ROUND (−126..0): (n + 127) << 23.
        let n = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_castps_si256(round));
        let power = _mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127)));
        _mm256_mul_ps(e, _mm256_castsi256_ps(power))
    }
}

/// GELU of one value: `0.5 · x · (1 + erf(x / √2))`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu_erf`] over a CPU tensor of f32.
#[derive(Debug)]
pub struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(self.name(), storage, layout)?;
        let mut out = vec![0f32; input.len()];
        // A batch's activations are shared between the cores; a question's are too few to.
        const PER_TASK: usize = 1 << 16;
        if input.len() > PER_TASK {
            use rayon::prelude::*;
            out.par_chunks_mut(PER_TASK).zip(input.par_chunks(PER_TASK)).for_each(|(out, input)| {
                out.iter_mut().zip(input).for_each(|(o, &x)| *o = gelu_erf(x));
            });
        } else {
            out.iter_mut().zip(input).for_each(|(o, &x)| *o = gelu_erf(x));
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// The values of a contiguous f32 CPU tensor, as Sputnik's own candle operations take them.
pub fn contiguous_f32<'s>(
    op: &str,
    storage: &'s CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'s [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("{op} takes f32 tensors");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes a contiguous tensor");
    };
    Ok(&values[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_a_millionth_of_libm_everywhere() {
        // candle's CPU erf is libm's.
        let xs: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 / 10_000.0).collect();
        let tensor = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let exact: Vec<f32> = tensor.erf().unwrap().to_vec1().unwrap();
        let worst = xs.iter().zip(&exact).map(|(x, e)| (erf(*x) - e).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "worst error {worst}");
    }

    #[test]
    fn exp_is_within_a_few_ulps_of_libm_below_zero() {
        let mut worst = 0f32;
        for i in 0..=870_000 {
            let x = -(i as f32) / 10_000.0;
            let (ours, exact) = (exp_nonpositive(x), x.exp());
            worst = worst.max((ours - exact).abs() / exact);
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1e4), (-87f32).exp(), "flushed at -87, never 2⁻¹²⁷ garbage");
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), (-87f32).exp());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_fused_exp_is_within_a_few_ulps_of_libm_below_zero() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            eprintln!("no AVX2 with FMA on this CPU: the fused exponential is never used here");
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        let exp8 = |x: [f32; 8]| unsafe {
            use std::arch::x86_64::*;
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), fused::exp_nonpositive(_mm256_loadu_ps(x.as_ptr())));
            out
        };
        let mut worst = 0f32;
        for i in (0..870_000).step_by(8) {
            let x: [f32; 8] = std::array::from_fn(|j| -((i + j) as f32) / 10_000.0);
            for (ours, x) in exp8(x).iter().zip(x) {
                worst = worst.max((ours - x.exp()).abs() / x.exp());
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        let edges = exp8([0.0, -1e4, f32::NEG_INFINITY, f32::NAN, -87.0, -0.5, -1.0, -30.0]);
        assert_eq!(edges[0], 1.0);
        assert_eq!(edges[1..4], [edges[4]; 3], "flushed at -87, never 2⁻¹²⁷ garbage");
        assert!((edges[4] - (-87f32).exp()).abs() / (-87f32).exp() < 3e-7);
    }

    #[test]
    fn gelu_matches_candles_exact_gelu() {
        let device = candle_core::Device::Cpu;
        let values: Vec<f32> = (-3000..3000).map(|i| i as f32 / 500.0).collect();
        let x = candle_core::Tensor::from_vec(values, (4, 1500), &device).unwrap();
        let ours: Vec<f32> = x.apply_op1_no_bwd(&GeluErf).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let theirs: Vec<f32> = x.gelu_erf().unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
