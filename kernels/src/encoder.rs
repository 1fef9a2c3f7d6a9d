//! A BERT-architecture encoder over plain slices, for a batch of texts without padding: every
//! text's token rows lie one after another in one buffer, the linear layers run over all of
//! them at once (one 4-bit product per layer and role, [`Q4Matrix::matmul`], with as many rows
//! as the batch has tokens), and attention runs per text and head, so no token attends to
//! padding and no work is spent on it. A question is a batch of one.
//!
//! A layer is four 4-bit products (query, key and value in one), attention as two small f32
//! products per text and head (the `gemm` crate, which candle's own CPU products use), and loops
//! over buffers reused from layer to layer ([`Scratch`]); only each attention task allocates, its
//! scores and its slice of the context, which the cores fill side by side. Long batches share the cores: the products split their rows, attention its
//! (text, head) pairs, the element-wise steps their rows.
//!
//! Conventions as in the tensor path of Sputnik's `embed::quantized`: the scores are scaled by
//! 1/√(head width), softmax over each query's scores, LayerNorm after each residual, erf-based
//! GELU, mean pooling over each text's tokens and L2 normalisation.

use rayon::prelude::*;

use crate::activation::{exp_nonpositive, gelu_erf};
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
    /// `row += bias` for every row of `rows`.
    fn add_bias(rows: &mut [f32], bias: &[f32]) {
        for row in rows.chunks_exact_mut(bias.len()) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    }
}

simd_fn! {
    /// GELU of every value, in place.
    fn gelu_values(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = gelu_erf(*v));
    }
}

/// `out = x · Wᵀ + b` for the `tokens` rows of `x`.
fn dense(layer: Dense<'_>, x: &[f32], tokens: usize, out: &mut Vec<f32>) {
    let outputs = layer.bias.len();
    // No need to clear: the product writes every value.
    out.resize(tokens * outputs, 0.0);
    layer.weight.matmul(x, tokens, out);
    rows_mut(out, outputs, |rows| add_bias(rows, layer.bias));
}

/// Lanes a sum or maximum runs in: a float reduction in one accumulator is a chain the compiler
/// must keep in order; in eight it becomes vector instructions.
const LANES: usize = 8;

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
fn lane_max(values: &[f32]) -> f32 {
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

/// A softmax of each row of `scores` (rows of `width`) but for its normalisation: each score
/// becomes e^(score − the row's maximum), in place, and `inverses` gets 1 / each row's sum.
/// Attention normalises the product of these rows with the values instead (a head's width of
/// multiplications per row, not the text's length), and the sum is taken in the same pass as
/// the exponentials: two passes over the scores where a softmax makes four. With AVX2 and FMA
/// the exponentials are [`fused`](crate::activation::fused) ones, eight at a time.
fn exp_rows(scores: &mut [f32], width: usize, inverses: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe {
            fused_exp_rows(scores, width, inverses)
        };
        return;
    }
    portable_exp_rows(scores, width, inverses);
}

/// [`exp_rows`] in plain arithmetic.
fn portable_exp_rows(scores: &mut [f32], width: usize, inverses: &mut Vec<f32>) {
    inverses.clear();
    for row in scores.chunks_exact_mut(width) {
        let max = lane_max(row);
        let mut lanes = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (lane, score) in lanes.iter_mut().zip(chunk) {
                *score = exp_nonpositive(*score - max);
                *lane += *score;
            }
        }
        let mut tail = 0.0;
        for score in chunks.into_remainder() {
            *score = exp_nonpositive(*score - max);
            tail += *score;
        }
        inverses.push(1.0 / (lanes.iter().sum::<f32>() + tail));
    }
}

/// [`exp_rows`] with AVX2 and FMA. A row's last values (past a multiple of eight) are padded
/// with −∞, whose e⁻⁸⁷ adds nothing to a sum of at least 1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fused_exp_rows(scores: &mut [f32], width: usize, inverses: &mut Vec<f32>) {
    use std::arch::x86_64::*;

    inverses.clear();
    for row in scores.chunks_exact_mut(width) {
        let max = _mm256_set1_ps(lane_max(row));
        let mut sum = _mm256_setzero_ps();
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            sum = _mm256_add_ps(sum, exp_in_place(chunk.try_into().expect("a chunk of eight"), max));
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut padded = [f32::NEG_INFINITY; LANES];
            padded[..tail.len()].copy_from_slice(tail);
            sum = _mm256_add_ps(sum, exp_in_place(&mut padded, max));
            tail.copy_from_slice(&padded[..tail.len()]);
        }
        let mut lanes = [0f32; LANES];
        #[allow(unsafe_code)]
        // SAFETY: eight values are written to an array of eight.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum)
        };
        inverses.push(1.0 / lanes.iter().sum::<f32>());
    }
}

/// e^(value − max) of eight scores, in place; returned too, for the row's sum.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_in_place(values: &mut [f32; LANES], max: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    #[allow(unsafe_code)]
    // SAFETY: eight values are read from and written to an array of eight.
    unsafe {
        let e =
            crate::activation::fused::exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(values.as_ptr()), max));
        _mm256_storeu_ps(values.as_mut_ptr(), e);
        e
    }
}

/// `dst (m × n, rows of dst_rs) = scale · lhs (m × k) · rhs (k × n)`, each operand given by its
/// first element and its row and column strides in `values`. Checked against the slices' ends.
struct Product<'a> {
    m: usize,
    n: usize,
    k: usize,
    lhs: (&'a [f32], usize, usize),
    rhs: (&'a [f32], usize, usize),
    scale: f32,
}

impl Product<'_> {
    fn run(&self, dst: &mut [f32], dst_rs: usize) {
        let (m, n, k) = (self.m, self.n, self.k);
        let last = |rows: usize, columns: usize, (_, rs, cs): (&[f32], usize, usize)| {
            (rows - 1) * rs + (columns - 1) * cs
        };
        assert!(m > 0 && n > 0 && k > 0);
        assert!(last(m, k, self.lhs) < self.lhs.0.len(), "lhs out of bounds");
        assert!(last(k, n, self.rhs) < self.rhs.0.len(), "rhs out of bounds");
        assert!((m - 1) * dst_rs + n <= dst.len() && n <= dst_rs, "dst out of bounds");
        #[allow(unsafe_code)]
        // SAFETY: every element the product reads or writes lies inside its slice (asserted just
        // above from the shapes and strides); `dst` is borrowed mutably, the operands shared, so
        // they do not overlap.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                dst_rs as isize,
                false,
                self.lhs.0.as_ptr(),
                self.lhs.2 as isize,
                self.lhs.1 as isize,
                self.rhs.0.as_ptr(),
                self.rhs.2 as isize,
                self.rhs.1 as isize,
                0.0,
                self.scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

/// One head of one text: the context rows (`length` × head width) from the stacked query, key
/// and value rows of its tokens (`qkv`, rows of 3 × width).
fn attend(qkv: &[f32], length: usize, width: usize, head: usize, head_width: usize, context: &mut [f32]) {
    let stride = 3 * width;
    let at = head * head_width;
    SCORES.with_borrow_mut(|(scores, inverses)| {
        // Every score is written by the first product (it does not read its destination).
        scores.resize(length * length, 0.0);
        // scores = Q·Kᵀ / √(head width): rows of Q and of K are token rows of qkv.
        Product {
            m: length,
            n: length,
            k: head_width,
            lhs: (&qkv[at..], stride, 1),
            rhs: (&qkv[width + at..], 1, stride),
            scale: 1.0 / (head_width as f32).sqrt(),
        }
        .run(scores, length);
        exp_rows(scores, length, inverses);
        Product {
            m: length,
            n: head_width,
            k: length,
            lhs: (scores, length, 1),
            rhs: (&qkv[2 * width + at..], stride, 1),
            scale: 1.0,
        }
        .run(context, head_width);
        for (row, &inverse) in context.chunks_exact_mut(head_width).zip(inverses.iter()) {
            row.iter_mut().for_each(|v| *v *= inverse);
        }
    });
}

thread_local! {
    /// Each thread's attention scores, reused from task to task: a new buffer per text and head
    /// (256 KB at 256 tokens) was zeroed and faulted in every time. At most 1 MB (512 tokens).
    /// Beside them, 1 / each row's sum of exponentials.
    static SCORES: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Multi-head self-attention within each text: `s.context` (tokens × width) from `s.qkv`.
fn attention(s: &mut Scratch, lengths: &[usize], width: usize, heads: usize) {
    let head_width = width / heads;
    let tokens: usize = lengths.iter().sum();
    let starts: Vec<usize> = lengths.iter().scan(0, |at, &l| Some(std::mem::replace(at, *at + l))).collect();
    let tasks: Vec<(usize, usize)> =
        (0..lengths.len()).flat_map(|t| (0..heads).map(move |h| (t, h))).collect();
    let qkv = &s.qkv;
    let work = |&(text, head): &(usize, usize)| {
        let (start, length) = (starts[text], lengths[text]);
        let mut context = vec![0f32; length * head_width];
        if length > 0 {
            attend(
                &qkv[start * 3 * width..(start + length) * 3 * width],
                length,
                width,
                head,
                head_width,
                &mut context,
            );
        }
        context
    };
    let parts: Vec<Vec<f32>> = if tokens * tokens.min(512) * width >= 1 << 20 {
        tasks.par_iter().map(work).collect()
    } else {
        tasks.iter().map(work).collect()
    };
    s.context.clear();
    s.context.resize(tokens * width, 0.0);
    for (&(text, head), part) in tasks.iter().zip(&parts) {
        let start = starts[text];
        for (i, values) in part.chunks_exact(head_width).enumerate() {
            s.context[(start + i) * width + head * head_width..][..head_width].copy_from_slice(values);
        }
    }
}

/// One encoder layer over `x` (every text's rows, `lengths` rows each, of the model's width),
/// in place (the buffer itself may be swapped for one of the scratch buffers).
pub fn layer(x: &mut Vec<f32>, lengths: &[usize], weights: &LayerWeights<'_>, s: &mut Scratch) {
    let tokens: usize = lengths.iter().sum();
    let width = x.len() / tokens.max(1);
    dense(weights.qkv, x, tokens, &mut s.qkv);
    attention(s, lengths, width, weights.heads);
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
    fn exponentials_of_rows_cover_each_row_on_its_own() {
        type ExpRows = fn(&mut [f32], usize, &mut Vec<f32>);
        // On a CPU with AVX2 and FMA the first is the fused path, elsewhere both are portable.
        for exp_rows in [exp_rows as ExpRows, portable_exp_rows] {
            let (mut row, mut inverses) = (vec![1.0, 2.0, 3.0], Vec::new());
            exp_rows(&mut row, 3, &mut inverses);
            let e: Vec<f32> = [1f32, 2.0, 3.0].iter().map(|v| v.exp()).collect();
            let total: f32 = e.iter().sum();
            for (got, want) in row.iter().zip(&e) {
                assert!((got * inverses[0] - want / total).abs() < 1e-6);
            }
            // Each row on its own, the sum taken over the lanes and the tail (19 = 2 × 8 + 3).
            let mut rows: Vec<f32> = vec![0.0, 0.0, 5.0, -20.0, 7.0, 7.0];
            rows.extend((0..19).map(|i| i as f32 * 0.1));
            let tail: Vec<f32> = rows[6..].to_vec();
            exp_rows(&mut rows[..6], 2, &mut inverses);
            assert_eq!(inverses.len(), 3);
            assert_eq!((rows[0] * inverses[0], rows[1] * inverses[0]), (0.5, 0.5));
            assert!((rows[2] * inverses[1] - 1.0).abs() < 1e-6 && rows[3] * inverses[1] < 1e-10);
            assert_eq!((rows[4] * inverses[2], rows[5] * inverses[2]), (0.5, 0.5));
            exp_rows(&mut rows[6..], 19, &mut inverses);
            let max = tail.iter().copied().fold(f32::MIN, f32::max);
            let total: f32 = tail.iter().map(|v| (v - max).exp()).sum();
            assert!((inverses[0] - 1.0 / total).abs() < 1e-6, "{} against {}", inverses[0], 1.0 / total);
        }
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

    /// Stacked query, key and value rows for `tokens` tokens of width `width`.
    fn stacked(query: &[f32], key: &[f32], value: &[f32], width: usize) -> Vec<f32> {
        query
            .chunks(width)
            .zip(key.chunks(width))
            .zip(value.chunks(width))
            .flat_map(|((q, k), v)| q.iter().chain(k).chain(v).copied().collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn attention_of_one_token_is_its_value_and_rows_weigh_by_score() {
        let mut s =
            Scratch { qkv: stacked(&[1.0, 0.0], &[5.0, 5.0], &[0.25, -4.0], 2), ..Scratch::default() };
        attention(&mut s, &[1], 2, 1);
        assert_eq!(s.context, [0.25, -4.0]);

        // Two tokens, one head of width 1: the scores are q·k/1, softmax over the keys.
        let mut s =
            Scratch { qkv: stacked(&[1.0, 0.0], &[2.0, 0.0], &[10.0, 20.0], 1), ..Scratch::default() };
        attention(&mut s, &[2], 1, 1);
        let first = 1.0 / (1.0 + (-2f32).exp());
        assert!((s.context[0] - (10.0 * first + 20.0 * (1.0 - first))).abs() < 1e-4);
        assert!((s.context[1] - 15.0).abs() < 1e-4, "equal scores average the values");
    }

    /// The attention of one text computed directly from its definition.
    fn attention_by_definition(q: &[f32], k: &[f32], v: &[f32], width: usize, heads: usize) -> Vec<f32> {
        let tokens = q.len() / width;
        let hw = width / heads;
        let mut out = vec![0f32; tokens * width];
        for h in 0..heads {
            for i in 0..tokens {
                let scores: Vec<f64> = (0..tokens)
                    .map(|j| {
                        (0..hw)
                            .map(|d| f64::from(q[i * width + h * hw + d] * k[j * width + h * hw + d]))
                            .sum::<f64>()
                            / (hw as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..hw {
                    let value: f64 =
                        (0..tokens).map(|j| weights[j] / total * f64::from(v[j * width + h * hw + d])).sum();
                    out[i * width + h * hw + d] = value as f32;
                }
            }
        }
        out
    }

    #[test]
    fn texts_of_a_batch_attend_only_to_themselves() {
        let (width, heads) = (8, 2);
        let lengths = [3, 5, 1];
        let tokens: usize = lengths.iter().sum();
        let values =
            |seed: f32| -> Vec<f32> { (0..tokens * width).map(|i| (i as f32 * seed).sin() * 2.0).collect() };
        let (q, k, v) = (values(0.37), values(1.13), values(0.71));
        let mut s = Scratch { qkv: stacked(&q, &k, &v, width), ..Scratch::default() };
        attention(&mut s, &lengths, width, heads);
        let mut start = 0;
        for length in lengths {
            let rows = start * width..(start + length) * width;
            let expected =
                attention_by_definition(&q[rows.clone()], &k[rows.clone()], &v[rows.clone()], width, heads);
            for (got, want) in s.context[rows].iter().zip(&expected) {
                assert!((got - want).abs() < 1e-5, "{got} against {want}");
            }
            start += length;
        }
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
