//! 4-bit weights × 8-bit activations on the CPU: the encoder's linear layers without expanding
//! the weights. Each weight row keeps GGML's Q4_0 blocks (32 weights, one scale; element `j` in
//! the low nibble of byte `j`, element `j + 16` in the high one); each input row is quantised to
//! 8 bits per block of 32 with its own scale, as the reference engine does, and a dot product is
//! Σ scale_w · scale_x · Σ w·x over blocks, the inner sum in integers.
//!
//! With AVX2 (checked at run time) a block is unpacked once and multiplied with up to four input
//! rows (`maddubs` on |w| and x·sign(w), as in GGML), and the output rows are shared between the
//! cores; elsewhere a portable loop computes the same integers. From `MANY_ROWS` input rows,
//! groups of eight weight rows are unpacked once each and multiplied with every input row
//! (`vpdpbusd` with AVX-512 VNNI, two groups at a time so that each broadcast of an input's four
//! bytes serves both; `maddubs` without), as the reference engine does for long inputs.

use half::f16;

/// Weights in a block.
const BLOCK: usize = 32;
/// Bytes of a Q4_0 block in a GGUF file: an f16 scale and 16 bytes of nibbles.
const Q4_0_BYTES: usize = 18;
/// Input rows multiplied with one unpacked weight block.
const ROWS_AT_ONCE: usize = 4;
/// From this many input rows (tokens), weight rows are unpacked once per [`GROUP`] and used for
/// every input row ([`Q4Matrix::matmul_many`]).
const MANY_ROWS: usize = 32;
/// Weight rows unpacked and multiplied together in [`Q4Matrix::matmul_many`].
const GROUP: usize = 8;

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

    /// The rows of `parts` one after another, as one matrix (every part with the same columns):
    /// the query, key and value layers as one product.
    pub fn stack(parts: &[&Q4Matrix]) -> Result<Q4Matrix, String> {
        let columns = parts.first().map_or(0, |p| p.columns);
        if parts.iter().any(|p| p.columns != columns) {
            return Err("stacked matrices must have the same columns".into());
        }
        Ok(Q4Matrix {
            rows: parts.iter().map(|p| p.rows).sum(),
            columns,
            blocks: parts.iter().flat_map(|p| p.blocks.iter().copied()).collect(),
        })
    }

    /// `out[i][j] = Σ_k x[i][k] · w[j][k]` for the `m` rows of `x` (`m` × columns, row-major);
    /// `out` is `m` × rows, and every value of it is written (what it held is never read).
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let (n, k) = (self.rows, self.columns);
        assert_eq!(x.len(), m * k, "input of {} values for {m} rows of {k}", x.len());
        assert_eq!(out.len(), m * n, "output of {} values for {m} rows of {n}", out.len());
        if m >= MANY_ROWS {
            return self.matmul_many(x, m, out);
        }
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

    /// [`Q4Matrix::matmul`] for many input rows: each group of [`GROUP`] weight rows is unpacked
    /// once ([`Group`]) and multiplied with every input row. A long input is cut into tiles of
    /// about 64 KB of quantised values, so that a tile stays in the core's cache while every
    /// group passes over it, and the tiles are shared between the cores; a short one (too few
    /// tiles to share) shares the groups instead.
    fn matmul_many(&self, x: &[f32], m: usize, out: &mut [f32]) {
        use rayon::prelude::*;
        let (n, k) = (self.rows, self.columns);
        let activations = Activations::quantize(x, m, k);
        let groups = n.div_ceil(GROUP);
        let threads = if m * n * k >= 1 << 18 { rayon::current_num_threads().max(1) } else { 1 };
        let tile = ((1 << 16) / k).max(ROWS_PER_GROUP_STEP) / ROWS_PER_GROUP_STEP * ROWS_PER_GROUP_STEP;
        if m >= 2 * threads * tile {
            let unpacked: Vec<Group> = (0..groups).into_par_iter().map(|g| Group::unpack(self, g)).collect();
            out.par_chunks_mut(tile * n).enumerate().for_each(|(t, rows)| {
                let count = rows.len() / n;
                let mut outputs = vec![0f32; 2 * count * GROUP];
                for (pair, groups) in unpacked.chunks(2).enumerate() {
                    let outputs = &mut outputs[..groups.len() * count * GROUP];
                    group_dots(groups, &activations, t * tile, outputs);
                    for (g, outputs) in outputs.chunks(count * GROUP).enumerate() {
                        scatter(outputs, 2 * pair + g, n, rows);
                    }
                }
            });
            return;
        }
        // Per group, per input row, the group's outputs: [group][input row][GROUP], computed two
        // groups at a time.
        let mut grouped = vec![0f32; groups * m * GROUP];
        let work = |pair: usize, outputs: &mut [f32]| {
            let unpacked: Vec<Group> =
                (2 * pair..(2 * pair + 2).min(groups)).map(|g| Group::unpack(self, g)).collect();
            group_dots(&unpacked, &activations, 0, outputs)
        };
        if threads > 1 {
            grouped.par_chunks_mut(2 * m * GROUP).enumerate().for_each(|(p, chunk)| work(p, chunk));
        } else {
            grouped.chunks_mut(2 * m * GROUP).enumerate().for_each(|(p, chunk)| work(p, chunk));
        }
        for (g, chunk) in grouped.chunks(m * GROUP).enumerate() {
            scatter(chunk, g, n, out);
        }
    }
}

/// Group `g`'s outputs ([input row][GROUP]) into their columns of `out` (rows of `n`).
fn scatter(outputs: &[f32], g: usize, n: usize, out: &mut [f32]) {
    let rows = (n - g * GROUP).min(GROUP);
    let pairs = outputs.chunks_exact(GROUP).zip(out.chunks_exact_mut(n));
    if rows == GROUP {
        // A copy of known length is inlined; a call to memmove per input row and group (eight
        // values each) took 12 % of a large product's time.
        for (values, row) in pairs {
            let row: &mut [f32; GROUP] = (&mut row[g * GROUP..][..GROUP]).try_into().expect("a full group");
            *row = values.try_into().expect("a full group");
        }
    } else {
        for (values, row) in pairs {
            row[g * GROUP..g * GROUP + rows].copy_from_slice(&values[..rows]);
        }
    }
}

/// [`GROUP`] weight rows unpacked for [`Q4Matrix::matmul_many`], as bytes 0..15 (the −8 of each
/// weight is taken off later through the activations' block offsets) and interleaved by four: for
/// each block and each run of four columns in it, the four bytes of row 0, then of row 1, … —
/// so one 32-byte load holds four columns of all eight rows, and a multiply-add of it with the
/// input's four bytes (repeated eight times) adds each row's four products into that row's lane.
/// Rows past the matrix's end stay zero and come out as zero.
#[derive(Debug)]
struct Group {
    weights: Vec<u8>,
    /// Block by block, the eight rows' scales: [blocks][GROUP].
    scales: Vec<f32>,
}

/// Columns of a row side by side in [`Group`]'s layout.
const RUN: usize = 4;

impl Group {
    fn unpack(matrix: &Q4Matrix, group: usize) -> Group {
        let k = matrix.columns;
        let per_row = k / BLOCK;
        let first = group * GROUP;
        let mut weights = vec![0u8; GROUP * k];
        let mut scales = vec![0f32; per_row * GROUP];
        for r in 0..(matrix.rows - first).min(GROUP) {
            let blocks = &matrix.blocks[(first + r) * per_row..(first + r + 1) * per_row];
            for (b, block) in blocks.iter().enumerate() {
                for (j, &byte) in block.quants.iter().enumerate() {
                    for (column, value) in [(j, byte & 0x0F), (j + 16, byte >> 4)] {
                        let (run, at) = (column / RUN, column % RUN);
                        weights[((b * (BLOCK / RUN) + run) * GROUP + r) * RUN + at] = value;
                    }
                }
                scales[b * GROUP + r] = block.scale;
            }
        }
        Group { weights, scales }
    }
}

/// Input rows quantised to 8 bits per block of 32, laid out for [`Q4Matrix::matmul_many`]:
/// the values row after row, each block's scale, and each block's offset: −8 × the sum of its
/// values, which added to a block's dot product with weights stored as 0..15 gives the product
/// with the weights' true values (−8..7), in integers.
#[derive(Debug)]
struct Activations {
    values: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<i32>,
    columns: usize,
}

impl Activations {
    /// Quantises `x` (`m` rows of `columns`) straight into this layout; a long input is shared
    /// between the cores, in runs of [`BLOCKS_PER_TASK`] blocks.
    fn quantize(x: &[f32], m: usize, columns: usize) -> Activations {
        use rayon::prelude::*;
        let blocks = m * columns / BLOCK;
        let (mut values, mut scales, mut offsets) =
            (vec![0i8; m * columns], vec![0f32; blocks], vec![0i32; blocks]);
        if x.len() >= 1 << 16 {
            let per_task = BLOCKS_PER_TASK * BLOCK;
            x.par_chunks(per_task)
                .zip(values.par_chunks_mut(per_task))
                .zip(scales.par_chunks_mut(BLOCKS_PER_TASK))
                .zip(offsets.par_chunks_mut(BLOCKS_PER_TASK))
                .for_each(|(((x, values), scales), offsets)| quantize_blocks(x, values, scales, offsets));
        } else {
            quantize_blocks(x, &mut values, &mut scales, &mut offsets);
        }
        Activations { values, scales, offsets, columns }
    }
}

/// Blocks of activations quantised by one task of [`Activations::quantize`].
const BLOCKS_PER_TASK: usize = 256;

simd_fn! {
    /// Each block of 32 values of `x`: its 8-bit values, scale and offset (−8 × Σ values).
    fn quantize_blocks(x: &[f32], values: &mut [i8], scales: &mut [f32], offsets: &mut [i32]) {
        let blocks = x.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK)).zip(scales).zip(offsets);
        for (((x, values), scale), offset) in blocks {
            let block = quantize_block(x);
            values.copy_from_slice(&block.quants);
            *scale = block.scale;
            *offset = -8 * block.quants.iter().map(|&q| i32::from(q)).sum::<i32>();
        }
    }
}

/// The most input rows multiplied together with one group (tiles of input rows are multiples).
const ROWS_PER_GROUP_STEP: usize = 8;

/// The [`GROUP`] outputs of one or two groups of unpacked weight rows for input rows `first..`
/// (as many as `outputs`, [group][input row][GROUP], holds). With VNNI two groups are multiplied
/// together, so that each broadcast of an input's four bytes serves both (a broadcast per
/// multiply-add held the kernel to about half the units' rate); otherwise one after the other.
fn group_dots(groups: &[Group], x: &Activations, first: usize, outputs: &mut [f32]) {
    let m = outputs.len() / GROUP / groups.len();
    #[cfg(target_arch = "x86_64")]
    if let [a, b] = groups
        && std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("fma")
    {
        let (out_a, out_b) = outputs.split_at_mut(m * GROUP);
        let mut t = 0;
        for step in PAIR_STEPS {
            while t + step <= m {
                let rows = t * GROUP..(t + step) * GROUP;
                let (out_a, out_b) = (&mut out_a[rows.clone()], &mut out_b[rows]);
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX512-VNNI with VL and FMA, checked just above; the kernel
                // checks the slices' lengths.
                unsafe {
                    match step {
                        6 => avx2::group_pair_dot_vnni::<6>([a, b], x, first + t, [out_a, out_b]),
                        4 => avx2::group_pair_dot_vnni::<4>([a, b], x, first + t, [out_a, out_b]),
                        _ => avx2::group_pair_dot_vnni::<1>([a, b], x, first + t, [out_a, out_b]),
                    }
                }
                t += step;
            }
        }
        return;
    }
    for (group, outputs) in groups.iter().zip(outputs.chunks_mut(m * GROUP)) {
        group_dot_rows(group, x, first, outputs);
    }
}

/// Input rows per call of the two-group kernel: 6 × 2 accumulators, 12 totals and the two
/// groups' weights fit the 32 vector registers.
const PAIR_STEPS: [usize; 3] = [6, 4, 1];

/// [`group_dots`] for one group, up to [`ROWS_PER_GROUP_STEP`] input rows at a time.
fn group_dot_rows(group: &Group, x: &Activations, first: usize, outputs: &mut [f32]) {
    let m = outputs.len() / GROUP;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let vnni = std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl");
        let mut t = 0;
        // Input rows in steps of eight with VNNI (its 32 vector registers hold eight rows'
        // accumulators, eight chains of multiply-adds to hide each one's latency), of four
        // without (16 registers), then one by one.
        let steps: &[usize] = if vnni { &[8, 4, 1] } else { &[4, 1] };
        for &step in steps {
            while t + step <= m {
                let out = &mut outputs[t * GROUP..(t + step) * GROUP];
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 and FMA (and AVX512-VNNI with VL when `vnni`), checked
                // just above; the kernels check the slices' lengths.
                unsafe {
                    match (vnni, step) {
                        (true, 8) => avx2::group_dot_vnni::<8>(group, x, first + t, out),
                        (true, 4) => avx2::group_dot_vnni::<4>(group, x, first + t, out),
                        (true, _) => avx2::group_dot_vnni::<1>(group, x, first + t, out),
                        (false, 4) => avx2::group_dot::<4>(group, x, first + t, out),
                        (false, _) => avx2::group_dot::<1>(group, x, first + t, out),
                    }
                }
                t += step;
            }
        }
        return;
    }
    for (t, out) in outputs.chunks_exact_mut(GROUP).enumerate() {
        portable_group_dot(group, x, first + t, out);
    }
}

fn portable_group_dot(group: &Group, x: &Activations, t: usize, outputs: &mut [f32]) {
    let k = x.columns;
    let per_row = k / BLOCK;
    let mut sums = [0f32; GROUP];
    for b in 0..per_row {
        let mut dots = [0i32; GROUP];
        for run in 0..BLOCK / RUN {
            let values = &x.values[t * k + b * BLOCK + run * RUN..][..RUN];
            let weights = &group.weights[(b * (BLOCK / RUN) + run) * GROUP * RUN..][..GROUP * RUN];
            for (dot, row) in dots.iter_mut().zip(weights.chunks_exact(RUN)) {
                *dot += row.iter().zip(values).map(|(&w, &v)| i32::from(w) * i32::from(v)).sum::<i32>();
            }
        }
        let block = t * per_row + b;
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum += group.scales[b * GROUP + r] * x.scales[block] * (dots[r] + x.offsets[block]) as f32;
        }
    }
    outputs.copy_from_slice(&sums);
}

/// Quantises `x` to 8 bits per block of 32 (scale = largest magnitude / 127); rows are whole
/// blocks, so row `i`'s blocks follow each other. A long input is shared between the cores.
fn quantize(x: &[f32]) -> Vec<BlockQ8> {
    if x.len() >= 1 << 16 {
        use rayon::prelude::*;
        return x.par_chunks(BLOCKS_PER_TASK * BLOCK).flat_map_iter(quantize_run).collect();
    }
    quantize_run(x)
}

simd_fn! {
    /// The blocks of `x`, quantised.
    fn quantize_run(x: &[f32]) -> Vec<BlockQ8> {
        x.chunks_exact(BLOCK).map(quantize_block).collect()
    }
}

/// Adding 1.5 · 2²³ leaves a float whose last mantissa bits are its value rounded to the nearest
/// integer (ties to even), in two's complement: rounding and conversion in plain arithmetic the
/// compiler vectorises, where `f32::round` is a libm call per value on the baseline x86-64.
const ROUNDING: f32 = 12_582_912.0;

#[inline(always)]
fn quantize_block(values: &[f32]) -> BlockQ8 {
    // The largest magnitude in eight lanes, by comparison: `f32::max` (which must return the
    // other operand for a NaN) kept this loop scalar. NaNs are skipped either way.
    let mut lanes = [0f32; 8];
    for run in values.chunks_exact(8) {
        lanes.iter_mut().zip(run).for_each(|(l, v)| *l = if v.abs() > *l { v.abs() } else { *l });
    }
    let largest = lanes.iter().fold(0f32, |a, &l| if l > a { l } else { a });
    let scale = largest / 127.0;
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let mut quants = [0i8; BLOCK];
    for (q, v) in quants.iter_mut().zip(values) {
        *q = (v * inverse + ROUNDING).to_bits() as u8 as i8;
    }
    BlockQ8 { scale, quants }
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

    use super::{Activations, BLOCK, BlockQ4, BlockQ8, GROUP, Group, ROWS_AT_ONCE, RUN};

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

    /// The loop both group kernels share, for `T` input rows from `$t` at once (independent
    /// chains, so the multiply-adds overlap): per block, eight runs of four columns, each a
    /// 32-byte load of the group's weights against each input's four bytes repeated (`$run`
    /// adds the products into an accumulator, one lane per weight row); then `$finish` turns
    /// each accumulator into the block's eight i32 sums; the input block's offset takes off every
    /// weight's −8, and the sums are scaled by weight × input scale. A macro, so that
    /// each kernel compiles it with its own target features.
    macro_rules! group_dot_body {
        ($T:ident, $group:ident, $x:ident, $t:ident, $outputs:ident, $zero:expr, $run:expr, $finish:expr) => {{
            let k = $x.columns;
            let per_row = k / BLOCK;
            assert!($group.weights.len() >= GROUP * k && $group.scales.len() >= per_row * GROUP);
            assert!($outputs.len() == $T * GROUP);
            assert!($x.values.len() >= ($t + $T) * k && $x.scales.len() >= ($t + $T) * per_row);
            let mut total = [_mm256_setzero_ps(); $T];
            let weights = $group.weights.as_ptr();
            let values = $x.values.as_ptr();
            for b in 0..per_row {
                let mut acc = [$zero; $T];
                for run in 0..BLOCK / RUN {
                    // SAFETY: inside `weights`, as asserted above.
                    let w = unsafe {
                        _mm256_loadu_si256(weights.add((b * (BLOCK / RUN) + run) * GROUP * RUN).cast())
                    };
                    for (i, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: inside `values`, as asserted above.
                        let v = unsafe {
                            _mm256_set1_epi32(
                                values
                                    .add(($t + i) * k + b * BLOCK + run * RUN)
                                    .cast::<i32>()
                                    .read_unaligned(),
                            )
                        };
                        *acc = $run(*acc, w, v);
                    }
                }
                // SAFETY: as above.
                let weight_scales = unsafe { _mm256_loadu_ps($group.scales.as_ptr().add(b * GROUP)) };
                for i in 0..$T {
                    let block = ($t + i) * per_row + b;
                    // The weights' −8 taken off in integers: one add, no second accumulator.
                    let dots = _mm256_add_epi32($finish(acc[i]), _mm256_set1_epi32($x.offsets[block]));
                    let scale = _mm256_mul_ps(weight_scales, _mm256_set1_ps($x.scales[block]));
                    total[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), scale, total[i]);
                }
            }
            for (i, total) in total.iter().enumerate() {
                // SAFETY: `outputs` holds T × GROUP values, as asserted above.
                unsafe { _mm256_storeu_ps($outputs.as_mut_ptr().add(i * GROUP), *total) };
            }
        }};
    }

    /// See [`super::group_dot`]: AVX2's `maddubs`, the eight runs summed in 16 bits (at most
    /// 8 · 2 · 15 · 127 = 30,480, no overflow), widened once per block.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn group_dot<const T: usize>(
        group: &Group,
        x: &Activations,
        t: usize,
        outputs: &mut [f32],
    ) {
        let ones = _mm256_set1_epi16(1);
        group_dot_body!(
            T,
            group,
            x,
            t,
            outputs,
            _mm256_setzero_si256(),
            |acc, w, v| _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, v)),
            |acc| _mm256_madd_epi16(acc, ones)
        )
    }

    /// See [`super::group_dot`]: one `vpdpbusd` per run, accumulating in 32 bits.
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub(super) unsafe fn group_dot_vnni<const T: usize>(
        group: &Group,
        x: &Activations,
        t: usize,
        outputs: &mut [f32],
    ) {
        group_dot_body!(
            T,
            group,
            x,
            t,
            outputs,
            _mm256_setzero_si256(),
            |acc, w, v| _mm256_dpbusd_epi32(acc, w, v),
            |acc| acc
        )
    }
    /// [`group_dot_vnni`] for two groups at once: each input's four bytes are broadcast once
    /// for both groups' multiply-adds.
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub(super) unsafe fn group_pair_dot_vnni<const T: usize>(
        groups: [&Group; 2],
        x: &Activations,
        t: usize,
        outputs: [&mut [f32]; 2],
    ) {
        let k = x.columns;
        let per_row = k / BLOCK;
        for (group, outputs) in groups.iter().zip(&outputs) {
            assert!(group.weights.len() >= GROUP * k && group.scales.len() >= per_row * GROUP);
            assert!(outputs.len() == T * GROUP);
        }
        assert!(x.values.len() >= (t + T) * k && x.scales.len() >= (t + T) * per_row);
        let mut total = [[_mm256_setzero_ps(); T]; 2];
        let weights = groups.map(|g| g.weights.as_ptr());
        let values = x.values.as_ptr();
        for b in 0..per_row {
            let mut acc = [[_mm256_setzero_si256(); T]; 2];
            for run in 0..BLOCK / RUN {
                let at = (b * (BLOCK / RUN) + run) * GROUP * RUN;
                // SAFETY: inside both groups' weights, as asserted above.
                let w = unsafe { weights.map(|w| _mm256_loadu_si256(w.add(at).cast())) };
                let [first, second] = &mut acc;
                for (i, (first, second)) in first.iter_mut().zip(second.iter_mut()).enumerate() {
                    // SAFETY: inside `values`, as asserted above.
                    let v = unsafe {
                        _mm256_set1_epi32(
                            values.add((t + i) * k + b * BLOCK + run * RUN).cast::<i32>().read_unaligned(),
                        )
                    };
                    *first = _mm256_dpbusd_epi32(*first, w[0], v);
                    *second = _mm256_dpbusd_epi32(*second, w[1], v);
                }
            }
            for (g, group) in groups.iter().enumerate() {
                // SAFETY: as above.
                let weight_scales = unsafe { _mm256_loadu_ps(group.scales.as_ptr().add(b * GROUP)) };
                for i in 0..T {
                    let block = (t + i) * per_row + b;
                    let dots = _mm256_add_epi32(acc[g][i], _mm256_set1_epi32(x.offsets[block]));
                    let scale = _mm256_mul_ps(weight_scales, _mm256_set1_ps(x.scales[block]));
                    total[g][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), scale, total[g][i]);
                }
            }
        }
        for (total, outputs) in total.iter().zip(outputs) {
            for (i, total) in total.iter().enumerate() {
                // SAFETY: each output holds T × GROUP values, as asserted above.
                unsafe { _mm256_storeu_ps(outputs.as_mut_ptr().add(i * GROUP), *total) };
            }
        }
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
        // Few input rows (a question) and many (weight rows unpacked once per group, including a
        // last group that the matrix only partly fills): groups shared between the cores, and
        // (the last case, enough rows for 16 cores) tiles of input rows shared instead.
        for (rows, columns, m) in [
            (8, 64, 1),
            (40, 384, 3),
            (64, 384, 9),
            (48, 1536, 5),
            (44, 384, 33),
            (64, 1536, 37),
            (20, 1536, 1300),
        ] {
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
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{rows}x{columns} m {m}: {a} vs {b}");
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

    /// Every group kernel this CPU can run, one input row at a time, four, six and eight, one
    /// group or two at once, gives the portable loop's integers.
    #[test]
    fn each_group_kernel_computes_what_the_portable_one_does() {
        // 13 input rows: dispatched as six, six and one for two groups with VNNI, eight, four and
        // one for one group, thrice four and one without. The second group is only partly filled.
        let (rows, columns, m) = (2 * GROUP - 3, 768, 13);
        let (bytes, x) = sample(rows, columns, m);
        let matrix = Q4Matrix::from_q4_0(&bytes, rows, columns).unwrap();
        let groups = [Group::unpack(&matrix, 0), Group::unpack(&matrix, 1)];
        let [group, second] = &groups;
        let activations = Activations::quantize(&x, m, columns);
        let portable = |group: &Group| {
            let mut expected = vec![0f32; m * GROUP];
            for (t, out) in expected.chunks_exact_mut(GROUP).enumerate() {
                portable_group_dot(group, &activations, t, out);
            }
            expected
        };
        let expected = portable(group);
        let both = [expected.clone(), portable(second)].concat();
        let close = |name: &str, got: &[f32], expected: &[f32]| {
            assert_eq!(got.len(), expected.len(), "{name}");
            for (a, b) in got.iter().zip(expected) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{name}: {a} vs {b}");
            }
        };
        let mut results: Vec<(&str, Vec<f32>)> = Vec::new();
        let mut dispatched = vec![0f32; m * GROUP];
        group_dots(std::slice::from_ref(group), &activations, 0, &mut dispatched);
        results.push(("dispatched", dispatched));
        let mut pair = vec![0f32; 2 * m * GROUP];
        group_dots(&groups, &activations, 0, &mut pair);
        close("dispatched, two groups", &pair, &both);
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let vnni =
                std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl");
            let (mut one, mut four, mut vnni_one, mut vnni_four) =
                (vec![0f32; m * GROUP], vec![0f32; 4 * GROUP], vec![0f32; m * GROUP], vec![0f32; 4 * GROUP]);
            // SAFETY: AVX2 and FMA are there (checked above), AVX512-VNNI and VL when `vnni`.
            unsafe {
                for (t, out) in one.chunks_exact_mut(GROUP).enumerate() {
                    super::avx2::group_dot::<1>(group, &activations, t, out);
                }
                super::avx2::group_dot::<4>(group, &activations, 1, &mut four);
                if vnni {
                    for (t, out) in vnni_one.chunks_exact_mut(GROUP).enumerate() {
                        super::avx2::group_dot_vnni::<1>(group, &activations, t, out);
                    }
                    super::avx2::group_dot_vnni::<4>(group, &activations, 1, &mut vnni_four);
                    let mut eight = vec![0f32; 8 * GROUP];
                    super::avx2::group_dot_vnni::<8>(group, &activations, 2, &mut eight);
                    close("avx512vnni, eight rows", &eight, &expected[2 * GROUP..10 * GROUP]);
                    // Two groups: one row (the last), four from row 1, six from row 7.
                    let rows_of = |g: usize, from: usize, count: usize| {
                        both[g * m * GROUP + from * GROUP..][..count * GROUP].to_vec()
                    };
                    // `T` rows from row `from`, both groups, against the portable loop's.
                    macro_rules! pair {
                        ($T:literal, $from:expr, $name:expr) => {{
                            let (mut a, mut b) = (vec![0f32; $T * GROUP], vec![0f32; $T * GROUP]);
                            let outputs = [a.as_mut_slice(), b.as_mut_slice()];
                            super::avx2::group_pair_dot_vnni::<$T>(
                                [group, second],
                                &activations,
                                $from,
                                outputs,
                            );
                            let wanted = [rows_of(0, $from, $T), rows_of(1, $from, $T)].concat();
                            close($name, &[a, b].concat(), &wanted);
                        }};
                    }
                    pair!(1, 12, "two groups, one row");
                    pair!(4, 1, "two groups, four rows");
                    pair!(6, 7, "two groups, six rows");
                }
            }
            four.splice(0..0, expected[..GROUP].iter().copied());
            four.extend_from_slice(&expected[5 * GROUP..]);
            results.push(("avx2, one row", one));
            results.push(("avx2, four rows", four));
            if vnni {
                vnni_four.splice(0..0, expected[..GROUP].iter().copied());
                vnni_four.extend_from_slice(&expected[5 * GROUP..]);
                results.push(("avx512vnni, one row", vnni_one));
                results.push(("avx512vnni, four rows", vnni_four));
            }
        }
        for (name, got) in &results {
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{name}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn blocks_quantise_to_the_nearest_step_on_one_core_and_on_many() {
        let values: Vec<f32> = (0..BLOCK).map(|i| (i as f32 - 13.3) * 0.77).collect();
        let block = quantize_block(&values);
        let largest = values.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert_eq!(block.scale, largest / 127.0);
        for (q, v) in block.quants.iter().zip(&values) {
            let step = v / block.scale;
            assert!((f32::from(*q) - step).abs() <= 0.5, "{v} became {q} (exact {step})");
        }
        assert_eq!(block.quants[31], 127, "the largest value is the top step");
        assert!(quantize_block(&[0.0; BLOCK]).quants.iter().all(|&q| q == 0));
        let (_, long) = sample(BLOCK, 384, 200);
        let whole = quantize(&long);
        let piecewise: Vec<BlockQ8> = long.chunks_exact(BLOCK).map(quantize_block).collect();
        assert!(whole.iter().zip(&piecewise).all(|(a, b)| a.scale == b.scale && a.quants == b.quants));
        // The grouped products' layout, on one core (8 rows) and shared (200 rows), with each
        // block's offset −8 × Σ values.
        for rows in [8, 200] {
            let x = &long[..rows * 384];
            let activations = Activations::quantize(x, rows, 384);
            assert_eq!(activations.scales.len(), rows * 384 / BLOCK);
            for (b, block) in x.chunks_exact(BLOCK).map(quantize_block).enumerate() {
                assert_eq!(activations.values[b * BLOCK..][..BLOCK], block.quants);
                assert_eq!(activations.scales[b], block.scale);
                assert_eq!(
                    activations.offsets[b],
                    -8 * block.quants.iter().map(|&q| i32::from(q)).sum::<i32>()
                );
            }
        }
    }

    #[test]
    fn a_stacked_matrix_computes_its_parts_side_by_side() {
        let (first, x) = sample(40, 64, 3);
        let (second, _) = sample(24, 64, 1);
        let a = Q4Matrix::from_q4_0(&first, 40, 64).unwrap();
        let b = Q4Matrix::from_q4_0(&second, 24, 64).unwrap();
        let stacked = Q4Matrix::stack(&[&a, &b]).unwrap();
        let (mut both, mut left, mut right) = (vec![0f32; 3 * 64], vec![0f32; 3 * 40], vec![0f32; 3 * 24]);
        stacked.matmul(&x, 3, &mut both);
        a.matmul(&x, 3, &mut left);
        b.matmul(&x, 3, &mut right);
        for i in 0..3 {
            assert_eq!(both[i * 64..i * 64 + 40], left[i * 40..(i + 1) * 40]);
            assert_eq!(both[i * 64 + 40..(i + 1) * 64], right[i * 24..(i + 1) * 24]);
        }
        let narrow = Q4Matrix::from_q4_0(&[0; 18], 1, 32).unwrap();
        assert!(Q4Matrix::stack(&[&a, &narrow]).is_err());
    }

    #[test]
    fn misshapen_weights_are_refused() {
        assert!(Q4Matrix::from_q4_0(&[0; 18], 1, 33).is_err());
        assert!(Q4Matrix::from_q4_0(&[0; 17], 1, 32).is_err());
        assert!(Q4Matrix::from_q4_0(&[0; 18], 1, 32).is_ok());
    }
}
