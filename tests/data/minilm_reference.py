#!/usr/bin/env python3
"""Reference embeddings for all-MiniLM-L6-v2, computed by an independent implementation: a
plain NumPy forward pass of BERT over the model's safetensors weights (parsed by hand), with
mean pooling and L2 normalisation as sentence-transformers does. The Rust test compares
candle's output with these vectors.

Run after `models/fetch`:  pip install numpy tokenizers && python3 tests/data/minilm_reference.py
Writes tests/data/minilm_reference.json.
"""
import json
import math
import pathlib
import struct

import numpy as np
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "all-minilm-l6-v2"
SENTENCES = [
    "How do I get a laptop?",
    "Equipment is issued by the IT department on your first day.",
    "Submit every expense in the Expensify app within 30 days of paying it.",
    "The VPN client is called Polaris Connect; pick the nearest gateway and sign in.",
    "Сколько дней отпуска положено в году?",
    "a",
]


def load_safetensors(path):
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue  # position_ids (I64) is a buffer, not a weight
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[base + start : base + end], dtype="<f4").reshape(info["shape"])
    return tensors


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    # The exact (erf) GELU BERT uses.
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def encode(weights, config, ids):
    w = lambda name: weights[name].astype(np.float64)
    prefix = "" if "embeddings.word_embeddings.weight" in weights else "bert."
    eps = config["layer_norm_eps"]
    n = len(ids)
    x = w(prefix + "embeddings.word_embeddings.weight")[ids]
    x = x + w(prefix + "embeddings.position_embeddings.weight")[:n]
    x = x + w(prefix + "embeddings.token_type_embeddings.weight")[np.zeros(n, dtype=int)]
    x = layer_norm(x, w(prefix + "embeddings.LayerNorm.weight"), w(prefix + "embeddings.LayerNorm.bias"), eps)
    heads = config["num_attention_heads"]
    head_dim = config["hidden_size"] // heads
    for layer in range(config["num_hidden_layers"]):
        p = f"{prefix}encoder.layer.{layer}."
        lin = lambda t, name: t @ w(p + name + ".weight").T + w(p + name + ".bias")
        q = lin(x, "attention.self.query").reshape(n, heads, head_dim).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, head_dim).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, head_dim).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(1, 0, 2).reshape(n, heads * head_dim)
        attention = lin(context, "attention.output.dense")
        x = layer_norm(attention + x, w(p + "attention.output.LayerNorm.weight"), w(p + "attention.output.LayerNorm.bias"), eps)
        hidden = gelu(lin(x, "intermediate.dense"))
        out = lin(hidden, "output.dense")
        x = layer_norm(out + x, w(p + "output.LayerNorm.weight"), w(p + "output.LayerNorm.bias"), eps)
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def main():
    config = json.loads((MODEL / "config.json").read_text())
    weights = load_safetensors(MODEL / "model.safetensors")
    tokenizer = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    cases = []
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence).ids
        vector = encode(weights, config, ids)
        cases.append({"text": sentence, "ids": ids, "embedding": [round(float(v), 7) for v in vector]})
    out = pathlib.Path(__file__).with_name("minilm_reference.json")
    out.write_text(json.dumps({"model": "all-minilm-l6-v2", "cases": cases}, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} reference embeddings to {out}")


if __name__ == "__main__":
    main()
