//! Multi-head self-attention within each text of a batch, one (text, head) pair per task:
//! scores = Q·Kᵀ / √(head width), a softmax over each query's scores (its exponentials here, the
//! division by their sum folded into the context), context = P·V.
//!
//! With AVX-512 VNNI both products run in 8-bit integers ([`crate::int8`]), as the linear
//! layers do: each query and key row (one head's width) quantised with its own scale, the
//! probabilities as multiples of 1/255 (a row's largest is e⁰ = 1), each value column with its
//! own scale over the text's tokens. They were a fifth of an import's time as f32 products at
//! 80 % of the FMA units' peak, and the integer units do four times the multiply-adds. Without
//! VNNI (or for a head width not a multiple of eight) they are f32 products (the `gemm` crate);
//! the two paths' embeddings agree to a cosine of 0.9998 or more.

use rayon::prelude::*;

use crate::activation::exp_nonpositive;
use crate::encoder::{LANES, lane_max};
use crate::int8::{self, GROUP, RUN, Rows};
use crate::q4::ROUNDING;

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
        inverses.push(inverse_of_sum(sum));
    }
}

/// The 8-bit path's softmax but for its normalisation: each row of `scores` (rows of `width`,
/// in units of log₂ e: scores × log₂ e) as 255 · 2^(score − the row's maximum, from `maxima`)
/// rounded to the nearest integer, in the bytes of a row of `bytes` (rows of `stride` ≥
/// `width`, at most three more, zeroed); `inverses` gets 1 / each row's sum of 255 · 2^(…), so
/// that the bytes times it are the probabilities. 32 scores at a time, with AVX2 and FMA (the
/// four vectors' bytes are packed together, where packing eight at a time took most of the
/// time); a row's tail is padded with −∞ as in [`fused_exp_rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_bytes_rows(
    scores: &[f32],
    width: usize,
    maxima: &[f32],
    bytes: &mut [u8],
    stride: usize,
    inverses: &mut Vec<f32>,
) {
    let rows = scores.len() / width;
    assert!(stride >= width && stride - width < RUN && rows == bytes.len() / stride && rows == maxima.len());
    use std::arch::x86_64::*;

    /// Values at a time: four vectors.
    const WIDE: usize = 4 * LANES;

    /// 255 · 2^(value − max) of 32 scores into 32 bytes; the unrounded values added to `sum`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp_into(values: &[f32; WIDE], max: __m256, bytes: &mut [u8; WIDE], sum: &mut __m256) {
        #[allow(unsafe_code)]
        // SAFETY: 32 values are read from an array of 32, 32 bytes written to another.
        unsafe {
            let mut whole = [_mm256_setzero_si256(); 4];
            for (i, whole) in whole.iter_mut().enumerate() {
                let e = exp2_255(_mm256_sub_ps(_mm256_loadu_ps(values.as_ptr().add(i * LANES)), max));
                *sum = _mm256_add_ps(*sum, e);
                *whole = _mm256_cvtps_epi32(e);
            }
            // Packing works within each 128-bit half: dwords come out as a0 b0 c0 d0 a1 b1 c1 d1
            // (a0 = the first vector's first four values), put back in order by one permutation.
            let words = [_mm256_packus_epi32(whole[0], whole[1]), _mm256_packus_epi32(whole[2], whole[3])];
            let packed = _mm256_packus_epi16(words[0], words[1]);
            let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(bytes.as_mut_ptr().cast(), ordered);
        }
    }

    inverses.clear();
    let whole = width / WIDE * WIDE;
    for ((row, bytes), &max) in scores.chunks_exact(width).zip(bytes.chunks_exact_mut(stride)).zip(maxima) {
        let max = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        let (chunks, outputs) = (row.chunks_exact(WIDE), bytes[..whole].chunks_exact_mut(WIDE));
        let tail = chunks.remainder();
        for (chunk, out) in chunks.zip(outputs) {
            let (chunk, out) = (chunk.try_into().expect("32 scores"), out.try_into().expect("32 bytes"));
            exp_into(chunk, max, out, &mut sum);
        }
        if !tail.is_empty() {
            // The padding's bytes come out zero (255 · 2⁻¹²⁶ rounds to 0): the row's tail and
            // the zeros past it in one copy.
            let (mut padded, mut out) = ([f32::NEG_INFINITY; WIDE], [0u8; WIDE]);
            padded[..tail.len()].copy_from_slice(tail);
            exp_into(&padded, max, &mut out, &mut sum);
            bytes[whole..].copy_from_slice(&out[..stride - whole]);
        }
        inverses.push(inverse_of_sum(sum));
    }
}

/// 255 · 2^x of eight x ≤ 0 (a score less its row's maximum, in units of log₂ e): x = n + f,
/// n the nearest integer (from the bits of x + 1.5 · 2²³), 255 · 2^f by a degree-4 polynomial
/// on |f| ≤ ½ (within 3e-6 relative: a thousandth of a step of the bytes these become), 2ⁿ
/// added to the float's exponent. Eleven vector operations for eight values, where e^x to full
/// precision, its conversion to base 2 and the scaling by 255 took sixteen. Below −126 (a
/// padding's −∞, a NaN) the value is that of −126: a byte of 0, nothing beside the row's
/// maximum in its sum.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp2_255(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    const C: [f32; 5] = [254.999_82, 176.746_06, 61.263_1, 14.259_044, 2.440_372_2];
    // `max` returns its second operand when the first is NaN.
    let x = _mm256_max_ps(x, _mm256_set1_ps(-126.0));
    let round = _mm256_set1_ps(ROUNDING);
    let shifted = _mm256_add_ps(x, round);
    let f = _mm256_sub_ps(x, _mm256_sub_ps(shifted, round));
    let mut p = _mm256_fmadd_ps(_mm256_set1_ps(C[4]), f, _mm256_set1_ps(C[3]));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C[2]));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C[1]));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C[0]));
    // n = shifted − ROUNDING in the bits (−126..0), moved into the exponent.
    let n = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_castps_si256(round));
    _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32::<23>(n)))
}

/// 1 / the sum of a row's exponentials, summed in eight lanes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn inverse_of_sum(sum: std::arch::x86_64::__m256) -> f32 {
    let mut lanes = [0f32; LANES];
    #[allow(unsafe_code)]
    // SAFETY: eight values are written to an array of eight.
    unsafe {
        std::arch::x86_64::_mm256_storeu_ps(lanes.as_mut_ptr(), sum)
    };
    1.0 / lanes.iter().sum::<f32>()
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

/// One head of one text: where its query, key and value rows lie.
#[derive(Debug, Clone, Copy)]
struct Head<'a> {
    /// The text's stacked query, key and value rows (rows of 3 × width).
    qkv: &'a [f32],
    /// Tokens of the text.
    length: usize,
    /// The model's width.
    width: usize,
    /// Where the head's columns start within each of the three parts.
    at: usize,
    /// The head's width.
    columns: usize,
}

impl<'a> Head<'a> {
    /// Token `t`'s query (`part` 0), key (1) or value (2) row of this head.
    #[inline(always)]
    fn row(&self, t: usize, part: usize) -> &'a [f32] {
        &self.qkv[t * 3 * self.width + part * self.width + self.at..][..self.columns]
    }

    /// Asks the cache for token `t`'s query, key and value rows of this head, if there is such
    /// a token: a head's rows lie a whole token row apart (three times the model's width), too
    /// far apart for the hardware's prefetcher, and reading them waited on memory (a sixth of
    /// the 8-bit attention's samples on one load that quantises the queries and keys).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn prefetch(&self, t: usize) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        if t >= self.length {
            return;
        }
        for part in 0..3 {
            let row = self.row(t, part);
            // Every 16th value (64 bytes, a cache line) and the last: every line of the row.
            for value in row.iter().step_by(16).chain(row.last()) {
                // SAFETY: a prefetch reads nothing and faults on nothing; the address is inside
                // the row anyway.
                #[allow(unsafe_code)]
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast())
                };
            }
        }
    }
}

/// One head of one text: its context rows (`length` × head width).
fn attend(head: Head<'_>, context: &mut [f32]) {
    BUFFERS.with_borrow_mut(|buffers| {
        #[cfg(target_arch = "x86_64")]
        if head.columns.is_multiple_of(GROUP) && int8::vnni() && std::is_x86_feature_detected!("fma") {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX2 (every one with VNNI has; `vnni` checks it) and FMA.
            return unsafe { attend_int8(head, context, buffers) };
        }
        attend_f32(head, context, buffers)
    });
}

/// [`attend`] in f32 products.
fn attend_f32(head: Head<'_>, context: &mut [f32], b: &mut Buffers) {
    let Head { qkv, length, width, at, columns: head_width } = head;
    let stride = 3 * width;
    // Every score is written by the first product (it does not read its destination).
    let scores = crate::prefix(&mut b.scores, length * length);
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
    exp_rows(scores, length, &mut b.inverses);
    Product {
        m: length,
        n: head_width,
        k: length,
        lhs: (scores, length, 1),
        rhs: (&qkv[2 * width + at..], stride, 1),
        scale: 1.0,
    }
    .run(context, head_width);
    for (row, &inverse) in context.chunks_exact_mut(head_width).zip(b.inverses.iter()) {
        row.iter_mut().for_each(|v| *v *= inverse);
    }
}

/// [`attend`] in 8-bit products; the head's width a multiple of [`GROUP`]. For AVX2 and FMA
/// only, which every CPU with VNNI has (its quantising loops run eight values at a time); the
/// CPU must have them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_int8(head: Head<'_>, context: &mut [f32], b: &mut Buffers) {
    use crate::prefix;
    let (length, d) = (head.length, head.columns);
    let token = |t: usize, part: usize| head.row(t, part);
    // Every buffer is used through a prefix of the length it needs here, and grows without
    // being cut to it; every value this head reads of them is written first.
    let row = prefix(&mut b.row, d);

    // Queries as unsigned bytes (q / scale + 128), keys as signed ones, a scale per row; a
    // score is query scale × key scale × (Σ bytes' products − 128 × Σ key bytes). Keys are
    // padded to whole groups of eight with zeros.
    let queries = prefix(&mut b.queries, length * d);
    b.keys.reshape(length, d);
    b.query_scales.clear();
    b.key_scales.clear();
    b.key_offsets.clear();
    // The scores in units of log₂ e, for the exponentials in base 2.
    let temperature = std::f32::consts::LOG2_E / (d as f32).sqrt();
    for t in 0..PREFETCH_AHEAD {
        head.prefetch(t);
    }
    for t in 0..length {
        head.prefetch(t + PREFETCH_AHEAD);
        let query = &mut queries[t * d..][..d];
        b.query_scales.push(quantize(token(t, 0), query));
        query.iter_mut().for_each(|q| *q ^= 0x80);
        b.key_scales.push(quantize(token(t, 1), row) * temperature);
        b.key_offsets.push(-128 * row.iter().map(|&k| i32::from(k as i8)).sum::<i32>());
        b.keys.set_row(t, row);
    }
    b.keys.zero_rows_from(length);
    let keys = length.next_multiple_of(GROUP);
    b.key_scales.resize(keys, 0.0);
    b.key_offsets.resize(keys, 0);
    let dots = prefix(&mut b.dots, length * keys);
    int8::dot(Rows { values: queries, rows: length, stride: d }, &b.keys, dots, keys);
    let scores = prefix(&mut b.scores, length * length);
    scale_scores(dots, keys, &b.query_scales, &b.key_scales, &b.key_offsets, scores, &mut b.maxima);
    // Probabilities as multiples of 1/255, rows padded with zeros to whole runs of four.
    let depth = length.next_multiple_of(RUN);
    let probabilities = prefix(&mut b.probabilities, length * depth);
    exp_bytes_rows(scores, length, &b.maxima, probabilities, depth, &mut b.inverses);
    // Values as signed bytes with a scale per column over the text's tokens: each token's
    // values are the packed operand's column at its depth.
    b.value_scales.clear();
    b.value_scales.resize(d, 0.0);
    for t in 0..length {
        // `max`, stored whatever the comparison: a conditional store became masked stores,
        // slow on AMD's cores.
        b.value_scales.iter_mut().zip(token(t, 2)).for_each(|(largest, v)| *largest = largest.max(v.abs()));
    }
    b.value_inverses.clear();
    b.value_inverses.extend(b.value_scales.iter().map(|&m| if m > 0.0 { 127.0 / m } else { 0.0 }));
    b.value_scales.iter_mut().for_each(|m| *m /= 127.0);
    // Every token's row is written, the padding rows zeroed.
    let value_bytes = prefix(&mut b.value_bytes, depth * d);
    for (t, bytes) in value_bytes.chunks_exact_mut(d).take(length).enumerate() {
        for ((byte, v), inverse) in bytes.iter_mut().zip(token(t, 2)).zip(&b.value_inverses) {
            *byte = (v * inverse + ROUNDING).to_bits() as u8;
        }
    }
    value_bytes[length * d..].fill(0);
    b.values.set_transposed(value_bytes, d);
    let dots = prefix(&mut b.dots, length * d);
    int8::dot(Rows { values: probabilities, rows: length, stride: depth }, &b.values, dots, d);
    for ((row, dots), &inverse) in context.chunks_exact_mut(d).zip(dots.chunks_exact(d)).zip(&b.inverses) {
        for ((v, &dot), &scale) in row.iter_mut().zip(dots).zip(&b.value_scales) {
            *v = dot as f32 * scale * inverse;
        }
    }
}

/// Tokens ahead whose rows [`Head::prefetch`] asks for.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 8;

/// `values` as signed bytes (two's complement) of `values / scale` rounded, the scale (returned)
/// making the largest magnitude 127.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn quantize(values: &[f32], bytes: &mut [u8]) -> f32 {
    // By comparison, in lanes: `f32::max` (which must return the other operand for a NaN) keeps
    // a loop scalar.
    let larger = |a: f32, v: f32| if v.abs() > a { v.abs() } else { a };
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(0f32, |a, &v| larger(a, v));
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, &v)| *l = larger(*l, v));
    }
    let largest = lanes.iter().fold(tail, |a, &l| larger(a, l));
    let inverse = if largest > 0.0 { 127.0 / largest } else { 0.0 };
    for (byte, v) in bytes.iter_mut().zip(values) {
        *byte = (v * inverse + ROUNDING).to_bits() as u8;
    }
    largest / 127.0
}

/// The scores (rows of as many as `query_scales`) from the integer products (rows of
/// `stride`): query scale × key scale × (product + key offset); `maxima` gets each row's
/// largest, taken in [`LANES`] lanes as the scores are written (a pass of its own over them
/// took a sixth of the exponentials' time).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn scale_scores(
    dots: &[i32],
    stride: usize,
    query_scales: &[f32],
    key_scales: &[f32],
    key_offsets: &[i32],
    scores: &mut [f32],
    maxima: &mut Vec<f32>,
) {
    let length = query_scales.len();
    let (key_scales, key_offsets) = (&key_scales[..length], &key_offsets[..length]);
    maxima.clear();
    for ((row, dots), &query) in
        scores.chunks_exact_mut(length).zip(dots.chunks_exact(stride)).zip(query_scales)
    {
        let score = |dot: i32, offset: i32, key: f32| (dot + offset) as f32 * (query * key);
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut row_chunks = row.chunks_exact_mut(LANES);
        let runs = (&mut row_chunks).zip(dots.chunks_exact(LANES)).zip(key_scales.chunks_exact(LANES));
        for (((scores, dots), keys), offsets) in runs.zip(key_offsets.chunks_exact(LANES)) {
            let scores: &mut [f32; LANES] = scores.try_into().expect("a run of lanes");
            let values: [f32; LANES] = std::array::from_fn(|l| score(dots[l], offsets[l], keys[l]));
            *scores = values;
            // As `lane_max` compares.
            lanes = std::array::from_fn(|l| if values[l] > lanes[l] { values[l] } else { lanes[l] });
        }
        let whole = length / LANES * LANES;
        let mut tail = f32::NEG_INFINITY;
        for (((s, &dot), &key), &offset) in row_chunks
            .into_remainder()
            .iter_mut()
            .zip(&dots[whole..])
            .zip(&key_scales[whole..])
            .zip(&key_offsets[whole..])
        {
            *s = score(dot, offset, key);
            tail = tail.max(*s);
        }
        maxima.push(lanes.iter().copied().fold(tail, f32::max));
    }
}

/// Buffers of one thread's attention, reused from task to task: a new score buffer per text and
/// head (256 KB at 256 tokens) was zeroed and faulted in every time. At most a few MB (512
/// tokens).
#[derive(Debug, Default)]
struct Buffers {
    /// Scores, then their exponentials (length × length).
    scores: Vec<f32>,
    /// Each row's largest score; 1 / each row's sum of exponentials.
    maxima: Vec<f32>,
    inverses: Vec<f32>,
    /// The 8-bit path's queries (+ 128), and their scales.
    queries: Vec<u8>,
    query_scales: Vec<f32>,
    /// The keys, packed; each one's scale (× 1/√(head width)) and −128 × the sum of its bytes.
    keys: int8::Packed,
    key_scales: Vec<f32>,
    key_offsets: Vec<i32>,
    /// One key's bytes, before packing.
    row: Vec<u8>,
    /// Every token's values as bytes (rows of the head's width, padded with rows of zeros to
    /// whole runs), before packing.
    value_bytes: Vec<u8>,
    /// The integer products.
    dots: Vec<i32>,
    /// Probabilities × 255, rows padded to whole runs.
    probabilities: Vec<u8>,
    /// The values, packed by column (a row per column of values, a column per token); each
    /// column's scale and its inverse.
    values: int8::Packed,
    value_scales: Vec<f32>,
    value_inverses: Vec<f32>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

/// Multi-head self-attention within each text: `context` (tokens × width) from `qkv` (each
/// token's query, key and value rows side by side), texts of `lengths` tokens one after another.
/// `parts` holds each (text, head) pair's context rows while the cores compute them, text after
/// text and head after head. Neither buffer is cleared: every value of both is written.
pub(crate) fn attention(
    qkv: &[f32],
    context: &mut Vec<f32>,
    parts: &mut Vec<f32>,
    lengths: &[usize],
    width: usize,
    heads: usize,
) {
    let head_width = width / heads;
    let tokens: usize = lengths.iter().sum();
    // Resized, not cleared: zeroing both buffers was a serial pass over them in every layer, the
    // cores' other thread waiting. (The context is the next product's input, of exactly its
    // rows; the parts only grow.)
    let parts = crate::prefix(parts, tokens * width);
    context.resize(tokens * width, 0.0);
    let mut tasks = Vec::with_capacity(lengths.len() * heads);
    let (mut rest, mut start) = (&mut *parts, 0);
    for &length in lengths {
        for head in 0..heads {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(length * head_width);
            rest = tail;
            tasks.push((start, length, head, part));
        }
        start += length;
    }
    let work = |(start, length, head, part): (usize, usize, usize, &mut [f32])| {
        if length > 0 {
            let qkv = &qkv[start * 3 * width..(start + length) * 3 * width];
            attend(Head { qkv, length, width, at: head * head_width, columns: head_width }, part);
        }
    };
    // Each text's rows from its heads' parts.
    let gather = |(rows, parts): (&mut [f32], &[f32])| {
        let length = rows.len() / width;
        for (head, part) in parts.chunks_exact(length.max(1) * head_width).enumerate() {
            for (row, values) in rows.chunks_exact_mut(width).zip(part.chunks_exact(head_width)) {
                copy_head(&mut row[head * head_width..][..head_width], values);
            }
        }
    };
    let parallel = tokens * tokens.min(512) * width >= 1 << 20;
    if parallel {
        tasks.into_par_iter().for_each(work);
    } else {
        tasks.into_iter().for_each(work);
    }
    let mut texts = Vec::with_capacity(lengths.len());
    let (mut rows, mut rest) = (&mut context[..], &*parts);
    for &length in lengths {
        let (text, other_rows) = std::mem::take(&mut rows).split_at_mut(length * width);
        let (text_parts, other_parts) = rest.split_at(length * width);
        texts.push((text, text_parts));
        (rows, rest) = (other_rows, other_parts);
    }
    if parallel {
        texts.into_par_iter().for_each(gather);
    } else {
        texts.into_iter().for_each(gather);
    }
}

/// `to.copy_from_slice(from)`, as moves of known length for heads of 32 values (e5-small's):
/// a call to `memmove` per token and head took 1 % of an import.
#[inline(always)]
fn copy_head(to: &mut [f32], from: &[f32]) {
    const WIDTH: usize = 32;
    if let (Ok(to), Ok(from)) = (<&mut [f32; WIDTH]>::try_from(&mut *to), <&[f32; WIDTH]>::try_from(from)) {
        *to = *from;
    } else {
        to.copy_from_slice(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of 37 scores in units of log₂ e (a whole run of 32 and a tail), including scores
    /// far below the maximum, −∞ and NaN: each byte is 255 · 2^(score − max) rounded (off by
    /// one step at most where the exact value lies within a hundredth of a step of halfway),
    /// the padding past a row is zero, and each inverse is 1 / the sum of the exact values.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exponentials_in_bytes_are_the_rounded_powers_of_two() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        let (width, stride, rows) = (37, 40, 3);
        let mut scores: Vec<f32> =
            (0..rows * width).map(|i| ((i * 7919) % 1000) as f32 / 97.0 - 6.0).collect();
        scores[5] = -400.0;
        scores[width + 2] = f32::NEG_INFINITY;
        scores[2 * width + 36] = f32::NAN;
        let maxima: Vec<f32> = scores
            .chunks(width)
            .map(|row| row.iter().copied().filter(|v| !v.is_nan()).fold(f32::MIN, f32::max))
            .collect();
        let (mut bytes, mut inverses) = (vec![7u8; rows * stride], Vec::new());
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA, checked above.
        unsafe {
            exp_bytes_rows(&scores, width, &maxima, &mut bytes, stride, &mut inverses)
        };
        let mut near_half = 0;
        for ((row, bytes), (&max, &inverse)) in
            scores.chunks(width).zip(bytes.chunks(stride)).zip(maxima.iter().zip(&inverses))
        {
            let exact: Vec<f64> = row
                .iter()
                .map(|&s| if s.is_nan() { 0.0 } else { 255.0 * 2f64.powf(f64::from(s - max)) })
                .collect();
            for (&e, &byte) in exact.iter().zip(bytes) {
                if (e.fract() - 0.5).abs() < 0.01 {
                    near_half += 1;
                    assert!((f64::from(byte) - e).abs() < 0.51, "{byte} for {e}");
                } else {
                    assert_eq!(f64::from(byte), e.round(), "{e}");
                }
            }
            assert!(bytes[width..].iter().all(|&b| b == 0), "the padding is zeroed");
            let sum: f64 = exact.iter().sum();
            assert!((f64::from(inverse) * sum - 1.0).abs() < 1e-5, "1/{sum} against {inverse}");
        }
        assert!(near_half < rows * width / 10);
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
        let (mut context, mut parts) = (Vec::new(), Vec::new());
        attention(&stacked(&[1.0, 0.0], &[5.0, 5.0], &[0.25, -4.0], 2), &mut context, &mut parts, &[1], 2, 1);
        assert_eq!(context, [0.25, -4.0]);

        // Two tokens, one head of width 1: the scores are q·k/1, softmax over the keys.
        attention(&stacked(&[1.0, 0.0], &[2.0, 0.0], &[10.0, 20.0], 1), &mut context, &mut parts, &[2], 1, 1);
        let first = 1.0 / (1.0 + (-2f32).exp());
        assert!((context[0] - (10.0 * first + 20.0 * (1.0 - first))).abs() < 1e-4);
        assert!((context[1] - 15.0).abs() < 1e-4, "equal scores average the values");
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
        let mut context = Vec::new();
        attention(&stacked(&q, &k, &v, width), &mut context, &mut Vec::new(), &lengths, width, heads);
        let mut start = 0;
        for length in lengths {
            let rows = start * width..(start + length) * width;
            let expected =
                attention_by_definition(&q[rows.clone()], &k[rows.clone()], &v[rows.clone()], width, heads);
            for (got, want) in context[rows].iter().zip(&expected) {
                assert!((got - want).abs() < 1e-5, "{got} against {want}");
            }
            start += length;
        }
    }

    /// Each head of texts of several lengths (keys padded to groups of eight, tokens to runs of
    /// four) through the f32 path to 1e-4 and, on a CPU with AVX2 and FMA (which the 8-bit path
    /// needs; its products fall back to a portable loop without VNNI), through the 8-bit path,
    /// within 0.6 % of the values' largest magnitude of the definition in f64. The buffers are
    /// shared from text to text, longer and shorter, as a thread's are; and `attention` takes the
    /// 8-bit path exactly where the CPU has VNNI.
    #[test]
    fn eight_bit_attention_follows_its_definition() {
        let (width, heads) = (64, 2);
        let head_width = width / heads;
        #[cfg(target_arch = "x86_64")]
        let eight_bits = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let eight_bits = false;
        let vnni = eight_bits && int8::vnni();
        let mut buffers = Buffers::default();
        // Like the thread's buffers, the context and its parts are kept from text to text.
        let (mut context, mut parts) = (Vec::new(), Vec::new());
        let mut worst = 0f32;
        for length in [40, 5, 13, 1, 21] {
            let values = |seed: f32| -> Vec<f32> {
                (0..length * width).map(|i| (i as f32 * seed).sin() * (0.5 + (i % 3) as f32 * 0.5)).collect()
            };
            let (q, k, v) = (values(0.37), values(1.13), values(0.71));
            let qkv = stacked(&q, &k, &v, width);
            let expected = attention_by_definition(&q, &k, &v, width, heads);
            let largest = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            attention(&qkv, &mut context, &mut parts, &[length], width, heads);
            for head in 0..heads {
                let part = Head { qkv: &qkv, length, width, at: head * head_width, columns: head_width };
                let mut f32_path = vec![f32::NAN; length * head_width];
                attend_f32(part, &mut f32_path, &mut buffers);
                let mut eight_bit = vec![f32::NAN; length * head_width];
                #[cfg(target_arch = "x86_64")]
                if eight_bits {
                    #[allow(unsafe_code)]
                    // SAFETY: the CPU has AVX2 and FMA, checked above.
                    unsafe {
                        attend_int8(part, &mut eight_bit, &mut buffers)
                    };
                }
                for i in 0..length {
                    let columns = i * width + head * head_width..(i * width + (head + 1) * head_width);
                    let (want, got) = (&expected[columns.clone()], &context[columns]);
                    let rows = i * head_width..(i + 1) * head_width;
                    let (eight_bit, f32_path) = (&eight_bit[rows.clone()], &f32_path[rows]);
                    assert_eq!(got, if vnni { eight_bit } else { f32_path }, "length {length}");
                    for (f, w) in f32_path.iter().zip(want) {
                        assert!((f - w).abs() < 1e-4, "f32: {f} against {w}");
                    }
                    if eight_bits {
                        for (e, w) in eight_bit.iter().zip(want) {
                            worst = worst.max((e - w).abs() / largest);
                        }
                    }
                }
            }
        }
        if eight_bits {
            assert!(worst < 0.006, "8-bit attention off by {worst} of the largest value");
            assert!(worst > 0.0, "the 8-bit path rounds: it cannot be exact on these values");
        }
    }
}
