//! 4-bit weights × 8-bit activations on the CPU: the encoder's linear layers without expanding
//! the weights. The weights come as GGML's Q4_0 blocks (32 weights, one scale; element `j` in the
//! low nibble of byte `j`, element `j + 16` in the high one); each input row is quantised to 8
//! bits per block of 32 with its own scale, as the reference engine does, and a dot product is
//! Σ scale_w · scale_x · Σ w·x over blocks, the inner sum in integers.
//!
//! At load the weights are laid out once for the kernels, still as nibbles (no more memory than
//! the Q4_0 blocks): groups of eight weight rows interleaved by four columns (`Q4Matrix::weights`
//! says how), so that
//! one 32-byte load and two masks give four columns of all eight rows for two runs of columns.
//! Each group is multiplied with every input row (`vpdpbusd` with AVX-512 VNNI, two groups at a
//! time in one 512-bit register, so that each broadcast of an input's four bytes serves both;
//! AVX2's `maddubs` without;
//! a portable loop computing the same integers elsewhere), the groups or, for long inputs, tiles
//! of input rows shared between the cores. With VNNI each tile is quantised by the core that
//! multiplies it, into panels that put everything one block's multiply-adds read at fixed
//! distances from one address (`Panels`).

use half::f16;

/// Weights in a block.
const BLOCK: usize = 32;
/// Bytes of a Q4_0 block in a GGUF file: an f16 scale and 16 bytes of nibbles.
const Q4_0_BYTES: usize = 18;
/// Weight rows multiplied together: one lane each of a 256-bit register of i32.
const GROUP: usize = 8;
/// Columns of a row side by side in a [`Group`]'s layout: one i32 lane of bytes.
const RUN: usize = 4;
/// Bytes of one group's block: [`GROUP`] rows × [`BLOCK`] nibbles.
const GROUP_BLOCK_BYTES: usize = GROUP * BLOCK / 2;
/// Runs of [`RUN`] columns whose nibbles share a byte (the low and the high nibble): runs `v` and
/// `v + PAIRED_RUNS` of a block, columns `j` and `j + 16` as in Q4_0.
const PAIRED_RUNS: usize = BLOCK / RUN / 2;

/// A weight matrix of `rows` outputs × `columns` inputs, in 4-bit groups of [`GROUP`] rows.
#[derive(Debug, Clone)]
pub struct Q4Matrix {
    rows: usize,
    columns: usize,
    /// Group after group, block after block, [`GROUP_BLOCK_BYTES`] each: for each of the
    /// [`PAIRED_RUNS`] runs `v` and each row `r`, four bytes whose low nibbles are columns
    /// `4v..4v + 4` of row `r` and whose high nibbles are columns `4v + 16..4v + 20`. Each nibble
    /// is the weight + 8 (0..15); the −8 is taken off through the activations' block offsets.
    /// Rows past the matrix's end (in its last group) are zero, with scale zero.
    weights: Vec<u8>,
    /// Group after group, block after block, the [`GROUP`] rows' scales.
    scales: Vec<f32>,
}

/// One block of an input row quantised to 8 bits.
#[derive(Clone, Copy, Debug)]
struct BlockQ8 {
    scale: f32,
    quants: [i8; BLOCK],
}

/// One group of [`GROUP`] weight rows of a [`Q4Matrix`], and the biases its outputs start from.
#[derive(Debug, Clone, Copy)]
struct Group<'a> {
    weights: &'a [u8],
    scales: &'a [f32],
    bias: &'a [f32; GROUP],
}

/// A group's biases when the product has none.
const NO_BIAS: [f32; GROUP] = [0.0; GROUP];

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
        let per_row = columns / BLOCK;
        let groups = rows.div_ceil(GROUP);
        let mut weights = vec![0u8; groups * per_row * GROUP_BLOCK_BYTES];
        let mut scales = vec![0f32; groups * per_row * GROUP];
        for (i, block) in bytes.chunks_exact(Q4_0_BYTES).enumerate() {
            let (row, b) = (i / per_row, i % per_row);
            let (g, r) = (row / GROUP, row % GROUP);
            let at = g * per_row + b;
            scales[at * GROUP + r] = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
            // Q4_0's byte j holds columns j and j + 16: run j / 4 and the run paired with it.
            for (j, &byte) in block[2..].iter().enumerate() {
                weights[at * GROUP_BLOCK_BYTES + ((j / RUN) * GROUP + r) * RUN + j % RUN] = byte;
            }
        }
        Ok(Q4Matrix { rows, columns, weights, scales })
    }

    /// The Q4_0 bytes of the matrix, as [`Q4Matrix::from_q4_0`] takes them.
    fn to_q4_0(&self) -> Vec<u8> {
        let per_row = self.columns / BLOCK;
        let mut bytes = Vec::with_capacity(self.rows * per_row * Q4_0_BYTES);
        for row in 0..self.rows {
            let (g, r) = (row / GROUP, row % GROUP);
            for b in 0..per_row {
                let at = g * per_row + b;
                bytes.extend(f16::from_f32(self.scales[at * GROUP + r]).to_bits().to_le_bytes());
                bytes.extend(
                    (0..BLOCK / 2).map(|j| {
                        self.weights[at * GROUP_BLOCK_BYTES + ((j / RUN) * GROUP + r) * RUN + j % RUN]
                    }),
                );
            }
        }
        bytes
    }

    /// The rows of `parts` one after another, as one matrix (every part with the same columns):
    /// the query, key and value layers as one product.
    pub fn stack(parts: &[&Q4Matrix]) -> Result<Q4Matrix, String> {
        let columns = parts.first().map_or(0, |p| p.columns);
        if parts.iter().any(|p| p.columns != columns) {
            return Err("stacked matrices must have the same columns".into());
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        if parts.iter().rev().skip(1).all(|p| p.rows.is_multiple_of(GROUP)) {
            // Whole groups (the encoder's case): the parts' groups one after another, in
            // vectors of exactly their size (they are kept as long as the model).
            let mut weights = Vec::with_capacity(parts.iter().map(|p| p.weights.len()).sum());
            let mut scales = Vec::with_capacity(parts.iter().map(|p| p.scales.len()).sum());
            for part in parts {
                weights.extend_from_slice(&part.weights);
                scales.extend_from_slice(&part.scales);
            }
            return Ok(Q4Matrix { rows, columns, weights, scales });
        }
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.to_q4_0()).collect();
        Q4Matrix::from_q4_0(&bytes, rows, columns)
    }

    fn group(&self, g: usize) -> Group<'_> {
        let per_row = self.columns / BLOCK;
        Group {
            weights: &self.weights[g * per_row * GROUP_BLOCK_BYTES..][..per_row * GROUP_BLOCK_BYTES],
            scales: &self.scales[g * per_row * GROUP..][..per_row * GROUP],
            bias: &NO_BIAS,
        }
    }

    /// `out[i][j] = bias[j] + Σ_k x[i][k] · w[j][k]` for the `m` rows of `x` (`m` × columns,
    /// row-major; `bias` one per row of the matrix, or none); `out` is `m` × rows, and every
    /// value of it is written (what it held is never read). The kernels add each output's bias
    /// as they store it, after the sum as a pass of its own did (the same floats), without the
    /// pass. A long input is cut into tiles of 48 rows (`TILE_ROWS`), which stay in the core's
    /// cache while every group passes over them, and the tiles are shared between the cores; a
    /// short one (too few tiles to share) shares the groups instead.
    pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, out: &mut [f32]) {
        let (n, k) = (self.rows, self.columns);
        assert_eq!(x.len(), m * k, "input of {} values for {m} rows of {k}", x.len());
        assert_eq!(out.len(), m * n, "output of {} values for {m} rows of {n}", out.len());
        if let Some(bias) = bias {
            assert_eq!(bias.len(), n, "{} biases for {n} outputs", bias.len());
        }
        if m == 0 || n == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            return self.multiply_panels(x, m, bias, out);
        }
        // The buffers of this thread's last product, reused.
        let mut activations = SPARE_ACTIVATIONS.take();
        activations.quantize_from(x, m, k);
        self.multiply(&activations, m, bias, out);
        SPARE_ACTIVATIONS.set(activations);
    }

    /// Each group's biases, zero past the matrix's last row (or all zero without a bias).
    fn group_biases(&self, bias: Option<&[f32]>) -> Vec<[f32; GROUP]> {
        let mut biases = vec![[0f32; GROUP]; self.rows.div_ceil(GROUP)];
        if let Some(bias) = bias {
            biases.iter_mut().flatten().zip(bias).for_each(|(to, &b)| *to = b);
        }
        biases
    }

    /// The matrix's groups, each with its biases.
    fn groups<'a>(&'a self, biases: &'a [[f32; GROUP]]) -> Vec<Group<'a>> {
        biases.iter().enumerate().map(|(g, bias)| Group { bias, ..self.group(g) }).collect()
    }

    /// Whether a product of `m` input rows is worth both cores.
    fn threads(&self, m: usize) -> usize {
        if m * self.rows * self.columns >= 1 << 18 { rayon::current_num_threads().max(1) } else { 1 }
    }

    /// [`Q4Matrix::matmul`] once its input is quantised, on the kernels that read rows in place.
    fn multiply(&self, activations: &Activations, m: usize, bias: Option<&[f32]>, out: &mut [f32]) {
        use rayon::prelude::*;
        let n = self.rows;
        let biases = self.group_biases(bias);
        let groups = self.groups(&biases);
        let threads = self.threads(m);
        if m >= 2 * threads * TILE_ROWS {
            out.par_chunks_mut(TILE_ROWS * n).enumerate().for_each(|(t, rows)| {
                tile_outputs(&groups, n, rows, |groups, out, to| {
                    group_dots(groups, activations, t * TILE_ROWS, out, to)
                });
            });
            return;
        }
        grouped_outputs(&groups, m, n, threads > 1, out, |groups, out, to| {
            group_dots(groups, activations, 0, out, to)
        });
    }

    /// [`Q4Matrix::matmul`] on the two-group kernel with AVX-512 VNNI: each tile of a long input
    /// quantised straight into its [`Panels`] by the core that multiplies it (the tile stays in
    /// that core's cache, and a product needs no pass of its own over its input first), a short
    /// input into one set of panels that every pair of groups reads.
    #[cfg(target_arch = "x86_64")]
    fn multiply_panels(&self, x: &[f32], m: usize, bias: Option<&[f32]>, out: &mut [f32]) {
        use rayon::prelude::*;
        let (n, k) = (self.rows, self.columns);
        let per_row = k / BLOCK;
        let biases = self.group_biases(bias);
        let groups = self.groups(&biases);
        let threads = self.threads(m);
        if m >= 2 * threads * TILE_ROWS {
            out.par_chunks_mut(TILE_ROWS * n).zip(x.par_chunks(TILE_ROWS * k)).for_each(|(rows, x)| {
                let mut panels = SPARE_PANELS.take();
                panels.quantize(x, rows.len() / n, k, false);
                tile_outputs(&groups, n, rows, |groups, out, to| {
                    pair_dots(groups, &panels, per_row, out, to)
                });
                SPARE_PANELS.set(panels);
            });
            return;
        }
        let mut panels = SPARE_PANELS.take();
        panels.quantize(x, m, k, threads > 1 && x.len() >= 1 << 16);
        grouped_outputs(&groups, m, n, threads > 1, out, |groups, out, to| {
            pair_dots(groups, &panels, per_row, out, to)
        });
        SPARE_PANELS.set(panels);
    }
}

/// Every group's outputs for the input rows of one tile, into `rows` (rows of `n`), two groups
/// at a time by `dots` (given the groups, where to write and how it is laid out).
fn tile_outputs(groups: &[Group], n: usize, rows: &mut [f32], dots: impl Fn(&[Group], &mut [f32], Outputs)) {
    let count = rows.len() / n;
    let mut partial = Vec::new();
    for (pair, groups) in groups.chunks(2).enumerate() {
        let columns = 2 * pair * GROUP;
        if columns + groups.len() * GROUP <= n {
            // Full groups write their columns of the output rows themselves.
            dots(groups, &mut rows[columns..], Outputs { rows: count, row_stride: n, group_stride: GROUP });
        } else {
            // The last group, past the matrix's last row: into a buffer, then the columns that
            // exist.
            partial.resize(groups.len() * count * GROUP, 0.0);
            dots(
                groups,
                &mut partial,
                Outputs { rows: count, row_stride: GROUP, group_stride: count * GROUP },
            );
            for (g, outputs) in partial.chunks(count * GROUP).enumerate() {
                scatter(outputs, 2 * pair + g, n, rows);
            }
        }
    }
}

/// Every group's outputs for all `m` input rows, into `out` (rows of `n`): the pairs of groups
/// shared between the cores when `parallel`, each pair's outputs computed by `dots` into a
/// buffer of [group][input row][GROUP], then put in their columns.
fn grouped_outputs(
    groups: &[Group],
    m: usize,
    n: usize,
    parallel: bool,
    out: &mut [f32],
    dots: impl Fn(&[Group], &mut [f32], Outputs) + Sync,
) {
    use rayon::prelude::*;
    let mut grouped = vec![0f32; groups.len() * m * GROUP];
    let to = Outputs { rows: m, row_stride: GROUP, group_stride: m * GROUP };
    let work = |pair: usize, outputs: &mut [f32]| {
        dots(&groups[2 * pair..(2 * pair + 2).min(groups.len())], outputs, to)
    };
    if parallel {
        grouped.par_chunks_mut(2 * m * GROUP).enumerate().for_each(|(p, chunk)| work(p, chunk));
    } else {
        grouped.chunks_mut(2 * m * GROUP).enumerate().for_each(|(p, chunk)| work(p, chunk));
    }
    for (g, chunk) in grouped.chunks(m * GROUP).enumerate() {
        scatter(chunk, g, n, out);
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

/// Input rows quantised to 8 bits per block of 32, laid out for the row kernels (AVX2's and the
/// portable loop; with AVX-512 VNNI, `Panels` instead): the values row after row, each
/// block's scale, and each block's offset: −8 × the sum of its
/// values, which added to a block's dot product with weights stored as 0..15 gives the product
/// with the weights' true values (−8..7), in integers.
#[derive(Debug, Default)]
struct Activations {
    values: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<i32>,
    columns: usize,
}

impl Activations {
    /// [`Activations::quantize_from`] into fresh buffers.
    #[cfg(test)]
    fn quantize(x: &[f32], m: usize, columns: usize) -> Activations {
        let mut activations = Activations::default();
        activations.quantize_from(x, m, columns);
        activations
    }

    /// Quantises `x` (`m` rows of `columns`) straight into this layout, in these buffers: every
    /// value is written, so only what they grow by is zeroed first (zeroing fresh buffers for
    /// every product took 2 % of an import), and they are never shrunk ([`crate::prefix`]). A
    /// long input is shared between the cores, in runs of [`BLOCKS_PER_TASK`] blocks.
    fn quantize_from(&mut self, x: &[f32], m: usize, columns: usize) {
        use rayon::prelude::*;
        let blocks = m * columns / BLOCK;
        let Activations { values, scales, offsets, .. } = self;
        let (values, scales, offsets) = (
            crate::prefix(values, m * columns),
            crate::prefix(scales, blocks),
            crate::prefix(offsets, blocks),
        );
        self.columns = columns;
        if x.len() >= 1 << 16 {
            let per_task = BLOCKS_PER_TASK * BLOCK;
            x.par_chunks(per_task)
                .zip(values.par_chunks_mut(per_task))
                .zip(scales.par_chunks_mut(BLOCKS_PER_TASK))
                .zip(offsets.par_chunks_mut(BLOCKS_PER_TASK))
                .for_each(|(((x, values), scales), offsets)| quantize_blocks(x, values, scales, offsets));
        } else {
            quantize_blocks(x, values, scales, offsets);
        }
    }
}

thread_local! {
    /// Each thread's buffers of quantised activations, kept from product to product.
    static SPARE_ACTIVATIONS: std::cell::Cell<Activations> = std::cell::Cell::new(Activations::default());
    /// Each thread's buffer of [`Panels`], kept from tile to tile.
    #[cfg(target_arch = "x86_64")]
    static SPARE_PANELS: std::cell::Cell<Panels> = std::cell::Cell::new(Panels::default());
}

/// Input rows quantised for the two-group kernel with AVX-512 VNNI: panels of [`PAIR_STEPS`]
/// rows (twelve while as many are left, then four, then one), and in a panel, block after block,
/// its rows' 32 bytes one after another, then the rows' offsets (as [`Activations`]), then their
/// scales. Everything a block's multiply-adds broadcast lies at a fixed distance from one
/// address. (In the row-major layout each of twelve rows needed a pointer of its own, and the
/// pointers, sums, totals and scales did not fit the registers: a fifth of the kernel's samples
/// were spills and their reloads.)
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Default)]
struct Panels {
    bytes: Vec<u8>,
}

/// Bytes of one row's block in a panel: [`BLOCK`] values, its offset and its scale.
#[cfg(target_arch = "x86_64")]
const PANEL_ROW_BYTES: usize = BLOCK + 8;

#[cfg(target_arch = "x86_64")]
impl Panels {
    /// `x` (`rows` of `columns`) quantised into panels, in this buffer (it only grows; every
    /// byte read is written); the panels shared between the cores when `parallel`.
    fn quantize(&mut self, x: &[f32], rows: usize, columns: usize, parallel: bool) {
        use rayon::prelude::*;
        assert!(avx512::available() && x.len() == rows * columns && columns.is_multiple_of(BLOCK));
        let per_row = columns / BLOCK;
        let mut panels = Vec::new();
        let (mut x, mut bytes) = (x, crate::prefix(&mut self.bytes, rows * per_row * PANEL_ROW_BYTES));
        let mut t = 0;
        for height in PAIR_STEPS {
            while t + height <= rows {
                let (panel, rest) =
                    std::mem::take(&mut bytes).split_at_mut(height * per_row * PANEL_ROW_BYTES);
                let (values, other_rows) = x.split_at(height * columns);
                panels.push((values, height, panel));
                (bytes, x, t) = (rest, other_rows, t + height);
            }
        }
        // SAFETY: the CPU has AVX-512 F, VL and AVX2 (asserted above: the two-group kernel's
        // needs include them); `quantize_panel` checks the lengths.
        #[allow(unsafe_code)]
        let work = |(x, height, panel): (&[f32], usize, &mut [u8])| unsafe {
            avx2::quantize_panel(x, height, columns, panel)
        };
        if parallel {
            panels.into_par_iter().for_each(work);
        } else {
            panels.into_iter().for_each(work);
        }
    }

    /// The panel of `height` rows that starts at row `t`, for rows of `per_row` blocks.
    fn panel(&self, t: usize, height: usize, per_row: usize) -> &[u8] {
        &self.bytes[t * per_row * PANEL_ROW_BYTES..][..height * per_row * PANEL_ROW_BYTES]
    }
}

/// Blocks of activations quantised by one task of [`Activations::quantize_from`].
const BLOCKS_PER_TASK: usize = 256;

/// Each block of 32 values of `x`: its 8-bit values, scale and offset (−8 × Σ values). With
/// AVX2 in vector instructions throughout (the same values: the conversion rounds to nearest
/// even, as [`quantize_block`] does); elsewhere block by block.
fn quantize_blocks(x: &[f32], values: &mut [i8], scales: &mut [f32], offsets: &mut [i32]) {
    assert!(x.len() == values.len() && x.len() == scales.len() * BLOCK && scales.len() == offsets.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2, checked just above; the lengths are asserted above.
        unsafe {
            avx2::quantize_blocks(x, values, scales, offsets)
        };
        return;
    }
    let blocks = x.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK)).zip(scales).zip(offsets);
    for (((x, values), scale), offset) in blocks {
        let block = quantize_block(x);
        values.copy_from_slice(&block.quants);
        *scale = block.scale;
        *offset = -8 * block.quants.iter().map(|&q| i32::from(q)).sum::<i32>();
    }
}

/// Input rows of a tile of a long product: a multiple of the pair kernel's twelve and of the
/// single-group kernel's four. At the encoder's widths of 384 a tile's quantised values (18 KB)
/// stay in a core's 32 KB first-level cache beside two groups' weights; tiles of about 64 KB
/// (170 rows at 384) ran the encoder's four products 9-12 % slower at 312 and 1,248 rows, and
/// tiles of 24 rows as fast as these.
const TILE_ROWS: usize = 48;

/// Where the group kernels write: input row `i`'s [`GROUP`] outputs of the call's group `g` at
/// `g * group_stride + i * row_stride`, for `rows` input rows. Output rows of the whole product
/// (`row_stride` its width, `group_stride` = [`GROUP`]: no copy afterwards) or a buffer of
/// [group][input row][GROUP].
#[derive(Clone, Copy, Debug)]
struct Outputs {
    rows: usize,
    row_stride: usize,
    group_stride: usize,
}

impl Outputs {
    /// Where input row `i`'s outputs of group `g` start.
    fn at(&self, g: usize, i: usize) -> usize {
        g * self.group_stride + i * self.row_stride
    }
}

/// The [`GROUP`] outputs of one or two groups of weight rows for input rows `first..`
/// (`to.rows` of them), written into `out` as `to` lays them out, one group after the other
/// (where the CPU lacks AVX-512 VNNI; with it, [`pair_dots`]).
fn group_dots(groups: &[Group], x: &Activations, first: usize, out: &mut [f32], to: Outputs) {
    let m = to.rows;
    assert!(m == 0 || to.at(groups.len() - 1, m - 1) + GROUP <= out.len(), "outputs out of bounds");
    for (g, group) in groups.iter().enumerate() {
        group_dot_rows(group, x, first, out, g, to);
    }
}

/// The [`GROUP`] outputs of one or two groups for every input row of `panels` (`to.rows` of
/// them, rows of `per_row` blocks), written into `out` as `to` lays them out: two groups
/// multiplied together in 512-bit registers, so that each broadcast of an input's four bytes
/// serves both (a broadcast per multiply-add held the kernel to about half the units' rate). A
/// single group (the last of an odd number) is passed as both halves, which then write the
/// same outputs.
#[cfg(target_arch = "x86_64")]
fn pair_dots(groups: &[Group], panels: &Panels, per_row: usize, out: &mut [f32], to: Outputs) {
    let m = to.rows;
    assert!(m == 0 || to.at(groups.len() - 1, m - 1) + GROUP <= out.len(), "outputs out of bounds");
    let ([a, b], second) = match groups {
        [a] => ([a, a], 0),
        [a, b] => ([a, b], 1),
        _ => panic!("{} groups: the kernel takes one or two", groups.len()),
    };
    assert!(avx512::available(), "the two-group kernel needs AVX-512 VNNI");
    let mut t = 0;
    for step in PAIR_STEPS {
        while t + step <= m {
            let (at, stride) = ([to.at(0, t), to.at(second, t)], to.row_stride);
            let panel = panels.panel(t, step, per_row);
            #[allow(unsafe_code)]
            // SAFETY: the CPU has what the kernel needs, asserted above; the kernel checks the
            // slices' lengths.
            unsafe {
                match step {
                    12 => avx512::group_pair_dot::<12>([a, b], panel, per_row, out, at, stride),
                    4 => avx512::group_pair_dot::<4>([a, b], panel, per_row, out, at, stride),
                    _ => avx512::group_pair_dot::<1>([a, b], panel, per_row, out, at, stride),
                }
            }
            t += step;
        }
    }
}

/// Input rows per call of the two-group kernel: 12 sums, 12 totals and the two groups' weights
/// fit the 32 registers; a tile of [`TILE_ROWS`] is four calls. (Six, eight and sixteen rows
/// ran as fast in the first-level cache.)
#[cfg(target_arch = "x86_64")]
const PAIR_STEPS: [usize; 3] = [12, 4, 1];

/// [`group_dots`] for the call's group `g`, up to four input rows at a time.
fn group_dot_rows(group: &Group, x: &Activations, first: usize, out: &mut [f32], g: usize, to: Outputs) {
    let m = to.rows;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let mut t = 0;
        // Input rows in steps of four (16 vector registers hold four rows' accumulators and
        // totals), then one by one.
        for step in [4, 1] {
            while t + step <= m {
                let (at, stride) = (to.at(g, t), to.row_stride);
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 and FMA, checked just above; the kernel checks the
                // slices' lengths.
                unsafe {
                    match step {
                        4 => avx2::group_dot::<4>(group, x, first + t, out, at, stride),
                        _ => avx2::group_dot::<1>(group, x, first + t, out, at, stride),
                    }
                }
                t += step;
            }
        }
        return;
    }
    for t in 0..m {
        portable_group_dot(group, x, first + t, &mut out[to.at(g, t)..][..GROUP]);
    }
}

fn portable_group_dot(group: &Group, x: &Activations, t: usize, outputs: &mut [f32]) {
    let k = x.columns;
    let per_row = k / BLOCK;
    let mut sums = [0f32; GROUP];
    for b in 0..per_row {
        let mut dots = [0i32; GROUP];
        for v in 0..PAIRED_RUNS {
            let low = &x.values[t * k + b * BLOCK + v * RUN..][..RUN];
            let high = &x.values[t * k + b * BLOCK + (v + PAIRED_RUNS) * RUN..][..RUN];
            let weights = &group.weights[b * GROUP_BLOCK_BYTES + v * GROUP * RUN..][..GROUP * RUN];
            for (dot, row) in dots.iter_mut().zip(weights.chunks_exact(RUN)) {
                for ((&w, &l), &h) in row.iter().zip(low).zip(high) {
                    *dot += i32::from(w & 0x0F) * i32::from(l) + i32::from(w >> 4) * i32::from(h);
                }
            }
        }
        let block = t * per_row + b;
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum += group.scales[b * GROUP + r] * x.scales[block] * (dots[r] + x.offsets[block]) as f32;
        }
    }
    outputs.iter_mut().zip(sums).zip(group.bias).for_each(|((out, sum), bias)| *out = sum + bias);
}

/// Adding 1.5 · 2²³ leaves a float whose last mantissa bits are its value rounded to the nearest
/// integer (ties to even), in two's complement: rounding and conversion in plain arithmetic the
/// compiler vectorises, where `f32::round` is a libm call per value on the baseline x86-64.
pub(crate) const ROUNDING: f32 = 12_582_912.0;

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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #![allow(unsafe_code)]

    use std::arch::x86_64::*;

    use super::{Activations, BLOCK, GROUP, GROUP_BLOCK_BYTES, Group, PAIRED_RUNS, PANEL_ROW_BYTES, RUN};

    /// The eight lanes' largest.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lane_max(v: __m256) -> f32 {
        let v = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let v = _mm_max_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_max_ss(v, _mm_shuffle_ps::<1>(v, v)))
    }

    /// The eight lanes' sum.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lane_sum(v: __m256i) -> i32 {
        let v = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let v = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
        _mm_cvtsi128_si32(_mm_add_epi32(v, _mm_shuffle_epi32::<1>(v)))
    }

    /// One block of 32 values from `p` quantised: its bytes in order, scale and offset.
    ///
    /// # Safety
    ///
    /// 32 values must be readable from `p`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn quantize_one(p: *const f32) -> (__m256i, f32, i32) {
        let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        // SAFETY: 32 values are read, as the caller promises.
        let v = unsafe {
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let largest = _mm256_max_ps(
            _mm256_max_ps(_mm256_and_ps(v[0], magnitude), _mm256_and_ps(v[1], magnitude)),
            _mm256_max_ps(_mm256_and_ps(v[2], magnitude), _mm256_and_ps(v[3], magnitude)),
        );
        let scale = lane_max(largest) / 127.0;
        let inverse = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
        let q = [
            _mm256_cvtps_epi32(_mm256_mul_ps(v[0], inverse)),
            _mm256_cvtps_epi32(_mm256_mul_ps(v[1], inverse)),
            _mm256_cvtps_epi32(_mm256_mul_ps(v[2], inverse)),
            _mm256_cvtps_epi32(_mm256_mul_ps(v[3], inverse)),
        ];
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        // packs interleaves the 128-bit halves: this puts the four runs of eight back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        (_mm256_permutevar8x32_epi32(bytes, order), scale, -8 * lane_sum(sum))
    }

    /// [`super::quantize_blocks`] with AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_blocks(
        x: &[f32],
        values: &mut [i8],
        scales: &mut [f32],
        offsets: &mut [i32],
    ) {
        let blocks = x.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK)).zip(scales).zip(offsets);
        for (((x, values), scale), offset) in blocks {
            // SAFETY: 32 values are read from a block of 32, 32 bytes written to a block of 32.
            // (No closures here: a closure would be compiled without this function's AVX2.)
            unsafe {
                let bytes;
                (bytes, *scale, *offset) = quantize_one(x.as_ptr());
                _mm256_storeu_si256(values.as_mut_ptr().cast(), bytes);
            }
        }
    }

    /// `x` (`height` rows of `columns`) quantised into one panel of [`super::Panels`]. Only the
    /// two-group kernel reads panels, so the CPU has AVX-512: the AVX2 instructions get its 32
    /// registers (the same values).
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    pub(super) unsafe fn quantize_panel(x: &[f32], height: usize, columns: usize, panel: &mut [u8]) {
        let per_row = columns / BLOCK;
        assert!(x.len() == height * columns && panel.len() == per_row * height * PANEL_ROW_BYTES);
        let (offsets, scales) = (BLOCK * height, (BLOCK + RUN) * height);
        for (i, row) in x.chunks_exact(columns).enumerate() {
            for (b, values) in row.chunks_exact(BLOCK).enumerate() {
                // SAFETY: 32 values are read from a block of 32; the block's bytes, offset and
                // scale of row `i < height` lie inside the panel, whose length is asserted above.
                unsafe {
                    let (bytes, scale, offset) = quantize_one(values.as_ptr());
                    let block = panel.as_mut_ptr().add(b * height * PANEL_ROW_BYTES);
                    _mm256_storeu_si256(block.add(i * BLOCK).cast(), bytes);
                    block.add(offsets + RUN * i).cast::<i32>().write_unaligned(offset);
                    block.add(scales + RUN * i).cast::<f32>().write_unaligned(scale);
                }
            }
        }
    }

    /// The four columns of all eight rows for the runs `v` and `v + PAIRED_RUNS` of block `b`:
    /// one 32-byte load of nibbles, unpacked to bytes 0..15.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn runs(weights: *const u8, b: usize, v: usize) -> [__m256i; 2] {
        let mask = _mm256_set1_epi8(0x0F);
        // SAFETY: the caller passes a block and run inside the group's weights.
        let packed =
            unsafe { _mm256_loadu_si256(weights.add(b * GROUP_BLOCK_BYTES + v * GROUP * RUN).cast()) };
        [_mm256_and_si256(packed, mask), _mm256_and_si256(_mm256_srli_epi16::<4>(packed), mask)]
    }

    /// The input row's four bytes of run `run` of block `b`, in every lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn broadcast(row: *const i8, b: usize, run: usize) -> __m256i {
        // SAFETY: the caller passes a block and run inside the row.
        _mm256_set1_epi32(unsafe { row.add(b * BLOCK + run * RUN).cast::<i32>().read_unaligned() })
    }

    /// One group's outputs for `T` input rows from `t` at once (independent chains, so the
    /// multiply-adds overlap), with AVX2's `maddubs`: per block, eight runs of four columns, two
    /// at a time from one load of nibbles ([`runs`]), each against each input's four bytes
    /// repeated, the products summed in 16 bits (at most 8 · 2 · 15 · 127 = 30,480, no overflow)
    /// and widened once per block into the block's eight i32 sums; the input block's offset takes
    /// off every weight's −8, and the sums are scaled by weight × input scale.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn group_dot<const T: usize>(
        group: &Group,
        x: &Activations,
        t: usize,
        out: &mut [f32],
        at: usize,
        stride: usize,
    ) {
        let k = x.columns;
        let per_row = k / BLOCK;
        assert!(group.weights.len() >= per_row * GROUP_BLOCK_BYTES && group.scales.len() >= per_row * GROUP);
        assert!(at + (T - 1) * stride + GROUP <= out.len());
        assert!(x.values.len() >= (t + T) * k && x.scales.len() >= (t + T) * per_row);
        let ones = _mm256_set1_epi16(1);
        let mut total = [_mm256_setzero_ps(); T];
        let weights = group.weights.as_ptr();
        let values = x.values.as_ptr();
        for b in 0..per_row {
            let mut acc = [_mm256_setzero_si256(); T];
            for v in 0..PAIRED_RUNS {
                // SAFETY: inside `weights`, as asserted above.
                let [low, high] = unsafe { runs(weights, b, v) };
                for (i, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: inside `values`, as asserted above.
                    let row = unsafe { values.add((t + i) * k) };
                    // SAFETY: as above.
                    let (x_low, x_high) =
                        unsafe { (broadcast(row, b, v), broadcast(row, b, v + PAIRED_RUNS)) };
                    let products = _mm256_add_epi16(
                        _mm256_maddubs_epi16(low, x_low),
                        _mm256_maddubs_epi16(high, x_high),
                    );
                    *acc = _mm256_add_epi16(*acc, products);
                }
            }
            // SAFETY: as above.
            let weight_scales = unsafe { _mm256_loadu_ps(group.scales.as_ptr().add(b * GROUP)) };
            for (i, (acc, total)) in acc.iter().zip(&mut total).enumerate() {
                let block = (t + i) * per_row + b;
                // The weights' −8 taken off in integers: one add, no second accumulator.
                let dots =
                    _mm256_add_epi32(_mm256_madd_epi16(*acc, ones), _mm256_set1_epi32(x.offsets[block]));
                let scale = _mm256_mul_ps(weight_scales, _mm256_set1_ps(x.scales[block]));
                *total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), scale, *total);
            }
        }
        // SAFETY: eight biases.
        let bias = unsafe { _mm256_loadu_ps(group.bias.as_ptr()) };
        for (i, total) in total.iter().enumerate() {
            // SAFETY: inside `out`, as asserted above.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(at + i * stride), _mm256_add_ps(*total, bias)) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    #![allow(unsafe_code)]

    use std::arch::x86_64::*;

    use super::{BLOCK, GROUP, GROUP_BLOCK_BYTES, Group, PAIRED_RUNS, PANEL_ROW_BYTES, RUN};

    /// Whether this CPU runs [`group_pair_dot`] and [`super::avx2::quantize_panel`]: every CPU with
    /// AVX-512 VNNI has the rest.
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }

    /// Two groups' eight f32s side by side in one register: `a`'s in the low half.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn pair_ps(a: *const f32, b: *const f32) -> __m512 {
        // SAFETY: the caller passes eight values at each.
        unsafe {
            let low = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(a)));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(low, _mm256_castps_pd(_mm256_loadu_ps(b))))
        }
    }

    /// Two groups' outputs for the `T` input rows of a [`super::Panels`] panel at once, in 512-bit
    /// registers: lanes 0..8 hold the first group's rows, 8..16 the second's. Per block, eight
    /// runs of four columns, two at a time from one load of each group's nibbles, each a
    /// `vpdpbusd` against an input's four bytes broadcast from memory (one instruction serves both
    /// groups); each row's sums start from its block's offset, which takes off every weight's −8,
    /// and are scaled by weight × input scale into the totals once per block. Against the same
    /// loop in 256-bit registers (a broadcast, two multiply-adds and the float steps per group)
    /// this is about a third of the instructions: 5-8 % faster in the first-level cache, where
    /// the float steps and the multiply-adds share the units (docs/benchmarks.md).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(super) unsafe fn group_pair_dot<const T: usize>(
        groups: [&Group; 2],
        panel: &[u8],
        per_row: usize,
        out: &mut [f32],
        at: [usize; 2],
        stride: usize,
    ) {
        for (group, at) in groups.iter().zip(at) {
            assert!(
                group.weights.len() >= per_row * GROUP_BLOCK_BYTES && group.scales.len() >= per_row * GROUP
            );
            assert!(at + (T - 1) * stride + GROUP <= out.len());
        }
        assert!(panel.len() >= per_row * T * PANEL_ROW_BYTES);
        let mask = _mm512_set1_epi8(0x0F);
        let mut total = [_mm512_setzero_ps(); T];
        let (weights_a, weights_b) = (groups[0].weights.as_ptr(), groups[1].weights.as_ptr());
        // Where a panel's block keeps run `v` of row `i`, its offsets and its scales.
        let run = |v: usize, i: usize| i * BLOCK + v * RUN;
        let (offsets, scales) = (BLOCK * T, (BLOCK + RUN) * T);
        for b in 0..per_row {
            // SAFETY: inside the panel, as asserted above.
            let block = unsafe { panel.as_ptr().add(b * T * PANEL_ROW_BYTES) };
            // Four bytes of the block (its values, offsets and scales), by their place in it.
            let read = |at: usize| {
                debug_assert!(at + RUN <= T * PANEL_ROW_BYTES, "inside the block");
                // SAFETY: inside the block, which lies inside the panel (asserted above).
                unsafe { block.add(at).cast::<i32>().read_unaligned() }
            };
            // Each row's sums start from its block's offset (a broadcast load, no arithmetic).
            let mut acc: [__m512i; T] = std::array::from_fn(|i| _mm512_set1_epi32(read(offsets + RUN * i)));
            for v in 0..PAIRED_RUNS {
                let from = b * GROUP_BLOCK_BYTES + v * GROUP * RUN;
                // SAFETY: inside both groups' weights, as asserted above.
                let packed = unsafe {
                    let a = _mm512_castsi256_si512(_mm256_loadu_si256(weights_a.add(from).cast()));
                    _mm512_inserti64x4::<1>(a, _mm256_loadu_si256(weights_b.add(from).cast()))
                };
                let low = _mm512_and_si512(packed, mask);
                let high = _mm512_and_si512(_mm512_srli_epi16::<4>(packed), mask);
                for (i, acc) in acc.iter_mut().enumerate() {
                    let (x_low, x_high) = (read(run(v, i)), read(run(v + PAIRED_RUNS, i)));
                    *acc = _mm512_dpbusd_epi32(
                        _mm512_dpbusd_epi32(*acc, low, _mm512_set1_epi32(x_low)),
                        high,
                        _mm512_set1_epi32(x_high),
                    );
                }
            }
            // SAFETY: as above.
            let weight_scales = unsafe {
                pair_ps(groups[0].scales.as_ptr().add(b * GROUP), groups[1].scales.as_ptr().add(b * GROUP))
            };
            for (i, (acc, total)) in acc.iter().zip(&mut total).enumerate() {
                let scale = _mm512_mul_ps(
                    weight_scales,
                    _mm512_set1_ps(f32::from_bits(read(scales + RUN * i) as u32)),
                );
                *total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*acc), scale, *total);
            }
        }
        // SAFETY: eight biases each.
        let bias = unsafe { pair_ps(groups[0].bias.as_ptr(), groups[1].bias.as_ptr()) };
        for (i, total) in total.iter().enumerate() {
            let total = _mm512_add_ps(*total, bias);
            // SAFETY: inside `out`, as asserted above.
            unsafe {
                let base = out.as_mut_ptr();
                _mm256_storeu_ps(base.add(at[0] + i * stride), _mm512_castps512_ps256(total));
                let high = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(total));
                _mm256_storeu_ps(base.add(at[1] + i * stride), _mm256_castpd_ps(high));
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
        // Few input rows (a question) and many, including a last group that the matrix only
        // partly fills: groups shared between the cores, and (the last case, enough rows for 16
        // cores, the last tile partly filled) tiles of input rows shared instead.
        for (rows, columns, m) in [
            (8, 64, 1),
            (40, 384, 3),
            (64, 384, 9),
            (48, 1536, 5),
            (44, 384, 33),
            (64, 1536, 37),
            (20, 1536, 1550),
        ] {
            let (bytes, x) = sample(rows, columns, m);
            let matrix = Q4Matrix::from_q4_0(&bytes, rows, columns).unwrap();
            assert_eq!(matrix.to_q4_0(), bytes, "the layout keeps every nibble and scale");
            // Every output gets its bias, the portable loop's too; without one, the plain sums.
            let bias: Vec<f32> = (0..rows).map(|j| j as f32 * 0.37 - 5.0).collect();
            let mut biases = vec![[0f32; GROUP]; rows.div_ceil(GROUP)];
            biases.iter_mut().flatten().zip(&bias).for_each(|(to, &b)| *to = b);
            let mut fast = vec![f32::NAN; m * rows];
            matrix.matmul(&x, m, Some(&bias), &mut fast);
            let mut unbiased = vec![f32::NAN; m * rows];
            matrix.matmul(&x, m, None, &mut unbiased);
            let per_row = columns / BLOCK;
            let activations = Activations::quantize(&x, m, columns);
            // The row kernels' product, which `matmul` takes where the CPU lacks AVX-512 VNNI.
            let mut row_kernels = vec![f32::NAN; m * rows];
            matrix.multiply(&activations, m, Some(&bias), &mut row_kernels);
            let mut portable = vec![0f32; m * rows];
            for (g, bias) in biases.iter().enumerate() {
                let columns = g * GROUP..(g * GROUP + GROUP).min(rows);
                let group = Group { bias, ..matrix.group(g) };
                let mut outputs = [0f32; GROUP];
                for i in 0..m {
                    portable_group_dot(&group, &activations, i, &mut outputs);
                    portable[i * rows..][columns.clone()].copy_from_slice(&outputs[..columns.len()]);
                }
            }
            // The same integers, summed in another order.
            for (j, (((a, b), plain), r)) in
                fast.iter().zip(&portable).zip(&unbiased).zip(&row_kernels).enumerate()
            {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{rows}x{columns} m {m}: {a} vs {b}");
                assert!(
                    (r - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "row kernels, {rows}x{columns} m {m}: {r} vs {b}"
                );
                let b = b - bias[j % rows];
                assert!((plain - b).abs() <= 1e-4 * (1.0 + b.abs()), "without bias: {plain} vs {b}");
            }
            // Against the f32 product of the dequantised weights: off by the 8-bit rounding of
            // the inputs only (at most half a step, 1/254 of a block's largest value, per term).
            for i in 0..m {
                for j in 0..rows {
                    let (mut exact, mut magnitude) = (0f32, 0f32);
                    for (b, block) in bytes[j * per_row * Q4_0_BYTES..][..per_row * Q4_0_BYTES]
                        .chunks_exact(Q4_0_BYTES)
                        .enumerate()
                    {
                        let scale = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
                        let quants = &block[2..];
                        for t in 0..BLOCK {
                            let nibble = if t < 16 { quants[t] & 0x0F } else { quants[t - 16] >> 4 };
                            let w = (f32::from(nibble) - 8.0) * scale;
                            exact += w * x[i * columns + b * BLOCK + t];
                            magnitude += (w * x[i * columns + b * BLOCK + t]).abs();
                        }
                    }
                    let got = unbiased[i * rows + j];
                    assert!(
                        (got - exact).abs() <= 0.01 * magnitude + 1e-4,
                        "{got} vs {exact} (Σ|w·x| {magnitude})"
                    );
                }
            }
        }
    }

    /// Every group kernel this CPU can run, one input row at a time, four and twelve, one group
    /// or two at once, gives the portable loop's integers.
    #[test]
    fn each_group_kernel_computes_what_the_portable_one_does() {
        // 13 input rows: twelve and one for the two-group kernel with AVX-512 VNNI (one group or
        // two), thrice four and one for AVX2's. The second group is only partly filled.
        let (rows, columns, m) = (2 * GROUP - 3, 768, 13);
        let (bytes, x) = sample(rows, columns, m);
        let matrix = Q4Matrix::from_q4_0(&bytes, rows, columns).unwrap();
        let groups = [matrix.group(0), matrix.group(1)];
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
        // One group, two, and two straight into rows of a wider output (the two groups' columns
        // side by side at column 3), through `dots`.
        type Dots<'a> = dyn Fn(&[Group], &mut [f32], Outputs) + 'a;
        let dispatch = |name: &str, dots: &Dots| {
            let one_group = Outputs { rows: m, row_stride: GROUP, group_stride: m * GROUP };
            let mut alone = vec![0f32; m * GROUP];
            dots(std::slice::from_ref(group), &mut alone, one_group);
            close(&format!("{name}, one group"), &alone, &expected);
            let mut pair = vec![0f32; 2 * m * GROUP];
            dots(&groups, &mut pair, one_group);
            close(&format!("{name}, two groups"), &pair, &both);
            let width = 2 * GROUP + 5;
            let mut wide = vec![f32::NAN; m * width];
            dots(&groups, &mut wide[3..], Outputs { rows: m, row_stride: width, group_stride: GROUP });
            for (i, row) in wide.chunks_exact(width).enumerate() {
                let wanted = [&both[i * GROUP..][..GROUP], &both[(m + i) * GROUP..][..GROUP]].concat();
                close(&format!("{name}, into rows"), &row[3..3 + 2 * GROUP], &wanted);
                assert!(row[..3].iter().chain(&row[3 + 2 * GROUP..]).all(|v| v.is_nan()), "only its columns");
            }
        };
        dispatch("row kernels", &|groups, out, to| group_dots(groups, &activations, 0, out, to));
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut results: Vec<(&str, Vec<f32>)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let (mut one, mut four) = (vec![0f32; m * GROUP], vec![0f32; 4 * GROUP]);
            // SAFETY: AVX2 and FMA are there, checked above.
            unsafe {
                for (t, out) in one.chunks_exact_mut(GROUP).enumerate() {
                    super::avx2::group_dot::<1>(group, &activations, t, out, 0, GROUP);
                }
                super::avx2::group_dot::<4>(group, &activations, 1, &mut four, 0, GROUP);
            }
            four.splice(0..0, expected[..GROUP].iter().copied());
            four.extend_from_slice(&expected[5 * GROUP..]);
            results.push(("avx2, one row", one));
            results.push(("avx2, four rows", four));
            if super::avx512::available() {
                let mut panels = Panels::default();
                panels.quantize(&x, m, columns, false);
                dispatch("two-group kernel", &|groups, out, to| {
                    pair_dots(groups, &panels, columns / BLOCK, out, to)
                });
                // Panels of one row (the last), four from row 1, twelve from row 1, each
                // quantised on its own, against the portable loop's.
                let rows_of = |g: usize, from: usize, count: usize| {
                    both[g * m * GROUP + from * GROUP..][..count * GROUP].to_vec()
                };
                macro_rules! pair {
                    ($T:literal, $from:expr, $name:expr) => {{
                        let mut ab = vec![0f32; 2 * $T * GROUP];
                        panels.quantize(&x[$from * columns..($from + $T) * columns], $T, columns, false);
                        // SAFETY: the CPU has AVX-512 VNNI, checked above.
                        unsafe {
                            super::avx512::group_pair_dot::<$T>(
                                [group, second],
                                panels.panel(0, $T, columns / BLOCK),
                                columns / BLOCK,
                                &mut ab,
                                [0, $T * GROUP],
                                GROUP,
                            )
                        };
                        let wanted = [rows_of(0, $from, $T), rows_of(1, $from, $T)].concat();
                        close($name, &ab, &wanted);
                    }};
                }
                pair!(1, 12, "two groups, one row");
                pair!(4, 1, "two groups, four rows");
                pair!(12, 1, "two groups, twelve rows");
            }
        }
        for (name, got) in &results {
            close(name, got, &expected);
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
        let (_, mut long) = sample(BLOCK, 384, 200);
        long[BLOCK..2 * BLOCK].fill(0.0);
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
        // Whole groups (concatenated as they are), a last part that fills its last group only
        // partly (the same), and a first part that does (laid out again).
        for (top, bottom) in [(40, 24), (24, 13), (13, 24)] {
            let (first, x) = sample(top, 64, 3);
            let (second, _) = sample(bottom, 64, 1);
            let a = Q4Matrix::from_q4_0(&first, top, 64).unwrap();
            let b = Q4Matrix::from_q4_0(&second, bottom, 64).unwrap();
            let stacked = Q4Matrix::stack(&[&a, &b]).unwrap();
            assert_eq!(stacked.to_q4_0(), [first, second].concat(), "{top} + {bottom} rows");
            let rows = top + bottom;
            let (mut both, mut left, mut right) =
                (vec![0f32; 3 * rows], vec![0f32; 3 * top], vec![0f32; 3 * bottom]);
            stacked.matmul(&x, 3, None, &mut both);
            a.matmul(&x, 3, None, &mut left);
            b.matmul(&x, 3, None, &mut right);
            for i in 0..3 {
                assert_eq!(both[i * rows..i * rows + top], left[i * top..(i + 1) * top]);
                assert_eq!(both[i * rows + top..(i + 1) * rows], right[i * bottom..(i + 1) * bottom]);
            }
            let narrow = Q4Matrix::from_q4_0(&[0; 18], 1, 32).unwrap();
            assert!(Q4Matrix::stack(&[&a, &narrow]).is_err());
        }
    }

    #[test]
    fn misshapen_weights_are_refused() {
        assert!(Q4Matrix::from_q4_0(&[0; 18], 1, 33).is_err());
        assert!(Q4Matrix::from_q4_0(&[0; 17], 1, 32).is_err());
        assert!(Q4Matrix::from_q4_0(&[0; 18], 1, 32).is_ok());
    }
}
