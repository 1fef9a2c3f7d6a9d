//! Products of 8-bit integers for attention: unsigned bytes (a query shifted by 128, a
//! probability times 255) against signed ones (a key, a value), summed in 32 bits. The signed
//! operand is packed once per product ([`Packed`]) in groups of eight rows interleaved by four
//! bytes, so that one `vpdpbusd` multiplies four bytes of an unsigned row, broadcast, with four
//! bytes of all eight rows: the layout of the 4-bit kernels' groups ([`crate::q4`]), in whole
//! bytes. With AVX-512 VNNI four groups at a time share each broadcast; elsewhere a portable
//! loop computes the same integers (no product of two bytes and no sum here can overflow an
//! i32: 512 × 255 × 128 < 2³¹).

/// Rows of the signed operand multiplied together: one i32 lane each of a 256-bit register.
pub(crate) const GROUP: usize = 8;
/// Bytes of a row side by side in a group's layout: one i32 lane.
pub(crate) const RUN: usize = 4;

/// The signed operand of [`dot`]: `rows` rows of `depth` bytes (`rows` a multiple of [`GROUP`],
/// `depth` of [`RUN`]), group after group, each group run after run, each run the [`RUN`] bytes
/// of the group's rows in turn.
#[derive(Debug, Default)]
pub(crate) struct Packed {
    bytes: Vec<i8>,
    rows: usize,
    depth: usize,
}

impl Packed {
    /// Room for `rows` × `depth` bytes (rounded up to whole groups and runs), the buffer reused,
    /// neither cleared nor shrunk ([`crate::prefix`]): what it held before stays until every
    /// row is set.
    pub(crate) fn reshape(&mut self, rows: usize, depth: usize) {
        (self.rows, self.depth) = (rows.next_multiple_of(GROUP), depth.next_multiple_of(RUN));
        crate::prefix(&mut self.bytes, self.rows * self.depth);
    }

    /// The operand's bytes (the buffer may hold more).
    fn used(&self) -> &[i8] {
        &self.bytes[..self.rows * self.depth]
    }

    /// Rows `from..` (to the last of the last group) set to zeros.
    pub(crate) fn zero_rows_from(&mut self, from: usize) {
        for row in from..self.rows {
            for x in (0..self.depth).step_by(RUN) {
                let at = self.at(row, x);
                self.bytes[at..at + RUN].fill(0);
            }
        }
    }

    /// Where row `row`'s bytes `x..x + RUN` (`x` a multiple of [`RUN`]) lie.
    #[inline(always)]
    fn at(&self, row: usize, x: usize) -> usize {
        ((row / GROUP * self.depth + x) * GROUP) + row % GROUP * RUN
    }

    /// Row `row` (as many bytes as the depth; two's complement).
    #[inline(always)]
    pub(crate) fn set_row(&mut self, row: usize, values: &[u8]) {
        assert!(row < self.rows && values.len() == self.depth);
        for (x, run) in values.chunks_exact(RUN).enumerate() {
            let at = self.at(row, x * RUN);
            for (byte, &value) in self.bytes[at..at + RUN].iter_mut().zip(run) {
                *byte = value as i8;
            }
        }
    }

    /// The operand as the transpose of `matrix`: rows of `rows` bytes (two's complement), as
    /// many as the depth. Four of them at a time, a run of four bytes for each row.
    pub(crate) fn set_transposed(&mut self, matrix: &[u8], rows: usize) {
        // Every byte is written below.
        self.reshape(rows, matrix.len() / rows.max(1));
        assert!(
            rows == self.rows && matrix.len() == rows * self.depth,
            "{rows} rows of {} bytes",
            self.depth
        );
        let mut out = self.bytes[..self.rows * self.depth].chunks_exact_mut(RUN);
        for group in 0..rows / GROUP {
            for run in matrix.chunks_exact(RUN * rows) {
                let [first, second, third, fourth] = [0, 1, 2, 3].map(|i| &run[i * rows..][..rows]);
                for row in group * GROUP..(group + 1) * GROUP {
                    let bytes = out.next().expect("a run for every row, run and group");
                    bytes.copy_from_slice(
                        &[first[row], second[row], third[row], fourth[row]].map(|b| b as i8),
                    );
                }
            }
        }
    }
}

/// The unsigned operand: `rows` rows of `depth` bytes, each starting `stride` bytes after the last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub values: &'a [u8],
    pub rows: usize,
    pub stride: usize,
}

/// `out[i · out_stride + o] = Σ_x a[i][x] · b_o[x]` for every row `i` of `a` and every row `o`
/// of the signed operand `b`, over its depth.
pub(crate) fn dot(a: Rows<'_>, b: &Packed, out: &mut [i32], out_stride: usize) {
    let Rows { values, rows, stride } = a;
    let (packed, groups, depth) = (b.used(), b.rows / GROUP, b.depth);
    if rows == 0 || groups == 0 {
        return;
    }
    assert!(depth.is_multiple_of(RUN) && depth <= stride, "rows of {depth} bytes, {stride} apart");
    assert!((rows - 1) * stride + depth <= values.len(), "unsigned operand out of bounds");
    assert!(groups * GROUP * depth <= packed.len(), "signed operand out of bounds");
    assert!(groups * GROUP <= out_stride && (rows - 1) * out_stride + groups * GROUP <= out.len());
    #[cfg(target_arch = "x86_64")]
    if vnni() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX-512 VNNI with VL, checked just above; every read and write
        // lies inside the slices, as asserted above.
        unsafe {
            vnni::dot(a, packed, groups, depth, out, out_stride)
        };
        return;
    }
    portable_dot(a, packed, groups, depth, out, out_stride);
}

/// Whether [`dot`] runs in VNNI instructions here (elsewhere it is a portable loop, many times
/// slower than the f32 products it would replace).
pub(crate) fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`dot`] in plain integer arithmetic, on the packed bytes of `groups` groups of `depth`.
fn portable_dot(a: Rows<'_>, packed: &[i8], groups: usize, depth: usize, out: &mut [i32], out_stride: usize) {
    for i in 0..a.rows {
        let row = &a.values[i * a.stride..][..depth];
        for g in 0..groups {
            let group = &packed[g * GROUP * depth..][..GROUP * depth];
            let mut sums = [0i32; GROUP];
            for (run, bytes) in row.chunks_exact(RUN).enumerate() {
                for (r, sum) in sums.iter_mut().enumerate() {
                    let signed = &group[(run * GROUP + r) * RUN..][..RUN];
                    *sum += bytes.iter().zip(signed).map(|(&u, &s)| i32::from(u) * i32::from(s)).sum::<i32>();
                }
            }
            out[i * out_stride + g * GROUP..][..GROUP].copy_from_slice(&sums);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni {
    use std::arch::x86_64::*;

    use super::{GROUP, RUN, Rows};

    /// Rows of the unsigned operand per tile, largest first: 6 rows × 4 groups of accumulators,
    /// the four groups' bytes and a broadcast fit the 32 vector registers; the rest (at most
    /// five rows) one at a time, each broadcast still serving four groups.
    const ROW_STEPS: [usize; 2] = [6, 1];

    /// See [`super::dot`]: tiles of up to six rows × four groups, group steps outermost so that
    /// the groups' bytes stay in the core's cache while the rows pass.
    ///
    /// # Safety
    /// The CPU must have AVX2 and AVX-512 VNNI with VL; the slices must hold what
    /// [`super::dot`] asserts.
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub(super) unsafe fn dot(
        a: Rows<'_>,
        packed: &[i8],
        groups: usize,
        depth: usize,
        out: &mut [i32],
        out_stride: usize,
    ) {
        let stride = a.stride;
        let mut g = 0;
        while g < groups {
            let step = if groups - g >= 4 { 4 } else { 1 };
            let mut i = 0;
            for rows in ROW_STEPS {
                while i + rows <= a.rows {
                    // SAFETY: rows i.. and groups g.. of this tile lie inside the operands and the
                    // output, as the caller guarantees for all of them.
                    unsafe {
                        let x = a.values.as_ptr().add(i * stride);
                        let b = packed.as_ptr().add(g * GROUP * depth);
                        let o = out.as_mut_ptr().add(i * out_stride + g * GROUP);
                        match (rows, step) {
                            (6, 4) => tile::<6, 4>(x, stride, b, depth, o, out_stride),
                            (1, 4) => tile::<1, 4>(x, stride, b, depth, o, out_stride),
                            (6, _) => tile::<6, 1>(x, stride, b, depth, o, out_stride),
                            _ => tile::<1, 1>(x, stride, b, depth, o, out_stride),
                        }
                    }
                    i += rows;
                }
            }
            g += step;
        }
    }

    /// `T` rows of the unsigned operand (from `a`, `stride` apart) against `G` groups (from `b`,
    /// [`GROUP`] × `depth` bytes each), into `T` rows of `G` × [`GROUP`] sums (from `out`,
    /// `out_stride` apart).
    ///
    /// # Safety
    /// As [`dot`], for this tile.
    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    unsafe fn tile<const T: usize, const G: usize>(
        a: *const u8,
        stride: usize,
        b: *const i8,
        depth: usize,
        out: *mut i32,
        out_stride: usize,
    ) {
        let mut acc = [[_mm256_setzero_si256(); G]; T];
        for run in 0..depth / RUN {
            let mut bytes = [_mm256_setzero_si256(); G];
            for (g, bytes) in bytes.iter_mut().enumerate() {
                // SAFETY: inside group g's bytes, as the caller guarantees.
                *bytes = unsafe { _mm256_loadu_si256(b.add((g * depth + run * RUN) * GROUP).cast()) };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: inside row i, as the caller guarantees.
                let x = unsafe { a.add(i * stride + run * RUN).cast::<i32>().read_unaligned() };
                let x = _mm256_set1_epi32(x);
                for (acc, bytes) in acc.iter_mut().zip(&bytes) {
                    *acc = _mm256_dpbusd_epi32(*acc, x, *bytes);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (g, acc) in acc.iter().enumerate() {
                // SAFETY: inside the output's row i, as the caller guarantees.
                unsafe { _mm256_storeu_si256(out.add(i * out_stride + g * GROUP).cast(), *acc) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes from a small generator, reproducible.
    fn bytes(count: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// `rows` rows of 36 bytes, 40 apart, against 6 groups (a step of four, two of one) packed
    /// row by row: every output against its definition, through [`dot`] and [`portable_dot`].
    fn tiles_match(rows: usize) {
        let (groups, depth, stride) = (6, 36, 40);
        let a = bytes(rows * stride, 7);
        let signed = bytes(groups * GROUP * depth, 11);
        let value = |row: usize, x: usize| i32::from(signed[row * depth + x] as i8);
        let mut packed = Packed::default();
        packed.reshape(groups * GROUP, depth);
        for (row, values) in signed.chunks_exact(depth).enumerate() {
            packed.set_row(row, values);
        }
        let out_stride = groups * GROUP + 3;
        let mut out = vec![i32::MIN; rows * out_stride];
        dot(Rows { values: &a, rows, stride }, &packed, &mut out, out_stride);
        let mut portable = vec![i32::MIN; rows * out_stride];
        let a = Rows { values: &a, rows, stride };
        portable_dot(a, packed.used(), groups, depth, &mut portable, out_stride);
        for i in 0..rows {
            for o in 0..groups * GROUP {
                let want: i32 = (0..depth).map(|x| i32::from(a.values[i * stride + x]) * value(o, x)).sum();
                assert_eq!(out[i * out_stride + o], want, "row {i}, output {o}");
                assert_eq!(portable[i * out_stride + o], want, "portable: row {i}, output {o}");
            }
            // Past the outputs, the row's padding is left alone.
            assert_eq!(out[i * out_stride + groups * GROUP..][..3], [i32::MIN; 3]);
        }
    }

    #[test]
    fn products_match_their_definition_on_every_tile_shape() {
        // 13 rows: two tiles of six, one of one; 17: two of six, five of one.
        tiles_match(13);
        tiles_match(17);
    }

    #[test]
    fn rows_and_transposes_pack_alike_and_pad_with_zeros() {
        // 11 rows of 6 (padded to 16 of 8), set by rows and from their transpose.
        let (rows, depth) = (11, 6);
        let signed = bytes(rows * depth, 5);
        let (mut by_rows, mut by_columns) = (Packed::default(), Packed::default());
        // Stale bytes from a larger operand: the padding rows are zeroed, the transpose writes
        // every byte.
        for packed in [&mut by_rows, &mut by_columns] {
            packed.reshape(40, 40);
            packed.bytes.fill(9);
        }
        by_rows.reshape(rows, depth);
        for (row, values) in signed.chunks_exact(depth).enumerate() {
            by_rows.set_row(row, &[values, &[0, 0]].concat());
        }
        by_rows.zero_rows_from(rows);
        // The transpose: a row per depth (8, two of them padding), a column per row (16).
        let mut transposed = vec![0u8; 8 * 16];
        for (row, values) in signed.chunks_exact(depth).enumerate() {
            for (x, &value) in values.iter().enumerate() {
                transposed[x * 16 + row] = value;
            }
        }
        by_columns.set_transposed(&transposed, 16);
        assert_eq!(by_rows.used(), by_columns.used());
        assert_eq!((by_rows.rows, by_rows.depth, by_rows.used().len()), (16, 8, 128));
        let a = [1u8; 8];
        let mut out = [0i32; 16];
        dot(Rows { values: &a, rows: 1, stride: 8 }, &by_rows, &mut out, 16);
        for (row, &sum) in out.iter().enumerate() {
            let want: i32 = if row < rows {
                signed[row * depth..][..depth].iter().map(|&b| i32::from(b as i8)).sum()
            } else {
                0
            };
            assert_eq!(sum, want, "row {row}");
        }
    }

    #[test]
    fn sums_at_the_extremes_do_not_overflow() {
        // The extremes of both operands, at the longest depth attention uses.
        let depth = 512;
        let a = vec![255u8; depth];
        let mut packed = Packed::default();
        packed.reshape(GROUP, depth);
        for row in 0..GROUP {
            packed.set_row(row, &vec![if row % 2 == 0 { 0x80 } else { 127 }; depth]);
        }
        let mut out = [0i32; GROUP];
        dot(Rows { values: &a, rows: 1, stride: depth }, &packed, &mut out, GROUP);
        assert_eq!(out[..2], [-128 * 255 * 512, 127 * 255 * 512]);
    }
}
