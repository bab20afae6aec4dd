"""AUTOMATIC1111 prompt syntax → prompt embeddings for diffusers pipelines.

Why hand-written: no maintained library parses A1111's syntax (compel uses `word++` and
`(word)1.2`; its A1111 mode is not the same grammar nor the same 75-token chunking), and
prompts pasted from A1111 / civitai must mean what they meant there. Semantics follow
A1111's modules/prompt_parser.py and sd_hijack_clip.py:

- `(word)` x1.1, `[word]` x1/1.1, `(word:1.3)` x1.3, nested multiply, unbalanced brackets
  close at the end, `\\(` `\\)` `\\[` `\\]` `\\\\` are literal characters;
- `BREAK` closes the current 75-token chunk;
- a prompt of any length is cut in 75-token chunks (a chunk prefers to break after a comma
  within its last 20 tokens), each encoded as BOS + 75 + EOS on its own and concatenated;
- a weight multiplies that token's embedding, then the chunk is rescaled to its old mean;
- CLIP skip n uses the n-th hidden state from the end, through the final layer norm (SD1/2);
- `<lora:name:weight>` tags are taken out of the text and returned.

Token layout per chunk is diffusers' (BOS, tokens, EOS, then the tokenizer's pad token), so
a plain prompt that fits in 77 tokens encodes exactly as `pipe.encode_prompt` does.

Prompt editing and alternation (`[from:to:when]`, `[a|b]`) are resolved before this, into the
plain text of each step (prompt_schedule.py; conditioning.py encodes and swaps them).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from modules.errors import InvalidRequest

CHUNK = 75
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack default
ROUND, SQUARE = 1.1, 1 / 1.1

_TOKEN = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_NETWORK = re.compile(r"<(lora|lyco):([^:>]+)((?::[^:>]*)*)>", re.I)


# -- syntax ---------------------------------------------------------------
def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs; ("BREAK", -1) marks a chunk break."""
    runs: list[list] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    for m in _TOKEN.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\") and len(piece) == 2:
            runs.append([piece[1], 1.0])
        elif piece == "(":
            open_round.append(len(runs))
        elif piece == "[":
            open_square.append(len(runs))
        elif weight is not None and open_round:
            scale_from(open_round.pop(), float(weight))
        elif piece == ")" and open_round:
            scale_from(open_round.pop(), ROUND)
        elif piece == "]" and open_square:
            scale_from(open_square.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i:
                    runs.append(["BREAK", -1.0])
                runs.append([part, 1.0])
    for start in open_round:
        scale_from(start, ROUND)
    for start in open_square:
        scale_from(start, SQUARE)
    merged: list[list] = []
    for run in runs:  # neighbours of equal weight become one run (as A1111 prints them)
        if merged and merged[-1][1] == run[1] and run[1] != -1:
            merged[-1][0] += run[0]
        else:
            merged.append(run)
    merged = [r for r in merged if r[0] != "" or r[1] == -1]
    return [(t, w) for t, w in merged] or [("", 1.0)]


def extract_loras(text: str) -> tuple[str, list[tuple[str, float]]]:
    """Remove `<lora:name:weight>` tags; return the clean text and [(name, weight)]."""
    found: list[tuple[str, float]] = []

    def take(m: re.Match) -> str:
        args = [a for a in m.group(3).split(":")[1:]]
        try:
            weight = float(args[0]) if args and args[0].strip() else 1.0
        except ValueError:
            raise InvalidRequest(f"<{m.group(1)}:{m.group(2)}:…> has weight {args[0]!r}, which is not a number", "prompt") from None
        found.append((m.group(2).strip(), weight))
        return ""

    return _NETWORK.sub(take, text), found


# -- tokens -> chunks -----------------------------------------------------
@dataclass
class Chunk:
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def tokenize_chunks(tokenizer, text: str, convert=None) -> list[Chunk]:
    """The prompt's tokens (no BOS/EOS) cut into chunks of at most 75, with per-token weights.

    `convert` is diffusers' `maybe_convert_prompt`: it expands a multi-vector textual-inversion
    token ("style" -> "style style_1 style_2") once embeddings are loaded into the pipeline.
    """
    runs = [(t, w) for t, w in parse_attention(text)]
    texts = [convert(t, tokenizer) if convert else t for t, w in runs if w != -1]
    ids_per_run = iter(tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] if texts else [])
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    chunks: list[Chunk] = []
    current = Chunk()
    last_comma = -1

    def close() -> None:
        nonlocal current, last_comma
        chunks.append(current)
        current, last_comma = Chunk(), -1

    for run_text, weight in runs:
        if weight == -1:  # BREAK
            close()
            continue
        for tok in next(ids_per_run):
            if tok == comma:
                last_comma = len(current.tokens)
            elif len(current.tokens) == CHUNK:
                if last_comma != -1 and CHUNK - last_comma <= COMMA_BACKTRACK:
                    # move what follows the last comma to the next chunk, as A1111 does
                    cut = last_comma + 1
                    rest = Chunk(current.tokens[cut:], current.weights[cut:])
                    current = Chunk(current.tokens[:cut], current.weights[:cut])
                    close()
                    current = rest
            if len(current.tokens) == CHUNK:
                close()
            current.tokens.append(tok)
            current.weights.append(weight)
    if current.tokens or not chunks:
        close()
    return chunks


def chunk_ids(tokenizer, chunk: Chunk) -> tuple[list[int], list[float]]:
    """BOS + tokens + EOS, padded to 77 with the tokenizer's pad token (diffusers' layout)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [tokenizer.bos_token_id] + chunk.tokens + [tokenizer.eos_token_id]
    weights = [1.0] + chunk.weights + [1.0]
    ids += [pad] * (CHUNK + 2 - len(ids))
    weights += [1.0] * (CHUNK + 2 - len(weights))
    return ids, weights


# -- encoding -------------------------------------------------------------
def _hidden(encoder, ids, layer_from_end: int | None, final_norm: bool):
    """Encoder output: last_hidden_state, or hidden_states[-n] (+ final layer norm)."""
    import torch

    ids_t = torch.tensor([ids], device=encoder.device)
    out = encoder(ids_t, output_hidden_states=layer_from_end is not None)
    pooled = getattr(out, "text_embeds", None)  # CLIPTextModelWithProjection (SDXL's second encoder)
    if layer_from_end is None:
        return out.last_hidden_state, pooled
    if layer_from_end >= len(out.hidden_states):
        raise InvalidRequest(f"this text encoder has {len(out.hidden_states) - 1} layers; use a smaller clip_skip", "clip_skip")
    hidden = out.hidden_states[-layer_from_end]
    if final_norm:
        hidden = getattr(encoder, "text_model", encoder).final_layer_norm(hidden)  # transformers 5 has no .text_model
    return hidden, pooled


def _weighted(z, weights):
    """A1111's emphasis: multiply each token's vector, then restore the chunk's mean."""
    import torch

    if all(w == 1.0 for w in weights):
        return z
    original_mean = z.mean()
    z = z * torch.tensor(weights, dtype=z.dtype, device=z.device).reshape(1, -1, 1)
    ratio = original_mean / z.mean()
    # A1111 divides unguarded; when the mean sits near zero (layer-normed outputs of small or
    # random encoders) the ratio explodes or flips sign and the image comes out black (NaN).
    # Then the weights alone are kept.
    if not torch.isfinite(ratio) or not 0.1 < float(ratio) < 10.0:
        return z
    return z * ratio


def _encode_chunks(tokenizer, encoder, chunks: list[Chunk], layer: int | None, final_norm: bool):
    import torch

    parts, pooled = [], None
    for chunk in chunks:
        ids, weights = chunk_ids(tokenizer, chunk)
        z, p = _hidden(encoder, ids, layer, final_norm)
        parts.append(_weighted(z, weights))
        if pooled is None:
            pooled = p  # A1111 pools from the first chunk
    return torch.cat(parts, dim=1), pooled


def _pad_chunks(chunk_lists: list[list[Chunk]]) -> list[list[Chunk]]:
    """Positive and negative must have the same length: add empty chunks."""
    n = max(len(c) for c in chunk_lists)
    return [c + [Chunk() for _ in range(n - len(c))] for c in chunk_lists]


@dataclass
class Conditioning:
    """What the pipeline takes instead of text: pass as **kwargs."""

    kwargs: dict
    loras: list[tuple[str, float]]
    chunks: int


def encode(pipe, prompts: list[str], negatives: list[str], clip_skip: int = 1, arch: str = "sd1") -> Conditioning:
    """Encode a batch of prompts (one per image) for `pipe` (SD1/2 or SDXL)."""
    import torch

    clean, loras = [], []
    for text in prompts:
        t, found = extract_loras(text)
        clean.append(t)
        for item in found:
            if item not in loras:
                loras.append(item)
    negatives = [extract_loras(t)[0] for t in negatives]
    sdxl = arch == "sdxl" or getattr(pipe, "text_encoder_2", None) is not None
    with torch.no_grad():
        if sdxl:
            kwargs, n = _encode_sdxl(pipe, clean, negatives, clip_skip)
        else:
            kwargs, n = _encode_sd(pipe, clean, negatives, clip_skip)
    return Conditioning(kwargs=kwargs, loras=loras, chunks=n)


def _unique_encode(texts: list[str], chunk_lists: list[list[Chunk]], fn):
    """Encode each distinct text once (a batch usually repeats one prompt)."""
    cache: dict[str, tuple] = {}
    out = []
    for text, chunks in zip(texts, chunk_lists):
        if text not in cache:
            cache[text] = fn(chunks)
        out.append(cache[text])
    return out


def encode_texts(pipe, texts: list[str], clip_skip: int = 1, arch: str = "sd1") -> tuple[list, list]:
    """Each text (LoRA tags already taken out) → (embeds [1, L, D], pooled or None), all with the same
    number of chunks, each distinct text encoded once. For prompts that change during sampling."""
    import torch

    sdxl = arch == "sdxl" or getattr(pipe, "text_encoder_2", None) is not None
    with torch.no_grad():
        if sdxl:
            embeds, pooled, _ = _sdxl_texts(pipe, texts, clip_skip)
            return embeds, pooled
        embeds, _ = _sd_texts(pipe, texts, clip_skip)
        return embeds, [None] * len(texts)


def _sd_texts(pipe, texts, clip_skip):
    tok, enc = pipe.tokenizer, pipe.text_encoder
    layer = clip_skip if clip_skip and clip_skip > 1 else None
    convert = getattr(pipe, "maybe_convert_prompt", None)
    chunked = _pad_chunks([tokenize_chunks(tok, t, convert) for t in texts])
    encoded = _unique_encode(texts, chunked, lambda c: _encode_chunks(tok, enc, c, layer, True)[0])
    return encoded, len(chunked[0])


def _encode_sd(pipe, prompts, negatives, clip_skip):
    import torch

    encoded, chunks = _sd_texts(pipe, prompts + negatives, clip_skip)
    pos = torch.cat(encoded[: len(prompts)])
    neg = torch.cat(encoded[len(prompts):])
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg}, chunks


def _sdxl_texts(pipe, texts, clip_skip):
    """Two encoders: penultimate-layer states concatenated; pooled from encoder 2 (no final norm, as diffusers/A1111)."""
    import torch

    layer = max(clip_skip or 1, 1) + 1
    pairs = [(t, e) for t, e in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)) if e is not None]
    convert = getattr(pipe, "maybe_convert_prompt", None)
    chunk_count = max(len(tokenize_chunks(pairs[0][0], t, convert)) for t in texts)

    def encode_all(tok, enc):
        chunked = [c + [Chunk() for _ in range(chunk_count - len(c))]
                   for c in (tokenize_chunks(tok, t, convert) for t in texts)]
        return _unique_encode(texts, chunked, lambda c: _encode_chunks(tok, enc, c, layer, False))

    per_encoder = [encode_all(t, e) for t, e in pairs]
    embeds = [torch.cat([enc_out[i][0] for enc_out in per_encoder], dim=-1) for i in range(len(texts))]
    pooled = [per_encoder[-1][i][1] for i in range(len(texts))]
    return embeds, pooled, chunk_count


def _encode_sdxl(pipe, prompts, negatives, clip_skip):
    import torch

    embeds, pooled, chunk_count = _sdxl_texts(pipe, prompts + negatives, clip_skip)
    pos, neg = torch.cat(embeds[: len(prompts)]), torch.cat(embeds[len(prompts):])
    pos_pooled, neg_pooled = torch.cat(pooled[: len(prompts)]), torch.cat(pooled[len(prompts):])
    if getattr(pipe.config, "force_zeros_for_empty_prompt", False) and all(n == "" for n in negatives):
        neg, neg_pooled = torch.zeros_like(neg), torch.zeros_like(neg_pooled)
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg, "pooled_prompt_embeds": pos_pooled,
            "negative_pooled_prompt_embeds": neg_pooled}, chunk_count
