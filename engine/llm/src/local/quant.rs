//! The quantized matrices the local model runs itself and their products with activations,
//! computed as llama.cpp computes them: each 32-value block of the activations is quantized to
//! 8 bits (`Act`), and a row of weights meets it as integer dot products, one scale per block.
//!
//! Weights come from GGUF's `Q4_0`, `Q4_1` and `Q8_0` (candle 0.11 computes `Q4_1` with a
//! scalar loop, which is why this module exists). `Q4_0` is stored as `Q4_1` (its offset is
//! `-8·d`), and the block scales are widened from f16 to f32 once, at load. The products use
//! AVX2 and FMA where the CPU has them (checked once, at run time), else plain loops that give
//! the same sums.
//!
//! The AVX2 products are pulp's safe wrappers of the intrinsics (this workspace forbids
//! `unsafe`): `V3::try_new` proves the CPU has the features, and `vectorize` compiles the loop
//! for them.

use pulp::NullaryFnOnce;
#[cfg(target_arch = "x86_64")]
use pulp::x86::V3;
use rayon::prelude::*;

/// Values per block, in every format here.
pub const BLOCK: usize = 32;

/// 32 weights `d·q + m`, `q` in 0..16: the low nibbles of `qs` are values 0..16, the high
/// nibbles values 16..32 (GGUF's layout).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q4 {
    pub d: f32,
    pub m: f32,
    pub qs: [u8; 16],
}

/// 32 weights `d·q`, `q` in -128..128.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8 {
    pub d: f32,
    pub qs: [i8; 32],
}

/// 32 activations `d·q`, with `s = d·Σq` (what a `Q4` block's offset meets).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Act {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

/// A matrix of `rows × cols` weights, row after row, `cols` a multiple of [`BLOCK`].
#[derive(Debug)]
pub enum Matrix {
    Q4 { rows: usize, cols: usize, blocks: Vec<Q4> },
    Q8 { rows: usize, cols: usize, blocks: Vec<Q8> },
}

impl Matrix {
    pub fn rows(&self) -> usize {
        match self {
            Matrix::Q4 { rows, .. } | Matrix::Q8 { rows, .. } => *rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Matrix::Q4 { cols, .. } | Matrix::Q8 { cols, .. } => *cols,
        }
    }

    /// The matrices' rows one after the other, as one matrix (q, k and v, or gate and up, are
    /// one product then). `None` when their formats or widths differ.
    pub fn stacked(parts: Vec<Matrix>) -> Option<Matrix> {
        let mut parts = parts.into_iter();
        let mut stacked = parts.next()?;
        for part in parts {
            match (&mut stacked, part) {
                (Matrix::Q4 { rows, cols, blocks }, Matrix::Q4 { rows: r, cols: c, blocks: b }) if *cols == c => {
                    *rows += r;
                    blocks.extend(b);
                }
                (Matrix::Q8 { rows, cols, blocks }, Matrix::Q8 { rows: r, cols: c, blocks: b }) if *cols == c => {
                    *rows += r;
                    blocks.extend(b);
                }
                _ => return None,
            }
        }
        Some(stacked)
    }

    /// Row `row` as f32 values (an embedding lookup).
    pub fn row(&self, row: usize, out: &mut [f32]) {
        let per_row = self.cols() / BLOCK;
        let range = row * per_row..(row + 1) * per_row;
        match self {
            Matrix::Q4 { blocks, .. } => {
                for (block, out) in blocks[range].iter().zip(out.chunks_exact_mut(BLOCK)) {
                    for (j, pair) in block.qs.iter().enumerate() {
                        out[j] = block.d * f32::from(pair & 0x0F) + block.m;
                        out[j + 16] = block.d * f32::from(pair >> 4) + block.m;
                    }
                }
            }
            Matrix::Q8 { blocks, .. } => {
                for (block, out) in blocks[range].iter().zip(out.chunks_exact_mut(BLOCK)) {
                    for (q, out) in block.qs.iter().zip(out) {
                        *out = block.d * f32::from(*q);
                    }
                }
            }
        }
    }

    /// `out[t·rows + r] = row r · input t` for each of the `input.len() / (cols / 32)` inputs,
    /// the rows shared out among the threads of the current rayon pool. `scratch` keeps the
    /// products row-major between calls.
    pub fn product(&self, kernels: Kernels, input: &[Act], out: &mut [f32], scratch: &mut Vec<f32>) {
        let (rows, per_row) = (self.rows(), self.cols() / BLOCK);
        let tokens = input.len() / per_row;
        let by_row = if tokens == 1 {
            &mut out[..rows]
        } else {
            scratch.resize(rows * tokens, 0.0);
            &mut scratch[..]
        };
        // Each task takes whole rows against every input: a row is read from memory once.
        by_row.par_chunks_mut(ROWS_PER_TASK * tokens).enumerate().for_each(|(task, out)| {
            let rows = task * ROWS_PER_TASK * per_row..;
            let weights = match self {
                Matrix::Q4 { blocks, .. } => Rows::Q4(&blocks[rows]),
                Matrix::Q8 { blocks, .. } => Rows::Q8(&blocks[rows]),
            };
            let task = Products { weights, per_row, input, out, kernels };
            match kernels {
                Kernels::Portable => task.call(),
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx2(simd) => simd.vectorize(task),
            }
        });
        if tokens > 1 {
            for (r, row_out) in scratch.chunks_exact(tokens).enumerate() {
                for (t, value) in row_out.iter().enumerate() {
                    out[t * rows + r] = *value;
                }
            }
        }
    }
}

/// The rows of one task, from its first on.
#[derive(Clone, Copy)]
enum Rows<'a> {
    Q4(&'a [Q4]),
    Q8(&'a [Q8]),
}

/// One task's products: `out[i·tokens + t] = row i · input t`. A struct whose `call` is always
/// inlined, so that it compiles inside the function `vectorize` builds for AVX2 and FMA.
struct Products<'a> {
    weights: Rows<'a>,
    per_row: usize,
    input: &'a [Act],
    out: &'a mut [f32],
    kernels: Kernels,
}

impl NullaryFnOnce for Products<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Products { weights, per_row, input, out, kernels } = self;
        let tokens = input.len() / per_row;
        for (i, row_out) in out.chunks_exact_mut(tokens).enumerate() {
            let row = i * per_row..(i + 1) * per_row;
            for (out, act) in row_out.iter_mut().zip(input.chunks_exact(per_row)) {
                *out = match (kernels, weights) {
                    (Kernels::Portable, Rows::Q4(w)) => portable::dot_q4(&w[row.clone()], act),
                    (Kernels::Portable, Rows::Q8(w)) => portable::dot_q8(&w[row.clone()], act),
                    #[cfg(target_arch = "x86_64")]
                    (Kernels::Avx2(simd), Rows::Q4(w)) => avx2::dot_q4(simd, &w[row.clone()], act),
                    #[cfg(target_arch = "x86_64")]
                    (Kernels::Avx2(simd), Rows::Q8(w)) => avx2::dot_q8(simd, &w[row.clone()], act),
                };
            }
        }
    }
}

/// Rows per parallel task: enough to make a task's own cost small beside its work, few enough
/// that two threads share a 192-row matrix evenly.
const ROWS_PER_TASK: usize = 32;

/// Quantizes `values` (a multiple of 32 long) block by block into `out`.
pub fn quantize(values: &[f32], out: &mut Vec<Act>) {
    out.clear();
    out.extend(values.chunks_exact(BLOCK).map(|block| {
        let amax = block.iter().fold(0f32, |max, v| max.max(v.abs()));
        let d = amax / 127.0;
        let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut act = Act { d, s: 0.0, qs: [0; 32] };
        let mut sum = 0i32;
        for (q, v) in act.qs.iter_mut().zip(block) {
            *q = (v * inverse).round() as i8;
            sum += i32::from(*q);
        }
        act.s = d * sum as f32;
        act
    }));
}

/// The dot product kernels this CPU runs.
#[derive(Clone, Copy, Debug)]
pub enum Kernels {
    Portable,
    /// AVX2 and FMA, checked present.
    #[cfg(target_arch = "x86_64")]
    Avx2(V3),
}

impl Kernels {
    pub fn detect() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = V3::try_new() {
            return Kernels::Avx2(simd);
        }
        Kernels::Portable
    }
}

mod portable {
    use super::{Act, Q4, Q8};

    pub fn dot_q4(row: &[Q4], act: &[Act]) -> f32 {
        row.iter()
            .zip(act)
            .map(|(w, a)| {
                let sum: i32 =
                    w.qs.iter()
                        .enumerate()
                        .map(|(j, pair)| {
                            i32::from(pair & 0x0F) * i32::from(a.qs[j]) + i32::from(pair >> 4) * i32::from(a.qs[j + 16])
                        })
                        .sum();
                w.d * a.d * sum as f32 + w.m * a.s
            })
            .sum()
    }

    pub fn dot_q8(row: &[Q8], act: &[Act]) -> f32 {
        row.iter()
            .zip(act)
            .map(|(w, a)| {
                let sum: i32 = w.qs.iter().zip(&a.qs).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
                w.d * a.d * sum as f32
            })
            .sum()
    }
}

/// llama.cpp's AVX2 products: per block, the integer dot product of 32 byte pairs in two
/// instructions (`maddubs` multiplies unsigned by signed bytes and adds pairs, `madd` adds
/// those pairs again), then one FMA with the product of the two scales. Two accumulators, so
/// that consecutive blocks do not wait for each other's FMA.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use pulp::cast;
    use pulp::x86::V3;
    use std::arch::x86_64::{__m256, __m256i};

    use super::{Act, Q4, Q8};

    #[inline(always)]
    fn products(simd: V3, x: __m256i, y: __m256i) -> __m256 {
        let pairs = simd.avx2._mm256_maddubs_epi16(x, y);
        simd.avx._mm256_cvtepi32_ps(simd.avx2._mm256_madd_epi16(pairs, simd.avx._mm256_set1_epi16(1)))
    }

    #[inline(always)]
    fn sum(simd: V3, even: __m256, odd: __m256) -> f32 {
        let lanes: [f32; 8] = cast(simd.avx._mm256_add_ps(even, odd));
        lanes.iter().sum()
    }

    #[inline(always)]
    pub fn dot_q4(simd: V3, row: &[Q4], act: &[Act]) -> f32 {
        let low = simd.sse2._mm_set1_epi8(0x0F);
        let (mut even, mut odd) = (simd.avx._mm256_setzero_ps(), simd.avx._mm256_setzero_ps());
        let mut offsets = 0f32;
        let mut step = |acc: &mut __m256, w: &Q4, a: &Act| {
            let packed = cast(w.qs);
            let high = simd.sse2._mm_and_si128(simd.sse2._mm_srli_epi16::<4>(packed), low);
            let x = simd.avx._mm256_set_m128i(high, simd.sse2._mm_and_si128(packed, low));
            *acc = simd.fma._mm256_fmadd_ps(simd.avx._mm256_set1_ps(w.d * a.d), products(simd, x, cast(a.qs)), *acc);
            offsets += w.m * a.s;
        };
        in_pairs(row, act, &mut even, &mut odd, &mut step);
        sum(simd, even, odd) + offsets
    }

    #[inline(always)]
    pub fn dot_q8(simd: V3, row: &[Q8], act: &[Act]) -> f32 {
        let (mut even, mut odd) = (simd.avx._mm256_setzero_ps(), simd.avx._mm256_setzero_ps());
        let step = |acc: &mut __m256, w: &Q8, a: &Act| {
            let (x, y): (__m256i, __m256i) = (cast(w.qs), cast(a.qs));
            // maddubs takes one unsigned side: |x|, and y carrying x's sign.
            let product = products(simd, simd.avx2._mm256_sign_epi8(x, x), simd.avx2._mm256_sign_epi8(y, x));
            *acc = simd.fma._mm256_fmadd_ps(simd.avx._mm256_set1_ps(w.d * a.d), product, *acc);
        };
        in_pairs(row, act, &mut even, &mut odd, step);
        sum(simd, even, odd)
    }

    /// Runs `step` over the blocks, even ones into `even` and odd ones into `odd`: two
    /// accumulators, so each fused multiply-add does not wait for the one before.
    #[inline(always)]
    fn in_pairs<W>(
        row: &[W],
        act: &[Act],
        even: &mut __m256,
        odd: &mut __m256,
        mut step: impl FnMut(&mut __m256, &W, &Act),
    ) {
        for (w, a) in row.chunks_exact(2).zip(act.chunks_exact(2)) {
            step(even, &w[0], &a[0]);
            step(odd, &w[1], &a[1]);
        }
        if let (Some(w), true) = (row.last(), row.len() % 2 == 1) {
            step(even, w, &act[row.len() - 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights and activations with every nibble, sign and scale: the CPU's kernels and the
    /// portable loops give the same sums.
    #[test]
    fn the_kernels_agree_with_the_portable_loops() {
        let values: Vec<f32> = (0..7 * BLOCK).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0).collect();
        let mut act = Vec::new();
        quantize(&values, &mut act);
        let q4: Vec<Q4> = (0..7)
            .map(|b| Q4 {
                d: 0.01 * (b + 1) as f32,
                m: -0.05 * b as f32,
                qs: std::array::from_fn(|j| ((j * 7 + b * 3) % 256) as u8),
            })
            .collect();
        let q8: Vec<Q8> = (0..7)
            .map(|b| Q8 { d: 0.02 * (b + 1) as f32, qs: std::array::from_fn(|j| ((j * 29 + b * 11) % 255) as i8) })
            .collect();
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * a.abs().max(1.0);
        let product = |matrix: Matrix| {
            let mut out = [0f32];
            matrix.product(Kernels::detect(), &act, &mut out, &mut Vec::new());
            out[0]
        };
        let q4_matrix = Matrix::Q4 { rows: 1, cols: 7 * BLOCK, blocks: q4.clone() };
        assert!(close(product(q4_matrix), portable::dot_q4(&q4, &act)));
        let q8_matrix = Matrix::Q8 { rows: 1, cols: 7 * BLOCK, blocks: q8.clone() };
        assert!(close(product(q8_matrix), portable::dot_q8(&q8, &act)));
        // And the portable sum is the plain product of what the blocks stand for.
        let mut weights = vec![0f32; 7 * BLOCK];
        Matrix::Q4 { rows: 1, cols: 7 * BLOCK, blocks: q4.clone() }.row(0, &mut weights);
        let dequantized: Vec<f32> = act.iter().flat_map(|a| a.qs.iter().map(move |q| a.d * f32::from(*q))).collect();
        let plain: f32 = weights.iter().zip(&dequantized).map(|(w, x)| w * x).sum();
        assert!(close(portable::dot_q4(&q4, &act), plain), "{} {plain}", portable::dot_q4(&q4, &act));
    }
}
