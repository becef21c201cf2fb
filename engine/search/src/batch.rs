//! A batch of texts through the model without padding, over the same weights as [`crate::short`].
//!
//! candle runs a batch as one tensor padded to its longest text: every text is computed at that
//! length, attention over all of it, and each step allocates and often copies (transposes in
//! attention, GELU with libm's `erf` one element at a time). Here the texts' real tokens are
//! stacked, unpadded, for the dense layers (candle's matrix products over its own weight
//! tensors), and attention runs per text and head over that text's tokens only, so no padded
//! position is computed and none can change a result. Each dense layer's bias is added as its
//! product is read out, the GELU (Eigen's `erf`, as the short path) in the same pass. The
//! element-wise loops run compiled for AVX2 and FMA (run-time dispatch, as the short path);
//! on an x86 CPU without them candle runs the batch. Tests hold this path to candle's.

use std::ops::Range;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use gemm_common::simd::NullaryFnOnce;

use crate::short::{Dense, Floats, Layer, Norm, ShortModel, add_and_norm, gelu, layer_norm, pool};

/// Rows of a dense layer's output per task when its bias (and GELU) are applied.
const ROWS_PER_TASK: usize = 16;

/// The embeddings of the texts tokenized as `texts` (each at most the model's positions long),
/// in their order. `None` on an x86 CPU without AVX2 and FMA, where candle's kernels are faster.
pub(crate) fn embed(model: &ShortModel, texts: &[&[u32]]) -> Option<Result<Vec<Vec<f32>>, String>> {
    if !vector_unit() {
        return None;
    }
    Some(forward(model, texts))
}

fn forward(model: &ShortModel, texts: &[&[u32]]) -> Result<Vec<Vec<f32>>, String> {
    let hidden = model.hidden;
    let mut spans = Vec::with_capacity(texts.len());
    let mut x = Vec::with_capacity(texts.iter().map(|ids| ids.len()).sum::<usize>() * hidden);
    for ids in texts {
        if ids.is_empty() {
            return Err("a text of no tokens".into());
        }
        let start = x.len() / hidden;
        model.embed_tokens(ids, &mut x)?;
        spans.push(start..start + ids.len());
    }
    vectorized(Normalize { x: &mut x, add: None, norm: &model.embedding_norm, model });
    for layer in &model.layers {
        encoder_layer(&mut x, layer, model, &spans)?;
    }
    Ok(spans.iter().map(|span| vectorized(Pool { x: &x[span.start * hidden..span.end * hidden], hidden })).collect())
}

fn encoder_layer(x: &mut [f32], layer: &Layer, model: &ShortModel, spans: &[Range<usize>]) -> Result<(), String> {
    let hidden = model.hidden;
    let query = dense(x, &layer.query, false)?;
    let key = dense(x, &layer.key, false)?;
    let value = dense(x, &layer.value, false)?;
    // Each text's rows of the context, to attend on their own.
    let mut context = vec![0f32; x.len()];
    let mut parts = Vec::with_capacity(spans.len());
    let mut rest = context.as_mut_slice();
    for span in spans {
        let (part, after) = rest.split_at_mut(span.len() * hidden);
        parts.push((part, span.clone()));
        rest = after;
    }
    parts.into_par_iter().for_each(|(context, span)| {
        let rows = span.start * hidden..span.end * hidden;
        vectorized(Attend {
            query: &query[rows.clone()],
            key: &key[rows.clone()],
            value: &value[rows],
            context,
            model,
        });
    });
    let projected = dense(&context, &layer.attention_out, false)?;
    vectorized(Normalize { x, add: Some(&projected), norm: &layer.attention_norm, model });
    let inner = dense(x, &layer.intermediate, true)?;
    let projected = dense(&inner, &layer.output, false)?;
    vectorized(Normalize { x, add: Some(&projected), norm: &layer.output_norm, model });
    Ok(())
}

/// Self-attention of one text (its rows of queries, keys and values; no position masked), each
/// head over its own columns, read in place: no transposed copies of the whole batch.
#[inline(always)]
fn attend(query: &[f32], key: &[f32], value: &[f32], context: &mut [f32], model: &ShortModel) {
    let hidden = model.hidden;
    let tokens = query.len() / hidden;
    let size = hidden / model.heads;
    let scale = 1.0 / (size as f32).sqrt();
    // One head's keys transposed (a row per dimension), so each score row is a run of
    // multiply-adds over contiguous floats.
    let mut keys = vec![0f32; size * tokens];
    let mut scores = vec![0f32; tokens];
    for head in 0..model.heads {
        let part = head * size..(head + 1) * size;
        for (j, key) in key.chunks_exact(hidden).enumerate() {
            for (d, &k) in key[part.clone()].iter().enumerate() {
                keys[d * tokens + j] = k;
            }
        }
        for (query, context) in query.chunks_exact(hidden).zip(context.chunks_exact_mut(hidden)) {
            scores.fill(0.0);
            for (&q, keys) in query[part.clone()].iter().zip(keys.chunks_exact(tokens)) {
                let q = q * scale;
                for (score, &k) in scores.iter_mut().zip(keys) {
                    *score = q.mul_add(k, *score);
                }
            }
            let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for score in &mut scores {
                *score = (*score - top).exp();
                total += *score;
            }
            let context = &mut context[part.clone()];
            for (score, value) in scores.iter().zip(value.chunks_exact(hidden)) {
                let weight = score / total;
                for (c, &v) in context.iter_mut().zip(&value[part.clone()]) {
                    *c = weight.mul_add(v, *c);
                }
            }
        }
    }
}

/// `x · weight + bias` for every row of `x` (then GELU if `gelu`): the product by candle's
/// matrix kernel over the weight in place, the bias added as it is read out.
fn dense(x: &[f32], layer: &Dense, then_gelu: bool) -> Result<Vec<f32>, String> {
    let failed = |e: candle_core::Error| e.to_string();
    let (inputs, outputs) = (layer.inputs, layer.outputs);
    let input = Tensor::from_slice(x, (x.len() / inputs, inputs), &Device::Cpu).map_err(failed)?;
    let product = input.matmul(&layer.weight.t().map_err(failed)?).map_err(failed)?;
    let (product, bias) = (Floats::of(&product), Floats::of(&layer.bias));
    let (product, bias) = (product.get(), bias.get());
    if product.len() != x.len() / inputs * outputs {
        return Err(format!("a product of {} floats for {} rows", product.len(), x.len() / inputs));
    }
    let mut out = vec![0f32; product.len()];
    out.par_chunks_mut(ROWS_PER_TASK * outputs)
        .zip(product.par_chunks(ROWS_PER_TASK * outputs))
        .for_each(|(out, product)| vectorized(Bias { out, product, bias, gelu: then_gelu }));
    Ok(out)
}

/// Whether the element-wise loops have a vector unit to run on: on x86, AVX2 and FMA.
fn vector_unit() -> bool {
    #[cfg(target_arch = "x86_64")]
    return gemm_common::simd::V3::try_new().is_some();
    #[cfg(not(target_arch = "x86_64"))]
    true
}

/// Runs `f` inlined into a function compiled for AVX2 and FMA where the CPU has them. Each step
/// is a struct whose `call` is always inlined: a closure's body may stay a function of its own,
/// compiled without those features (its `mul_add`s then calls).
#[inline(always)]
fn vectorized<F: NullaryFnOnce>(f: F) -> F::Output {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = gemm_common::simd::V3::try_new() {
        return simd.vectorize(f);
    }
    f.call()
}

/// `x = LayerNorm(x + add)` (`add` if any), row by row.
struct Normalize<'a> {
    x: &'a mut [f32],
    add: Option<&'a [f32]>,
    norm: &'a Norm,
    model: &'a ShortModel,
}

impl NullaryFnOnce for Normalize<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Normalize { x, add, norm, model } = self;
        match add {
            Some(add) => add_and_norm(x, add, norm, model.hidden, model.eps),
            None => layer_norm(x, norm, model.hidden, model.eps),
        }
    }
}

/// One text's embedding from its rows.
struct Pool<'a> {
    x: &'a [f32],
    hidden: usize,
}

impl NullaryFnOnce for Pool<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn call(self) -> Vec<f32> {
        pool(self.x, self.hidden)
    }
}

/// One text's self-attention.
struct Attend<'a> {
    query: &'a [f32],
    key: &'a [f32],
    value: &'a [f32],
    context: &'a mut [f32],
    model: &'a ShortModel,
}

impl NullaryFnOnce for Attend<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        attend(self.query, self.key, self.value, self.context, self.model);
    }
}

/// `out = product + bias` row by row (then GELU if `gelu`).
struct Bias<'a> {
    out: &'a mut [f32],
    product: &'a [f32],
    bias: &'a [f32],
    gelu: bool,
}

impl NullaryFnOnce for Bias<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Bias { out, product, bias, gelu: then_gelu } = self;
        let outputs = bias.len();
        for (out, product) in out.chunks_exact_mut(outputs).zip(product.chunks_exact(outputs)) {
            if then_gelu {
                out.iter_mut().zip(product).zip(bias).for_each(|((o, p), b)| *o = gelu(p + b));
            } else {
                out.iter_mut().zip(product).zip(bias).for_each(|((o, p), b)| *o = p + b);
            }
        }
    }
}
