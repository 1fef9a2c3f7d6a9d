//! A BERT-architecture encoder over plain slices, for a batch of texts without padding: every
//! text's token rows lie one after another in one buffer, the linear layers run over all of
//! them at once (one 4-bit product per layer and role, [`Q4Matrix::matmul`], with as many rows
//! as the batch has tokens), and attention runs per text and head, so no token attends to
//! padding and no work is spent on it. A question is a batch of one.
//!
//! A layer is four 4-bit products (query, key and value in one), attention as two small products
//! per text and head (`crate::attention`: in 8 bits with VNNI, in f32 otherwise), and loops over
//! buffers reused from layer to layer ([`Scratch`]); only each attention task allocates, its
//! slice of the context, which the cores fill side by side. Long batches share the cores: the
//! products split their rows, attention its (text, head) pairs, the element-wise steps their rows.
//!
//! Conventions as in the tensor path of Sputnik's `embed::quantized`: the scores are scaled by
//! 1/√(head width), softmax over each query's scores, LayerNorm after each residual, erf-based
//! GELU, mean pooling over each text's tokens and L2 normalisation.

use rayon::prelude::*;

use crate::activation::gelu_erf;
use crate::attention::attention;
use crate::q4::Q4Matrix;

/// A linear layer: 4-bit weights (outputs × inputs) and an f32 bias per output.
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    pub weight: &'a Q4Matrix,
    pub bias: &'a [f32],
}

/// LayerNorm's scale and shift per feature, and its epsilon.
#[derive(Debug, Clone, Copy)]
pub struct Norm<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub eps: f32,
}

/// One encoder layer's weights.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a> {
    /// Query, key and value stacked: 3 × width outputs, in that order.
    pub qkv: Dense<'a>,
    pub output: Dense<'a>,
    pub attention_norm: Norm<'a>,
    pub up: Dense<'a>,
    pub down: Dense<'a>,
    pub output_norm: Norm<'a>,
    pub heads: usize,
}

/// Buffers a batch's pass reuses in every layer.
#[derive(Debug, Default)]
pub struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    /// Attention's context rows per text and head, before they are gathered into `context`.
    heads: Vec<f32>,
    sum: Vec<f32>,
    hidden: Vec<f32>,
}

/// Values from which an element-wise step is shared between the cores.
const PARALLEL_FROM: usize = 1 << 15;

/// `f` over runs of whole rows of `x` (rows of `width`), on every core when `x` is large.
fn rows_mut(x: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    if x.len() < 2 * PARALLEL_FROM {
        return f(x);
    }
    let rows = (PARALLEL_FROM / width).max(1);
    x.par_chunks_mut(rows * width).for_each(f);
}

/// [`rows_mut`] with the same rows of a second buffer of the same shape beside them.
fn rows_mut_with(x: &mut [f32], other: &[f32], width: usize, f: impl Fn(&mut [f32], &[f32]) + Sync + Send) {
    if x.len() < 2 * PARALLEL_FROM {
        return f(x, other);
    }
    let rows = (PARALLEL_FROM / width).max(1);
    x.par_chunks_mut(rows * width).zip(other.par_chunks(rows * width)).for_each(|(x, other)| f(x, other));
}

simd_fn! {
    /// GELU of every value, in place.
    fn gelu_values(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = gelu_erf(*v));
    }
}

/// `out = x · Wᵀ + b` for the `tokens` rows of `x`.
fn dense(layer: Dense<'_>, x: &[f32], tokens: usize, out: &mut Vec<f32>) {
    // No need to clear: the product writes every value.
    out.resize(tokens * layer.bias.len(), 0.0);
    layer.weight.matmul(x, tokens, Some(layer.bias), out);
}

/// Lanes a sum or maximum runs in: a float reduction in one accumulator is a chain the compiler
/// must keep in order; in eight it becomes vector instructions.
pub(crate) const LANES: usize = 8;

/// `Σ f(v)` over `values`, in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, &v)| *l += f(v));
    }
    lanes.iter().sum::<f32>() + tail
}

/// The largest of `values` (−∞ for none), in [`LANES`] partial maxima.
#[inline(always)]
pub(crate) fn lane_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, &v)| *l = if v > *l { v } else { *l });
    }
    lanes.iter().copied().fold(tail, f32::max)
}

/// LayerNorm of every row of `x` (rows of `norm.weight.len()` values), in place.
pub fn layer_norm(x: &mut [f32], norm: Norm<'_>) {
    rows_mut(x, norm.weight.len(), |rows| normalise_rows(rows, norm));
}

simd_fn! {
    /// LayerNorm of each row of `rows`, in place.
    fn normalise_rows(rows: &mut [f32], norm: Norm<'_>) {
        let width = norm.weight.len();
        for row in rows.chunks_exact_mut(width) {
            let mean = lane_sum(row, |v| v) / width as f32;
            let variance = lane_sum(row, |v| (v - mean) * (v - mean)) / width as f32;
            let scale = 1.0 / (variance + norm.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(norm.weight).zip(norm.bias) {
                *v = (*v - mean) * scale * w + b;
            }
        }
    }
}

simd_fn! {
    /// `rows += residual`, then LayerNorm of each row, in place.
    fn add_and_normalise_rows(rows: &mut [f32], residual: &[f32], norm: Norm<'_>) {
        rows.iter_mut().zip(residual).for_each(|(v, r)| *v += r);
        normalise_rows(rows, norm);
    }
}

/// `x += residual`, then LayerNorm, in place; the rows shared between the cores when many.
fn add_and_norm(x: &mut [f32], residual: &[f32], norm: Norm<'_>) {
    rows_mut_with(x, residual, norm.weight.len(), |rows, residual| {
        add_and_normalise_rows(rows, residual, norm)
    });
}

/// The embedding sum (word rows already in `x`, text after text as `lengths` says; plus each
/// text's position rows from position 0 and the token type's row) and its LayerNorm, in place.
pub fn embeddings(x: &mut [f32], lengths: &[usize], positions: &[f32], token_type: &[f32], norm: Norm<'_>) {
    let width = token_type.len();
    let mut rest = &mut *x;
    for &length in lengths {
        let (text, tail) = rest.split_at_mut(length * width);
        for (row, position) in text.chunks_exact_mut(width).zip(positions.chunks_exact(width)) {
            for ((v, p), t) in row.iter_mut().zip(position).zip(token_type) {
                *v += p + t;
            }
        }
        rest = tail;
    }
    layer_norm(x, norm);
}

/// One encoder layer over `x` (every text's rows, `lengths` rows each, of the model's width),
/// in place (the buffer itself may be swapped for one of the scratch buffers).
pub fn layer(x: &mut Vec<f32>, lengths: &[usize], weights: &LayerWeights<'_>, s: &mut Scratch) {
    let tokens: usize = lengths.iter().sum();
    let width = x.len() / tokens.max(1);
    dense(weights.qkv, x, tokens, &mut s.qkv);
    attention(&s.qkv, &mut s.context, &mut s.heads, lengths, width, weights.heads);
    dense(weights.output, &s.context, tokens, &mut s.sum);
    add_and_norm(&mut s.sum, x, weights.attention_norm);
    std::mem::swap(x, &mut s.sum);
    dense(weights.up, x, tokens, &mut s.hidden);
    let hidden_width = weights.up.bias.len();
    rows_mut(&mut s.hidden, hidden_width, gelu_values);
    dense(weights.down, &s.hidden, tokens, &mut s.sum);
    add_and_norm(&mut s.sum, x, weights.output_norm);
    std::mem::swap(x, &mut s.sum);
}

/// The mean of each text's rows, L2-normalised: one vector per text.
pub fn mean_pool(x: &[f32], lengths: &[usize]) -> Vec<Vec<f32>> {
    let tokens: usize = lengths.iter().sum();
    let width = x.len() / tokens.max(1);
    let mut rest = x;
    lengths
        .iter()
        .map(|&length| {
            let (text, tail) = rest.split_at(length * width);
            rest = tail;
            let mut mean = vec![0f32; width];
            for row in text.chunks_exact(width) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
            }
            let count = length.max(1) as f32;
            mean.iter_mut().for_each(|m| *m /= count);
            let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            mean.iter_mut().for_each(|m| *m /= norm);
            mean
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_reductions_cover_every_value() {
        let values: Vec<f32> = (0..21).map(|i| i as f32 - 7.0).collect();
        assert_eq!(lane_sum(&values, |v| v), values.iter().sum::<f32>());
        assert_eq!(lane_sum(&values[..3], |v| v * v), 49.0 + 36.0 + 25.0);
        assert_eq!(lane_max(&values), 13.0);
        assert_eq!(lane_max(&values[..9]), 1.0, "the largest in the tail past the lanes");
        assert_eq!(lane_max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn layer_norm_centres_and_scales_each_row() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -2.0, 0.0, 2.0, 4.0];
        let (weight, bias) = (vec![1.0, 1.0, 2.0, 1.0], vec![0.0, 0.0, 0.0, 0.5]);
        layer_norm(&mut x, Norm { weight: &weight, bias: &bias, eps: 0.0 });
        let sd = 1.25f32.sqrt();
        let expected = [-1.5 / sd, -0.5 / sd, 1.0 / sd, 1.5 / sd + 0.5];
        for (got, want) in x[..4].iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} against {want}");
        }
        // The second row (mean 1, variance 5) standardises to the same shape.
        assert!((x[4] - (-3.0 / 5f32.sqrt())).abs() < 1e-6);
    }

    #[test]
    fn mean_pool_is_the_normalised_mean_of_each_text() {
        let pooled = mean_pool(&[3.0, 0.0, 1.0, 4.0, 0.0, -2.0], &[2, 1]);
        assert!(
            (pooled[0][0] - 2.0 / 8f32.sqrt()).abs() < 1e-6
                && (pooled[0][1] - 2.0 / 8f32.sqrt()).abs() < 1e-6
        );
        assert_eq!(pooled[1], [0.0, -1.0]);
    }

    #[test]
    fn embeddings_restart_positions_for_each_text() {
        let norm = Norm { weight: &[1.0, 1.0], bias: &[0.0, 0.0], eps: 0.0 };
        let mut x = vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let positions = [0.0, 0.0, 0.0, -2.0];
        embeddings(&mut x, &[2, 1], &positions, &[0.0, 0.0], norm);
        // The first text's second token gets position 1's row (1 − 2 < 0); the second text, one
        // token, starts again at position 0.
        assert_eq!(x, [-1.0, 1.0, 1.0, -1.0, -1.0, 1.0]);
    }
}
