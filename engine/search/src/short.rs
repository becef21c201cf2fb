//! One short text (a search query) through the model, straight over its weights.
//!
//! candle runs the model as matrix products: each one packs its operands and every step
//! allocates a tensor, which is right for a batch of long texts. A query is a few tokens: its
//! forward pass is bound by reading each weight once, and candle's per-step costs were most of
//! its time. Here each dense layer reads its weight once, four rows at a time, for every token
//! at once, in loops compiled for AVX2 and FMA where the CPU has them (found out at run time;
//! elsewhere candle runs the query too). The
//! weights are candle's own tensors, shared, not copied. Same model and arithmetic up to float
//! rounding; the GELU's `erf` is Eigen's rational approximation (within 1e-6 of libm's, for
//! float inputs). Tests hold this path to the batched one and to the reference.

use std::collections::HashMap;

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};
use candle_transformers::models::bert::Config;

/// Texts of up to this many tokens (the two markers included) take this path.
pub const SHORT_TOKENS: usize = 32;

/// The model's weights, as this path reads them.
pub(crate) struct ShortModel {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    pub(crate) embedding_norm: Norm,
    pub(crate) layers: Vec<Layer>,
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) eps: f32,
}

pub(crate) struct Layer {
    pub(crate) query: Dense,
    pub(crate) key: Dense,
    pub(crate) value: Dense,
    pub(crate) attention_out: Dense,
    pub(crate) attention_norm: Norm,
    pub(crate) intermediate: Dense,
    pub(crate) output: Dense,
    pub(crate) output_norm: Norm,
}

/// A dense layer whose weight (`[outputs, inputs]`) sits transposed in memory: row `k` of the
/// storage holds what input `k` adds to every output.
pub(crate) struct Dense {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
}

pub(crate) struct Norm {
    weight: Tensor,
    bias: Tensor,
}

/// A tensor's floats, read under its storage's lock.
pub(crate) struct Floats<'a> {
    storage: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl Floats<'_> {
    pub(crate) fn of(tensor: &Tensor) -> Floats<'_> {
        let (storage, layout) = tensor.storage_and_layout();
        Floats { storage, start: layout.start_offset(), len: tensor.elem_count() }
    }

    /// Checked when the model is loaded ([`ShortModel::new`]): never empty for a loaded model.
    pub(crate) fn get(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(floats)) => floats.get(self.start..self.start + self.len).unwrap_or(&[]),
            _ => &[],
        }
    }
}

impl ShortModel {
    /// The weights in `tensors` (as [`crate::embed`] loads them: dense weights transposed in
    /// memory), checked to be what this path reads.
    pub(crate) fn new(tensors: &HashMap<String, Tensor>, config: &Config) -> Result<Self, String> {
        let hidden = config.hidden_size;
        let take = |name: &str, shape: &[usize]| -> Result<Tensor, String> {
            let tensor = tensors.get(name).ok_or_else(|| format!("no tensor {name}"))?;
            if tensor.dims() != shape {
                return Err(format!("{name}: shape {:?}, expected {shape:?}", tensor.dims()));
            }
            let floats = Floats::of(tensor);
            if floats.get().len() != tensor.elem_count() {
                return Err(format!("{name}: not float32 on the CPU"));
            }
            Ok(tensor.clone())
        };
        let vector = |name: &str, len: usize| -> Result<Tensor, String> {
            let tensor = take(name, &[len])?;
            if !tensor.is_contiguous() {
                return Err(format!("{name}: not contiguous"));
            }
            Ok(tensor)
        };
        let table = |name: &str, rows: usize| -> Result<Tensor, String> {
            let tensor = take(name, &[rows, hidden])?;
            if !tensor.is_contiguous() {
                return Err(format!("{name}: not contiguous"));
            }
            Ok(tensor)
        };
        let dense = |name: &str, inputs: usize, outputs: usize| -> Result<Dense, String> {
            let weight = take(&format!("{name}.weight"), &[outputs, inputs])?;
            if weight.stride() != [1, outputs] || !inputs.is_multiple_of(4) {
                return Err(format!("{name}.weight: not stored transposed"));
            }
            Ok(Dense { weight, bias: vector(&format!("{name}.bias"), outputs)?, inputs, outputs })
        };
        let norm = |name: &str| -> Result<Norm, String> {
            Ok(Norm {
                weight: vector(&format!("{name}.weight"), hidden)?,
                bias: vector(&format!("{name}.bias"), hidden)?,
            })
        };
        let heads = config.num_attention_heads;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(format!("{heads} attention heads for {hidden} dimensions"));
        }
        let inner = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|n| {
                let at = |part: &str| format!("encoder.layer.{n}.{part}");
                Ok(Layer {
                    query: dense(&at("attention.self.query"), hidden, hidden)?,
                    key: dense(&at("attention.self.key"), hidden, hidden)?,
                    value: dense(&at("attention.self.value"), hidden, hidden)?,
                    attention_out: dense(&at("attention.output.dense"), hidden, hidden)?,
                    attention_norm: norm(&at("attention.output.LayerNorm"))?,
                    intermediate: dense(&at("intermediate.dense"), hidden, inner)?,
                    output: dense(&at("output.dense"), inner, hidden)?,
                    output_norm: norm(&at("output.LayerNorm"))?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            word: table("embeddings.word_embeddings.weight", config.vocab_size)?,
            position: table("embeddings.position_embeddings.weight", config.max_position_embeddings)?,
            token_type: table("embeddings.token_type_embeddings.weight", config.type_vocab_size)?,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            hidden,
            heads,
            eps: config.layer_norm_eps as f32,
        })
    }

    /// The embedding of the text tokenized as `ids` (at most [`SHORT_TOKENS`]): mean over its
    /// tokens, normalized. `None` on a CPU without AVX2 and FMA: there the multiply-adds would
    /// be calls, and candle's kernels are the faster path.
    pub(crate) fn embed(&self, ids: &[u32]) -> Option<Result<Vec<f32>, String>> {
        let pass = Pass { model: self, ids };
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = gemm_common::simd::V3::try_new() {
            return Some(simd.vectorize(pass));
        }
        let _ = pass;
        None
    }
}

/// One forward pass, run by the CPU-feature dispatcher.
struct Pass<'a> {
    model: &'a ShortModel,
    ids: &'a [u32],
}

impl gemm_common::simd::NullaryFnOnce for Pass<'_> {
    type Output = Result<Vec<f32>, String>;

    // Inlined into the dispatcher, with every loop below, so they compile with its CPU features.
    #[inline(always)]
    fn call(self) -> Self::Output {
        let Pass { model, ids } = self;
        let (hidden, tokens) = (model.hidden, ids.len());
        if tokens == 0 || tokens > SHORT_TOKENS {
            return Err(format!("{tokens} tokens for the short path"));
        }
        let mut x = Vec::with_capacity(tokens * hidden);
        model.embed_tokens(ids, &mut x)?;
        layer_norm(&mut x, &model.embedding_norm, hidden, model.eps);
        let mut buffers = Buffers::default();
        for layer in &model.layers {
            encoder_layer(&mut x, layer, model, &mut buffers);
        }
        Ok(pool(&x, hidden))
    }
}

impl ShortModel {
    /// Appends the input embeddings of the text tokenized as `ids` (word + position + token
    /// type, before the layer norm) to `x`.
    #[inline(always)]
    pub(crate) fn embed_tokens(&self, ids: &[u32], x: &mut Vec<f32>) -> Result<(), String> {
        let hidden = self.hidden;
        let (word, position, token_type) =
            (Floats::of(&self.word), Floats::of(&self.position), Floats::of(&self.token_type));
        let (word, position) = (word.get(), position.get());
        let kind = token_type.get().get(..hidden).ok_or("no token type")?;
        for (at, &id) in ids.iter().enumerate() {
            let (id, row) = (id as usize, |n: usize| n * hidden..(n + 1) * hidden);
            let word = word.get(row(id)).ok_or_else(|| format!("token {id} is not in the vocabulary"))?;
            let position = position.get(row(at)).ok_or("more tokens than positions")?;
            x.extend(word.iter().zip(position).zip(kind).map(|((w, p), k)| w + p + k));
        }
        Ok(())
    }
}

/// One text's embedding from its token states (`x`, rows of `hidden`): mean over the tokens,
/// then x / max(‖x‖, 1e-12), as sentence-transformers.
#[inline(always)]
pub(crate) fn pool(x: &[f32], hidden: usize) -> Vec<f32> {
    let tokens = x.len() / hidden;
    let mut mean = vec![0f32; hidden];
    for row in x.chunks_exact(hidden) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let norm = mean.iter().map(|m| m * m).sum::<f32>().sqrt() / tokens as f32;
    let scale = 1.0 / (tokens as f32 * norm.max(1e-12));
    mean.iter_mut().for_each(|m| *m *= scale);
    mean
}

/// Scratch space reused across the layers of one pass.
#[derive(Default)]
struct Buffers {
    query: Vec<f32>,
    key: Vec<f32>,
    value: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    inner: Vec<f32>,
    scores: Vec<f32>,
}

#[inline(always)]
fn encoder_layer(x: &mut [f32], layer: &Layer, model: &ShortModel, b: &mut Buffers) {
    let hidden = model.hidden;
    let tokens = x.len() / hidden;
    dense(x, &layer.query, &mut b.query);
    dense(x, &layer.key, &mut b.key);
    dense(x, &layer.value, &mut b.value);
    // Self-attention per head; one text, so no position is masked.
    let size = hidden / model.heads;
    let scale = 1.0 / (size as f32).sqrt();
    b.context.clear();
    b.context.resize(x.len(), 0.0);
    b.scores.resize(tokens, 0.0);
    for head in 0..model.heads {
        let part = head * size..(head + 1) * size;
        for (i, context) in b.context.chunks_exact_mut(hidden).enumerate() {
            let query = &b.query[i * hidden..][part.clone()];
            for (score, key) in b.scores.iter_mut().zip(b.key.chunks_exact(hidden)) {
                *score = query.iter().zip(&key[part.clone()]).map(|(q, k)| q * k).sum::<f32>() * scale;
            }
            let top = b.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for score in &mut b.scores {
                *score = (*score - top).exp();
                total += *score;
            }
            let context = &mut context[part.clone()];
            for (score, value) in b.scores.iter().zip(b.value.chunks_exact(hidden)) {
                let weight = score / total;
                for (c, v) in context.iter_mut().zip(&value[part.clone()]) {
                    *c += weight * v;
                }
            }
        }
    }
    dense(&b.context, &layer.attention_out, &mut b.projected);
    add_and_norm(x, &b.projected, &layer.attention_norm, hidden, model.eps);
    dense(x, &layer.intermediate, &mut b.inner);
    b.inner.iter_mut().for_each(|v| *v = gelu(*v));
    dense(&b.inner, &layer.output, &mut b.projected);
    add_and_norm(x, &b.projected, &layer.output_norm, hidden, model.eps);
}

/// `out[t] = bias + x[t] · weight` for every token `t`. The weight is read once, four input rows
/// at a time; while they are in cache every token's outputs take them in, two tokens per pass
/// so each row read serves two.
#[inline(always)]
fn dense(x: &[f32], layer: &Dense, out: &mut Vec<f32>) {
    let (weight, bias) = (Floats::of(&layer.weight), Floats::of(&layer.bias));
    let (weight, bias) = (weight.get(), bias.get());
    let (inputs, outputs) = (layer.inputs, layer.outputs);
    out.clear();
    for _ in 0..x.len() / inputs {
        out.extend_from_slice(bias);
    }
    let step = |y: f32, a: [f32; 4], w: [f32; 4]| {
        a[3].mul_add(w[3], a[2].mul_add(w[2], a[1].mul_add(w[1], a[0].mul_add(w[0], y))))
    };
    for (group, rows) in weight.chunks_exact(4 * outputs).enumerate() {
        let (w0, rest) = rows.split_at(outputs);
        let (w1, rest) = rest.split_at(outputs);
        let (w2, w3) = rest.split_at(outputs);
        let at = group * 4..group * 4 + 4;
        let mut pairs = out.chunks_exact_mut(2 * outputs);
        let mut tokens = x.chunks_exact(2 * inputs);
        for (y, token) in pairs.by_ref().zip(tokens.by_ref()) {
            let (y, z) = y.split_at_mut(outputs);
            let (first, second) = token.split_at(inputs);
            let (Some(&[a0, a1, a2, a3]), Some(&[b0, b1, b2, b3])) = (first.get(at.clone()), second.get(at.clone()))
            else {
                continue;
            };
            for (((((y, z), w0), w1), w2), w3) in y.iter_mut().zip(z).zip(w0).zip(w1).zip(w2).zip(w3) {
                let w = [*w0, *w1, *w2, *w3];
                *y = step(*y, [a0, a1, a2, a3], w);
                *z = step(*z, [b0, b1, b2, b3], w);
            }
        }
        // An odd token count leaves one.
        if let Some(&[a0, a1, a2, a3]) = tokens.remainder().get(at) {
            for ((((y, w0), w1), w2), w3) in pairs.into_remainder().iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                *y = step(*y, [a0, a1, a2, a3], [*w0, *w1, *w2, *w3]);
            }
        }
    }
}

/// `x = LayerNorm(x + add)`, row by row.
#[inline(always)]
pub(crate) fn add_and_norm(x: &mut [f32], add: &[f32], norm: &Norm, hidden: usize, eps: f32) {
    x.iter_mut().zip(add).for_each(|(x, a)| *x += a);
    layer_norm(x, norm, hidden, eps);
}

#[inline(always)]
pub(crate) fn layer_norm(x: &mut [f32], norm: &Norm, hidden: usize, eps: f32) {
    let (weight, bias) = (Floats::of(&norm.weight), Floats::of(&norm.bias));
    let (weight, bias) = (weight.get(), bias.get());
    for row in x.chunks_exact_mut(hidden) {
        let mean = row.iter().sum::<f32>() / hidden as f32;
        let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / hidden as f32;
        let inverse = 1.0 / (variance + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inverse * w + b;
        }
    }
}

/// GELU as BERT defines it: `x · Φ(x)`, with the exact `erf`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Eigen's rational approximation of `erf` for float32 (also XLA's): odd polynomial over even
/// polynomial on `[-4, 4]`, where float32's `erf` is not yet ±1. No branches, so it vectorizes.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub(crate) fn erf(x: f32) -> f32 {
    const ODD: [f32; 7] = [
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    ];
    const EVEN: [f32; 5] = [
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ODD.iter().fold(0.0, |p, c| p * x2 + c);
    let q = EVEN.iter().fold(0.0, |q, c| q * x2 + c);
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_a_millionth_of_libm() {
        let mut worst = 0f32;
        for n in -60_000..=60_000 {
            let x = n as f32 / 10_000.0;
            worst = worst.max((erf(x) - candle_core::cpu::erf::erf_f32(x)).abs());
        }
        assert!(worst < 1e-6, "{worst}");
        assert_eq!(erf(f32::INFINITY), erf(4.0));
    }
}
