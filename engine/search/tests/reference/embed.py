"""Reference embeddings of all-MiniLM-L6-v2, independent of candle: the BERT forward pass
written out in numpy (float64) over the weights read with `safetensors`, tokens from Hugging
Face's `tokenizers`, truncated at 256 as sentence-transformers does, mean pooling, L2
normalization. One text at a time, so no padding is involved.

Usage: python3 embed.py MODEL_DIR < texts.json > embeddings.json

With `--batch N` it runs as a throughput baseline instead (the benchmark's): float32, N texts
per forward pass padded to the longest and masked, as a batched runtime does; it prints
`{"sentences_per_second": S}`, timed after the model is loaded.
"""
import json
import sys
import time

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

HEADS = 12


def erf(x):
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w + b


def forward(w, layers, ids, mask):
    """Token states of a batch: ids and mask are (batch, length)."""
    def linear(x, name):
        # As one 2-D product, so numpy hands it to BLAS whole.
        weight = w[f"{name}.weight"]
        return (x.reshape(-1, x.shape[-1]) @ weight.T + w[f"{name}.bias"]).reshape(*x.shape[:-1], weight.shape[0])

    b, n = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
    x = x + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    # Padding gets no attention.
    bias = ((1.0 - mask) * -1e9)[:, None, None, :].astype(x.dtype)
    for i in range(layers):
        p = f"encoder.layer.{i}"
        q, k, v = (linear(x, f"{p}.attention.self.{m}") for m in ("query", "key", "value"))
        d = q.shape[2] // HEADS
        q, k, v = (m.reshape(b, n, HEADS, d).transpose(0, 2, 1, 3) for m in (q, k, v))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, HEADS * d)
        a = linear(context, f"{p}.attention.output.dense") + x
        a = layer_norm(a, w[f"{p}.attention.output.LayerNorm.weight"], w[f"{p}.attention.output.LayerNorm.bias"])
        h = linear(a, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = layer_norm(linear(h, f"{p}.output.dense") + a, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"])
    return x


def pool(x, mask):
    summed = (x * mask[:, :, None]).sum(1)
    pooled = summed / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def main():
    model_dir = sys.argv[1]
    batch = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--batch" else None
    dtype = np.float32 if batch else np.float64
    w = {k: v.astype(dtype) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    layers = 1 + max(int(k.split(".")[2]) for k in w if k.startswith("encoder.layer."))
    texts = json.load(sys.stdin)

    if batch is None:
        out = []
        for text in texts:
            ids = np.array([tokenizer.encode(text).ids])
            mask = np.ones(ids.shape, dtype=dtype)
            out.append(pool(forward(w, layers, ids, mask), mask)[0].tolist())
        json.dump(out, sys.stdout)
        return

    tokenizer.enable_padding()
    started = time.perf_counter()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch):
        encodings = tokenizer.encode_batch([texts[i] for i in order[start:start + batch]])
        ids = np.array([e.ids for e in encodings])
        mask = np.array([e.attention_mask for e in encodings], dtype=dtype)
        pool(forward(w, layers, ids, mask), mask)
    json.dump({"sentences_per_second": len(texts) / (time.perf_counter() - started)}, sys.stdout)


if __name__ == "__main__":
    main()
