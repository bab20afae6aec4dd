"""Figures: chat through Atelier vs the plain library, on a random-weights Gemma 3 270M-size model.

1. Decode speed of a chat reply through Atelier's chat job vs plain `model.generate` on the same
   loaded model and prompt ids, greedy, the same number of tokens (prefix cache off on both sides).
2. Time to first token on the tenth turn of a conversation with ~2,000 tokens of history: the
   prefix cache holding turn nine vs recomputing the whole prompt.
3. A streamed reply over the API (SSE, timed by the client until `data: [DONE]`, a real server
   process) vs the same reply generated in-process: that job's own time inside the server.
4. 8 concurrent API chats: all complete, throughput reported.

--quick measures the same four things with fewer, shorter prompts and replies and half the history for
the time to first token (prefills of the long history are most of the time on a CPU).

The model has google/gemma-3-270m's sizes (bench/llm_load.py) and a byte-level BPE tokenizer
filling its whole 262,144-token vocabulary, so every generated id decodes and streams as text.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Figure

NAME = "bench-gemma3-270m-chat"
_VERSION = "1"
VOCAB = 262_144
WORDS = ("fox river stone lantern quiet market winter copper garden signal harbor paper orbit meadow "
         "engine violet ladder thunder pocket mirror").split()
ROWS = {
    "chat_decode": ("chat decode tokens/s: Atelier chat job vs plain generate (270M size)", ">= 0.95x"),
    "chat_ttft_turn10": ("time to first token, turn 10, ~2,000 tokens of history (--quick: turn 6, ~1,000): prefix "
                         "cache vs recompute", "<= 0.3x"),
    "chat_sse": ("streamed reply over the API (SSE, client-side) vs the same job in the server", "<= 1.05x"),
    "chat_concurrent": ("8 concurrent API chats: tokens/s, all complete", "8 of 8 complete"),
}


def _text(n_words: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _full_vocab_tokenizer():
    """Byte-level BPE with exactly VOCAB ids: Gemma's specials first, the 256 byte symbols, then merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from modules.models.demo_lm import GEMMA3_CHAT_TEMPLATE

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(specials + alphabet)}
    merges = []
    pairs = [(a, b) for a in alphabet for b in alphabet]
    for a, b in pairs:
        vocab[a + b] = len(vocab)
        merges.append((a, b))
    for a, b in pairs:  # then three-symbol tokens until the vocabulary is full
        for c in alphabet:
            if len(vocab) >= VOCAB:
                break
            vocab[a + b + c] = len(vocab)
            merges.append((a + b, c))
        if len(vocab) >= VOCAB:
            break
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=specials[4:],
                                   chat_template=GEMMA3_CHAT_TEMPLATE, add_bos_token=True, model_max_length=32_768)


def ensure_chat_folder(log=print) -> Path:
    """The 270M-size weights of bench/llm_load.py (hard links) with a tokenizer covering the vocabulary."""
    from bench.llm_load import ensure_gemma3_270m_folder
    from bench.sd15 import cache_root

    folder = cache_root() / f"{NAME}-v{_VERSION}"
    if (folder / "tokenizer.json").exists():
        return folder
    src = ensure_gemma3_270m_folder(log)
    log(f"  building the full-vocabulary tokenizer for {folder.name} (once) …")
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in src.iterdir():
        if path.name.startswith(("config", "generation_config", "model")) and path.is_file():
            try:
                (tmp / path.name).hardlink_to(path)  # the weights are shared with llm_load's folder
            except OSError:
                shutil.copy2(path, tmp / path.name)
    _full_vocab_tokenizer().save_pretrained(str(tmp))
    tmp.rename(folder)
    return folder


def _data_dir(model: Path, name: str) -> Path:
    from bench.sd15 import link_copy

    root = Path(tempfile.mkdtemp(prefix=f"atelier-bench-{name}-"))
    link_copy(model, root / "models" / "LLM" / model.name)
    return root


def run(device: str, quick: bool, log=print) -> list[Figure]:
    try:
        model = ensure_chat_folder(log)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"[:400]
        return [Figure.missing(k, t, why, target) for k, (t, target) in ROWS.items()]
    from bench.studio_setup import open_studio

    figures: list[Figure] = []
    root = _data_dir(model, "chat")
    studio = None
    try:
        studio = open_studio(root, device)
        for key, measure in (("chat_decode", _decode), ("chat_ttft_turn10", _ttft)):
            figures.append(_guarded(key, measure, studio, device, quick, log))
        figures += _over_api(studio, model, device, quick, log)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"[:400]
        done = {f.key for f in figures}
        figures += [Figure.missing(k, t, why, target) for k, (t, target) in ROWS.items() if k not in done]
    finally:
        if studio is not None:
            studio.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def _guarded(key: str, measure, *args) -> Figure:
    """One figure; a failure is reported as its reason, never as a made-up number."""
    log = args[-1]
    try:
        fig = measure(*args)
    except Exception as exc:
        fig = Figure.missing(key, ROWS[key][0], f"{type(exc).__name__}: {exc}"[:400], ROWS[key][1])
    log(f"    {key}: {fig.not_measured or f'{fig.median:.3f} {fig.unit} (target {fig.target})'}")
    return fig


def _submit(studio, timeout: float = 600, **fields):
    from modules.chat.params import ChatRequest, parse

    job = studio.submit("chat", parse(ChatRequest, {"model": _model_name(studio), **fields}))
    job.wait(timeout)
    job.raise_for_error()
    if job.result is None:
        raise RuntimeError(f"the chat job ended {job.state.value} without a result")
    return job.result


def _model_name(studio) -> str:
    """The one model in the bench data dir."""
    return studio.registry.list("llm")[0].name


def _decode(studio, device: str, quick: bool, log) -> Figure:
    import torch

    from bench.common import sync
    from modules.chat.params import ChatMessage
    from modules.chat.prompt import render_chat

    n, reps = (24, 3) if quick else (128, 7)  # many short pairs: a busy machine's drift cancels in the median
    warm = 4 if quick else n  # the warm-up only has to run every code path once
    messages = [{"role": "user", "content": "Write a long story: " + _text(10 if quick else 30, 1)}]
    lm = studio.models.load(_model_name(studio), kind="llm")
    ids = torch.tensor([render_chat(lm, [ChatMessage(**messages[0])]).input_ids], device=lm.model.device)
    log(f"  chat decode: {reps} x ({n} tokens through the chat job, {n} through plain generate) …")
    counts: dict = {}

    def atelier(tokens: int = n) -> float:
        t = time.perf_counter()
        r = _submit(studio, messages=messages, temperature=0, max_new_tokens=tokens, reuse_cache=False)
        counts["atelier"] = r.usage.completion_tokens
        counts.setdefault("atelier_decode", []).append(r.tokens_per_second)
        return time.perf_counter() - t

    def plain(tokens: int = n) -> float:
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                    do_sample=False)
        sync(device)
        counts["plain"] = out.shape[1] - ids.shape[1]
        return time.perf_counter() - t

    atelier(warm), plain(warm)  # warm-up
    counts.clear()
    ta, tb = [], []
    for i in range(reps):
        for fn, out in (((atelier, ta), (plain, tb)) if i % 2 == 0 else ((plain, tb), (atelier, ta))):
            out.append(fn())
    if counts["plain"] - counts["atelier"] not in (0, 1):  # the chat job does not count a final EOS
        raise RuntimeError(f"the two sides generated {counts['atelier']} and {counts['plain']} tokens")
    rate_a = [counts["plain"] / t for t in ta]
    rate_b = [counts["plain"] / t for t in tb]
    title, target = ROWS["chat_decode"]
    return Figure.from_samples("chat_decode", title, [a / b for a, b in zip(rate_a, rate_b)], target=target,
                               ok=lambda r: r >= 0.95, tokens=counts["plain"],
                               atelier_tokens_per_s=[round(x, 2) for x in rate_a],
                               plain_tokens_per_s=[round(x, 2) for x in rate_b],
                               atelier_decode_only_tokens_per_s=[round(x, 2) for x in counts["atelier_decode"] if x])


def _history(turns: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You are a storyteller."}]
    for t in range(turns):
        msgs += [{"role": "user", "content": f"Turn {t}: " + _text(40, 10 + t)},
                 {"role": "assistant", "content": _text(16, 100 + t)}]
    return msgs


def _ttft(studio, device: str, quick: bool, log) -> Figure:
    # The prefills of the long history are most of the group's time: --quick halves the history (the cached
    # side still computes only the last reply and the new question, asked shorter so that stays small).
    reps, turns, asked = (2, 4, 12) if quick else (4, 8, 40)
    key = "bench-ttft"
    history = _history(turns) + [{"role": "user", "content": f"Turn {turns}: " + _text(40, 10 + turns)}]
    log(f"  chat TTFT: turn {turns + 1} once to fill the prefix cache …")
    ninth = _submit(studio, messages=history, temperature=0, max_new_tokens=4 if quick else 32, cache_key=key)
    history += [{"role": "assistant", "content": ninth.text}]
    log(f"  chat TTFT: {reps} x (turn {turns + 2} with the cache, recomputed), {ninth.usage.prompt_tokens} "
        "tokens of history …")
    ta, tb, cached, prompt = [], [], [], []
    for i in range(reps):
        tenth = history + [{"role": "user", "content": f"Turn {turns + 1}, take {i}: " + _text(asked, 200 + i)}]
        for reuse in ((True, False) if i % 2 == 0 else (False, True)):
            r = _submit(studio, messages=tenth, temperature=0, max_new_tokens=2, cache_key=key, reuse_cache=reuse)
            (ta if reuse else tb).append(r.time_to_first_token)
            if reuse:
                cached.append(r.usage.cached_tokens)
                prompt.append(r.usage.prompt_tokens)
    # Each take asks a new tenth question, so the cache still shares the whole history up to turn nine's reply.
    title, target = ROWS["chat_ttft_turn10"]
    return Figure.from_samples("chat_ttft_turn10", title, [a / b for a, b in zip(ta, tb)], target=target,
                               ok=lambda r: r <= 0.3, prompt_tokens=prompt, cached_tokens=cached,
                               cached_ttft_s=[round(x, 3) for x in ta], recomputed_ttft_s=[round(x, 3) for x in tb])


def _over_api(studio, model: Path, device: str, quick: bool, log) -> list[Figure]:
    from bench.server import Server

    root = _data_dir(model, "chat-server")
    server = Server(root, device, None, "--no-demo")
    try:
        server.wait_ready()
        out = []
        for key, measure in (("chat_sse", _sse), ("chat_concurrent", _concurrent)):
            out.append(_guarded(key, measure, server, studio, quick, log))
        server.check_alive()
        return out
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _stream_over_api(url: str, body: dict) -> tuple[float, int, str, dict]:
    """(seconds until data: [DONE], content chunks, text, the server's own timings) for one streamed reply."""
    import json

    import httpx

    t = time.perf_counter()
    chunks, text, done, timings = 0, [], False, {}
    with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=600) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
                break
            if line.startswith("data: "):
                chunk = json.loads(line[6:])
                timings = chunk.get("timings") or timings
                delta = chunk["choices"]
                if delta and delta[0]["delta"].get("content"):
                    chunks += 1
                    text.append(delta[0]["delta"]["content"])
    if not done:
        raise RuntimeError("the stream ended without data: [DONE]")
    return time.perf_counter() - t, chunks, "".join(text), timings


def _sse(server, studio, quick: bool, log) -> Figure:
    """Client-side time of a streamed reply vs the same job's own time inside the server (submit → done):
    what HTTP + SSE add. Both clocks cover the same request, so the machine's load cancels out; a
    comparison with a second studio in the bench process would mostly measure how the OS shares the
    CPUs between two processes."""
    n, reps = (12, 2) if quick else (128, 5)
    messages = [{"role": "user", "content": "Tell me everything: " + _text(10 if quick else 30, 2)}]
    body = {"model": _model_name(studio), "messages": messages, "max_tokens": n, "temperature": 0}
    log(f"  chat SSE: {reps} x {n} tokens streamed over the API, timed by the client and by the server's job …")
    _stream_over_api(server.url, {**body, "max_tokens": 2})  # warm-up: the server loads the model
    client, job, chunks = [], [], 0
    for _ in range(reps):
        seconds, chunks, _text_out, timings = _stream_over_api(server.url, body)
        if not timings.get("job_s"):
            raise RuntimeError("the stream's last chunk carried no timings")
        client.append(seconds)
        job.append(timings["job_s"])
    title, target = ROWS["chat_sse"]
    return Figure.from_samples("chat_sse", title, [a / b for a, b in zip(client, job)], target=target,
                               ok=lambda r: r <= 1.05, tokens=n, chunks=chunks,
                               client_s=[round(x, 3) for x in client], server_job_s=[round(x, 3) for x in job])


def _concurrent(server, studio, quick: bool, log) -> Figure:
    import httpx

    n = 4 if quick else 48
    log(f"  chat concurrency: 8 API chats of {n} tokens at once …")
    results: list = [None] * 8

    def one(i: int) -> None:
        body = {"model": _model_name(studio), "max_tokens": n, "temperature": 0.8, "seed": i,
                "messages": [{"role": "user", "content": f"Chat {i}: " + _text(6 if quick else 20, 300 + i)}]}
        try:
            r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=600)
            results[i] = r.json() if r.status_code == 200 else {"error": r.status_code}
        except Exception as exc:
            results[i] = {"error": repr(exc)}

    t = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(900)
    wall = time.perf_counter() - t
    ok = [r for r in results if r and "choices" in r and r["choices"][0]["finish_reason"] in ("stop", "length")]
    tokens = sum(r["usage"]["completion_tokens"] for r in ok)
    title, target = ROWS["chat_concurrent"]
    return Figure("chat_concurrent", title, "tokens/s", tokens / wall, tokens / wall, tokens / wall, target,
                  len(ok) == 8, None, {"completed": len(ok), "sent": 8, "completion_tokens": tokens,
                                       "wall_s": round(wall, 2), "requests_per_s": round(len(ok) / wall, 3),
                                       "errors": [r for r in results if r not in ok][:3]})
