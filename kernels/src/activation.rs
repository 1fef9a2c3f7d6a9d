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
