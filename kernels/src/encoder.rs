//! A BERT-architecture encoder layer over plain slices, for one short input (a question): the
//! same arithmetic as the tensor path in Sputnik's `embed::quantized`, without a tensor per
//! operation. A question of 15 tokens runs some 20 operations in each of 12 layers, each on a few
//! thousand values, so allocating, dispatching and copying tensors costs about as much as the
//! arithmetic; here each layer is six 4-bit products ([`Q4Matrix::matmul`]) and loops over
//! buffers reused from layer to layer ([`Scratch`]).
//!
//! Conventions as in the tensor path: the query is scaled by 1/√(head width) before the scores,
//! softmax over each query's scores, LayerNorm after each residual, erf-based GELU, mean pooling
//! over the tokens and L2 normalisation.

use crate::activation::gelu_erf;
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
    pub query: Dense<'a>,
    pub key: Dense<'a>,
    pub value: Dense<'a>,
    pub output: Dense<'a>,
    pub attention_norm: Norm<'a>,
    pub up: Dense<'a>,
    pub down: Dense<'a>,
    pub output_norm: Norm<'a>,
    pub heads: usize,
}

/// Buffers one input's pass reuses in every layer.
#[derive(Debug, Default)]
pub struct Scratch {
    query: Vec<f32>,
    key: Vec<f32>,
    value: Vec<f32>,
    context: Vec<f32>,
    sum: Vec<f32>,
    hidden: Vec<f32>,
    scores: Vec<f32>,
}

/// `out = x · Wᵀ + b` for the `tokens` rows of `x`.
fn dense(layer: Dense<'_>, x: &[f32], tokens: usize, out: &mut Vec<f32>) {
    let outputs = layer.bias.len();
    out.clear();
    out.resize(tokens * outputs, 0.0);
    layer.weight.matmul(x, tokens, out);
    for row in out.chunks_exact_mut(outputs) {
        row.iter_mut().zip(layer.bias).for_each(|(v, b)| *v += b);
    }
}

/// LayerNorm of every row of `x` (rows of `norm.weight.len()` values), in place.
pub fn layer_norm(x: &mut [f32], norm: Norm<'_>) {
    let width = norm.weight.len();
    for row in x.chunks_exact_mut(width) {
        let mean = row.iter().sum::<f32>() / width as f32;
        let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
        let scale = 1.0 / (variance + norm.eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(norm.weight).zip(norm.bias) {
            *v = (*v - mean) * scale * w + b;
        }
    }
}

/// The embedding sum (word rows already in `x`, plus the first positions' rows and the token
/// type's row) and its LayerNorm, in place.
pub fn embeddings(x: &mut [f32], positions: &[f32], token_type: &[f32], norm: Norm<'_>) {
    let width = token_type.len();
    for (row, position) in x.chunks_exact_mut(width).zip(positions.chunks_exact(width)) {
        for ((v, p), t) in row.iter_mut().zip(position).zip(token_type) {
            *v += p + t;
        }
    }
    layer_norm(x, norm);
}

/// Multi-head self-attention of `tokens` rows, every token visible to every other.
fn attention(s: &mut Scratch, tokens: usize, width: usize, heads: usize) {
    let head_width = width / heads;
    let scale = 1.0 / (head_width as f32).sqrt();
    s.query.iter_mut().for_each(|v| *v *= scale);
    s.context.clear();
    s.context.resize(tokens * width, 0.0);
    s.scores.resize(tokens, 0.0);
    for head in 0..heads {
        let part = head * head_width..(head + 1) * head_width;
        for i in 0..tokens {
            let query = &s.query[i * width..][part.clone()];
            for (j, score) in s.scores.iter_mut().enumerate() {
                let key = &s.key[j * width..][part.clone()];
                *score = query.iter().zip(key).map(|(q, k)| q * k).sum();
            }
            let max = s.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for score in s.scores.iter_mut() {
                *score = (*score - max).exp();
                total += *score;
            }
            let context = &mut s.context[i * width..][part.clone()];
            for (j, score) in s.scores.iter().enumerate() {
                let weight = score / total;
                let value = &s.value[j * width..][part.clone()];
                context.iter_mut().zip(value).for_each(|(c, v)| *c += weight * v);
            }
        }
    }
}

/// One encoder layer over `x` (`tokens` rows of the model's width), in place.
pub fn layer(x: &mut [f32], tokens: usize, weights: &LayerWeights<'_>, s: &mut Scratch) {
    let width = x.len() / tokens;
    dense(weights.query, x, tokens, &mut s.query);
    dense(weights.key, x, tokens, &mut s.key);
    dense(weights.value, x, tokens, &mut s.value);
    attention(s, tokens, width, weights.heads);
    dense(weights.output, &s.context, tokens, &mut s.sum);
    s.sum.iter_mut().zip(x.iter()).for_each(|(v, r)| *v += r);
    layer_norm(&mut s.sum, weights.attention_norm);
    x.copy_from_slice(&s.sum);
    dense(weights.up, x, tokens, &mut s.hidden);
    s.hidden.iter_mut().for_each(|v| *v = gelu_erf(*v));
    dense(weights.down, &s.hidden, tokens, &mut s.sum);
    s.sum.iter_mut().zip(x.iter()).for_each(|(v, r)| *v += r);
    layer_norm(&mut s.sum, weights.output_norm);
    x.copy_from_slice(&s.sum);
}

/// The mean of the rows of `x`, L2-normalised.
pub fn mean_pool(x: &[f32], tokens: usize) -> Vec<f32> {
    let width = x.len() / tokens.max(1);
    let mut mean = vec![0f32; width];
    for row in x.chunks_exact(width) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    let count = tokens.max(1) as f32;
    mean.iter_mut().for_each(|m| *m /= count);
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    mean.iter_mut().for_each(|m| *m /= norm);
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn attention_of_one_token_is_its_value_and_rows_weigh_by_score() {
        let mut s = Scratch {
            query: vec![1.0, 0.0],
            key: vec![5.0, 5.0],
            value: vec![0.25, -4.0],
            ..Scratch::default()
        };
        attention(&mut s, 1, 2, 1);
        assert_eq!(s.context, [0.25, -4.0]);

        // Two tokens, one head of width 1: the scores are q·k/1, softmax over the keys.
        let mut s = Scratch {
            query: vec![1.0, 0.0],
            key: vec![2.0, 0.0],
            value: vec![10.0, 20.0],
            ..Scratch::default()
        };
        attention(&mut s, 2, 1, 1);
        let first = 1.0 / (1.0 + (-2f32).exp());
        assert!((s.context[0] - (10.0 * first + 20.0 * (1.0 - first))).abs() < 1e-4);
        assert!((s.context[1] - 15.0).abs() < 1e-4, "equal scores average the values");
    }

    #[test]
    fn mean_pool_is_the_normalised_mean() {
        let pooled = mean_pool(&[3.0, 0.0, 1.0, 4.0], 2);
        assert!((pooled[0] - 2.0 / 8f32.sqrt()).abs() < 1e-6 && (pooled[1] - 2.0 / 8f32.sqrt()).abs() < 1e-6);
    }
}
