//! 4-bit weights × 8-bit activations on the CPU: the encoder's linear layers without expanding
//! the weights. Each weight row keeps GGML's Q4_0 blocks (32 weights, one scale; element `j` in
//! the low nibble of byte `j`, element `j + 16` in the high one); each input row is quantised to
//! 8 bits per block of 32 with its own scale, as the reference engine does, and a dot product is
//! Σ scale_w · scale_x · Σ w·x over blocks, the inner sum in integers.
//!
//! With AVX2 (checked at run time) a block is unpacked once and multiplied with up to four input
//! rows (`maddubs` on |w| and x·sign(w), as in GGML), and the output rows are shared between the
//! cores; elsewhere a portable loop computes the same integers. A [`candle_core::CustomOp1`]
//! makes it a tensor operation like any other.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::f16;

/// Weights in a block.
const BLOCK: usize = 32;
/// Bytes of a Q4_0 block in a GGUF file: an f16 scale and 16 bytes of nibbles.
const Q4_0_BYTES: usize = 18;
/// Input rows multiplied with one unpacked weight block.
const ROWS_AT_ONCE: usize = 4;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct BlockQ4 {
    scale: f32,
    quants: [u8; 16],
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct BlockQ8 {
    scale: f32,
    quants: [i8; BLOCK],
}

/// A weight matrix of `rows` outputs × `columns` inputs in Q4_0 blocks.
#[derive(Debug, Clone)]
pub struct Q4Matrix {
    rows: usize,
    columns: usize,
    blocks: Vec<BlockQ4>,
}

impl Q4Matrix {
    /// From GGUF's Q4_0 bytes of a `rows` × `columns` matrix (row-major).
    pub fn from_q4_0(bytes: &[u8], rows: usize, columns: usize) -> Result<Q4Matrix, String> {
        if columns == 0 || !columns.is_multiple_of(BLOCK) {
            return Err(format!("{columns} columns are not whole blocks of {BLOCK}"));
        }
        let count = rows * columns / BLOCK;
        if bytes.len() != count * Q4_0_BYTES {
            return Err(format!("{} bytes for {count} blocks of {Q4_0_BYTES}", bytes.len()));
        }
        let blocks = bytes
            .chunks_exact(Q4_0_BYTES)
            .map(|b| BlockQ4 {
                scale: f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
                quants: b[2..].try_into().expect("16 bytes"),
            })
            .collect();
        Ok(Q4Matrix { rows, columns, blocks })
    }

    /// `out[i][j] = Σ_k x[i][k] · w[j][k]` for the `m` rows of `x` (`m` × columns, row-major);
    /// `out` is `m` × rows.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let (n, k) = (self.rows, self.columns);
        assert_eq!(x.len(), m * k, "input of {} values for {m} rows of {k}", x.len());
        assert_eq!(out.len(), m * n, "output of {} values for {m} rows of {n}", out.len());
        let per_row = k / BLOCK;
        let activations = quantize(x);
        // Transposed while computing (each weight row yields its m outputs together), so the
        // cores can split the weight rows into contiguous runs.
        let mut transposed = vec![0f32; n * m];
        let work = |first_row: usize, chunk: &mut [f32]| {
            for (r, outputs) in chunk.chunks_mut(m).enumerate() {
                let row = first_row + r;
                let weights = &self.blocks[row * per_row..(row + 1) * per_row];
                dot_rows(weights, &activations, per_row, outputs);
            }
        };
        let threads = if m * n * k >= 1 << 18 { rayon::current_num_threads().max(1) } else { 1 };
        let rows_per_task = n.div_ceil(threads * 4).max(1);
        if threads == 1 {
            work(0, &mut transposed);
        } else {
            use rayon::prelude::*;
            transposed
                .par_chunks_mut(rows_per_task * m)
                .enumerate()
                .for_each(|(task, chunk)| work(task * rows_per_task, chunk));
        }
        for (j, outputs) in transposed.chunks(m).enumerate() {
            for (i, value) in outputs.iter().enumerate() {
                out[i * n + j] = *value;
            }
        }
    }
}

/// Quantises `x` to 8 bits per block of 32 (scale = largest magnitude / 127); rows are whole
/// blocks, so row `i`'s blocks follow each other.
fn quantize(x: &[f32]) -> Vec<BlockQ8> {
    x.chunks_exact(BLOCK)
        .map(|values| {
            let largest = values.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = largest / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut quants = [0i8; BLOCK];
            for (q, v) in quants.iter_mut().zip(values) {
                *q = (v * inverse).round() as i8;
            }
            BlockQ8 { scale, quants }
        })
        .collect()
}

/// One weight row against every quantised input row: `outputs[i]` for input row `i`.
fn dot_rows(weights: &[BlockQ4], activations: &[BlockQ8], per_row: usize, outputs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked just above); the slices are sized by the caller.
        unsafe {
            avx2::dot_rows(weights, activations, per_row, outputs)
        };
        return;
    }
    portable_dot_rows(weights, activations, per_row, outputs);
}

fn portable_dot_rows(weights: &[BlockQ4], activations: &[BlockQ8], per_row: usize, outputs: &mut [f32]) {
    for (i, output) in outputs.iter_mut().enumerate() {
        let row = &activations[i * per_row..(i + 1) * per_row];
        let mut sum = 0f32;
        for (w, x) in weights.iter().zip(row) {
            let mut dot = 0i32;
            for j in 0..16 {
                let low = i32::from(w.quants[j] & 0x0F) - 8;
                let high = i32::from(w.quants[j] >> 4) - 8;
                dot += low * i32::from(x.quants[j]) + high * i32::from(x.quants[j + 16]);
            }
            sum += w.scale * x.scale * dot as f32;
        }
        *output = sum;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #![allow(unsafe_code)]

    use std::arch::x86_64::*;

    use super::{BlockQ4, BlockQ8, ROWS_AT_ONCE};

    /// Sums the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
    }

    /// A block's 32 weights as signed bytes (-8..7), in element order.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn unpack(block: &BlockQ4) -> __m256i {
        // SAFETY: 16 bytes are read from a 16-byte array.
        let packed = unsafe { _mm_loadu_si128(block.quants.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0F);
        let low = _mm_and_si128(packed, mask);
        let high = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
        _mm256_sub_epi8(_mm256_set_m128i(high, low), _mm256_set1_epi8(8))
    }

    /// Σ w·x over one block, as eight i32 lanes turned to f32.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_dot(magnitudes: __m256i, weights: __m256i, x: &BlockQ8) -> __m256 {
        // SAFETY: 32 bytes are read from a 32-byte array.
        let values = unsafe { _mm256_loadu_si256(x.quants.as_ptr().cast()) };
        // |w| (unsigned) × x·sign(w) (signed) = w·x, summed in pairs to i16, then to i32.
        let signed = _mm256_sign_epi8(values, weights);
        let pairs = _mm256_maddubs_epi16(magnitudes, signed);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    /// See [`super::dot_rows`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows(
        weights: &[BlockQ4],
        activations: &[BlockQ8],
        per_row: usize,
        outputs: &mut [f32],
    ) {
        let m = outputs.len();
        let mut first = 0;
        while first < m {
            let count = (m - first).min(ROWS_AT_ONCE);
            let mut sums = [_mm256_setzero_ps(); ROWS_AT_ONCE];
            for (b, block) in weights.iter().enumerate() {
                // SAFETY: AVX2 is enabled for this function.
                let unpacked = unsafe { unpack(block) };
                let magnitudes = _mm256_sign_epi8(unpacked, unpacked);
                for (r, sum) in sums.iter_mut().enumerate().take(count) {
                    let x = &activations[(first + r) * per_row + b];
                    // SAFETY: as above.
                    let dot = unsafe { block_dot(magnitudes, unpacked, x) };
                    *sum = _mm256_fmadd_ps(dot, _mm256_set1_ps(block.scale * x.scale), *sum);
                }
            }
            for (r, sum) in sums.iter().enumerate().take(count) {
                // SAFETY: as above.
                outputs[first + r] = unsafe { self::sum(*sum) };
            }
            first += count;
        }
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

/// `x · Wᵀ` as a candle operation on CPU tensors of f32: `x` is (…, columns), the result
/// (…, rows).
#[derive(Debug)]
pub struct Q4MatMul<'a>(pub &'a Q4Matrix);

impl CustomOp1 for Q4MatMul<'_> {
    fn name(&self) -> &'static str {
        "q4-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(self.name(), storage, layout)?;
        let dims = layout.shape().dims();
        let (&columns, batch) =
            dims.split_last().ok_or_else(|| candle_core::Error::Msg("a scalar".into()))?;
        if columns != self.0.columns {
            candle_core::bail!("q4-matmul: {columns} inputs for a matrix of {}", self.0.columns);
        }
        let m: usize = batch.iter().product();
        let mut out = vec![0f32; m * self.0.rows];
        self.0.matmul(input, m, &mut out);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("not a scalar") = self.0.rows;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible matrix and input from a small generator.
    fn sample(rows: usize, columns: usize, m: usize) -> (Vec<u8>, Vec<f32>) {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut bytes = Vec::new();
        for _ in 0..rows * columns / BLOCK {
            let scale = f16::from_f32((next() % 1000) as f32 / 20_000.0 + 0.001);
            bytes.extend(scale.to_bits().to_le_bytes());
            bytes.extend((0..16).map(|_| next() as u8));
        }
        let x = (0..m * columns).map(|_| ((next() % 2001) as f32 - 1000.0) / 300.0).collect();
        (bytes, x)
    }

    #[test]
    fn the_fast_path_computes_what_the_portable_one_does_and_both_match_f32() {
        for (rows, columns, m) in [(8, 64, 1), (40, 384, 3), (64, 384, 9), (48, 1536, 5)] {
            let (bytes, x) = sample(rows, columns, m);
            let matrix = Q4Matrix::from_q4_0(&bytes, rows, columns).unwrap();
            let mut fast = vec![0f32; m * rows];
            matrix.matmul(&x, m, &mut fast);
            let per_row = columns / BLOCK;
            let activations = quantize(&x);
            let mut portable = vec![0f32; m * rows];
            for j in 0..rows {
                let mut outputs = vec![0f32; m];
                portable_dot_rows(
                    &matrix.blocks[j * per_row..(j + 1) * per_row],
                    &activations,
                    per_row,
                    &mut outputs,
                );
                for i in 0..m {
                    portable[i * rows + j] = outputs[i];
                }
            }
            // The same integers, summed in another order.
            for (a, b) in fast.iter().zip(&portable) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
            // Against the f32 product of the dequantised weights: off by the 8-bit rounding of
            // the inputs only (at most half a step, 1/254 of a block's largest value, per term).
            for i in 0..m {
                for j in 0..rows {
                    let (mut exact, mut magnitude) = (0f32, 0f32);
                    for (b, block) in matrix.blocks[j * per_row..(j + 1) * per_row].iter().enumerate() {
                        for t in 0..BLOCK {
                            let nibble =
                                if t < 16 { block.quants[t] & 0x0F } else { block.quants[t - 16] >> 4 };
                            let w = (f32::from(nibble) - 8.0) * block.scale;
                            exact += w * x[i * columns + b * BLOCK + t];
                            magnitude += (w * x[i * columns + b * BLOCK + t]).abs();
                        }
                    }
                    let got = fast[i * rows + j];
                    assert!(
                        (got - exact).abs() <= 0.01 * magnitude + 1e-4,
                        "{got} vs {exact} (Σ|w·x| {magnitude})"
                    );
                }
            }
        }
    }

    #[test]
    fn misshapen_weights_are_refused() {
        assert!(Q4Matrix::from_q4_0(&[0; 18], 1, 33).is_err());
        assert!(Q4Matrix::from_q4_0(&[0; 17], 1, 32).is_err());
        assert!(Q4Matrix::from_q4_0(&[0; 18], 1, 32).is_ok());
    }
}
