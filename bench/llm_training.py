"""Figures: LLM LoRA training steps/s through Atelier vs a plain peft + transformers loop, and QLoRA's
peak memory vs LoRA in fp32, on a random-weights Gemma 3 270M-size model (bench/llm_load.py's sizes,
bench/chat.py's full-vocabulary tokenizer).

"Ours" is the studio's lm_lora job (a child process under `accelerate launch`); its steps/s is the
training loop's after the first step, as the process reports it. The plain loop is written the way
peft's examples/causal_language_modeling/peft_lora_clm_accelerate_*.py are: an Accelerator,
`get_peft_model` with a LoraConfig, AdamW, a schedule, and per step forward → `accelerator.backward`
→ step → zero_grad, timed after its first step too. Same rows (the text file cut into cutoff-length
chunks, every token a label), batch, rank 8 / alpha 16 / dropout 0.05 on all linear layers, lr,
precision (fp32 on the CPU, bf16 on CUDA), no gradient clipping on either side (the example has none).
The memory pair is LoRA with an fp32 base (on the CPU the speed figure's own run) and QLoRA (nf4,
double quant) on the same rows: the training processes' peak (CUDA: max_memory_allocated; CPU: peak
RSS, imports and the mapped checkpoint included on both sides). The model is mostly embeddings,
which bitsandbytes leaves unquantized, so the saving is far below a 7B model's.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.common import Figure

RANK, ALPHA, DROPOUT, LR = 8, 16.0, 0.05, 2e-4
DATASET = "datasets/bench-text"
ROWS = {
    "llm_lora_sps": ("LLM LoRA train steps/s (Gemma 3 270M size) vs plain peft+transformers loop", ">= 0.95x"),
    "llm_qlora_memory": ("QLoRA (nf4) peak memory vs LoRA with an fp32 base (Gemma 3 270M size)",
                         "reported (no target)"),
}


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from bench.chat import ensure_chat_folder
    from bench.sd15 import link_copy
    from bench.studio_setup import open_studio

    root = studio = None
    try:
        model = ensure_chat_folder(log)
        root = Path(tempfile.mkdtemp(prefix="atelier-bench-llm-training-"))
        link_copy(model, root / "models" / "LLM" / model.name)
        _text(root / DATASET / "story.txt")
        studio = open_studio(root, device)
        speed = _guarded("llm_lora_sps", log, lambda: _speed(studio, model, device, quick, log))
        reuse = None if speed.not_measured else speed
        memory = _guarded("llm_qlora_memory", log, lambda: _memory(studio, model, device, quick, log, reuse))
        return [speed, memory]
    except Exception as exc:  # report why, never a made-up number
        why = f"{type(exc).__name__}: {exc}"[:400]
        return [Figure.missing(k, t, why, target) for k, (t, target) in ROWS.items()]
    finally:
        if studio is not None:
            studio.shutdown()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _guarded(key: str, log, measure) -> Figure:
    """One figure; a failure is reported as its reason, never as a made-up number."""
    try:
        fig = measure()
    except Exception as exc:
        fig = Figure.missing(key, ROWS[key][0], f"{type(exc).__name__}: {exc}"[:400], ROWS[key][1])
    log(f"    {key}: {fig.not_measured or f'{fig.median:.3f} {fig.unit} (target {fig.target})'}")
    return fig


def _text(path: Path) -> None:
    from bench.chat import _text as words

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(words(6000, seed=1), encoding="utf-8")


def _sizes(device: str, quick: bool) -> tuple[int, int, int, int]:
    """(steps, repetitions, batch, cutoff). On the CPU a step of this model takes seconds (its 262,144-token
    vocabulary makes the logits the big part): --quick is 3 steps of one 32-token row."""
    if device == "cuda":
        return (5, 1, 2, 128) if quick else (10, 3, 4, 512)
    return (3, 1, 1, 32) if quick else (4, 2, 2, 64)


def _request(name: str, model: Path, steps: int, batch: int, cutoff: int, precision: str, **extra) -> dict:
    return {"kind": "lm_lora", "output_name": name, "overwrite": True, "base_model": model.name, "dataset": DATASET,
            "format": "text", "cutoff_len": cutoff, "rank": RANK, "alpha": ALPHA, "dropout": DROPOUT,
            "learning_rate": LR, "max_steps": steps, "batch_size": batch, "mixed_precision": precision,
            "max_grad_norm": 0, "seed": 0, **extra}


def _train(studio, request: dict) -> dict:
    from modules.training.params import parse

    job = studio.jobs.run("train_lm_lora", parse(request), timeout=3600)
    job.raise_for_error()
    return job.result


def _speed(studio, model: Path, device: str, quick: bool, log) -> Figure:
    steps, reps, batch, cutoff = _sizes(device, quick)
    precision = "bf16" if device == "cuda" else "no"
    ours, plain, peaks = [], [], []
    for rep in range(reps):
        log(f"  rep {rep + 1}/{reps}: ours (lm_lora job) …")
        result = _train(studio, _request("bench-lora", model, steps, batch, cutoff, precision))
        ours.append(result["steady_steps_per_s"])
        peaks.append(_peak(result))
        log(f"  rep {rep + 1}/{reps}: plain peft + transformers loop …")
        plain.append(plain_loop(studio, model, steps, batch, cutoff, precision))
        log(f"    steps/s: ours {ours[-1]:.4f}, plain {plain[-1]:.4f}")
    return Figure.from_samples("llm_lora_sps", ROWS["llm_lora_sps"][0], [a / b for a, b in zip(ours, plain)],
                               target=ROWS["llm_lora_sps"][1], ok=lambda r: r >= 0.95, steps=steps, batch=batch,
                               cutoff_len=cutoff, rank=RANK, precision=precision, ours_sps=ours, plain_sps=plain,
                               peak_bytes=peaks)


def _peak(result: dict) -> int:
    return int(result.get("peak_memory_bytes") or result["peak_rss_bytes"])


def _memory(studio, model: Path, device: str, quick: bool, log, speed: Figure | None = None) -> Figure:
    _steps, _reps, batch, cutoff = _sizes(device, quick)
    if speed is not None and speed.detail.get("precision") == "no" and speed.detail.get("peak_bytes"):
        lora = speed.detail["peak_bytes"][0]  # the speed figure's own fp32 run (the CPU): same rows, batch, rank
    else:
        log("  memory: LoRA, fp32 base …")
        lora = _peak(_train(studio, _request("bench-mem-lora", model, 1, batch, cutoff, "no")))
    log("  memory: QLoRA, nf4 base …")
    qlora = _peak(_train(studio, _request("bench-mem-qlora", model, 1, batch, cutoff, "no", quantization="nf4")))
    what = "max_memory_allocated" if device == "cuda" else "peak RSS of the training process"
    log(f"    peak ({what}): LoRA fp32 {lora / 2**30:.2f} GiB, QLoRA {qlora / 2**30:.2f} GiB")
    # Gemma 3 270M is mostly embeddings (168M of 268M parameters), which bitsandbytes does not quantize.
    return Figure.from_samples("llm_qlora_memory", ROWS["llm_qlora_memory"][0], [qlora / lora],
                               target=ROWS["llm_qlora_memory"][1], measured=what, lora_fp32_peak_bytes=lora,
                               qlora_peak_bytes=qlora, batch=batch, cutoff_len=cutoff,
                               note="the embeddings (168M of the 268M parameters) stay unquantized")


def plain_loop(studio, model: Path, steps: int, batch: int, cutoff: int, precision: str) -> float:
    """Steps/s of peft's example loop on the same rows (Atelier's text chunks, read before timing)."""
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_constant_schedule

    from modules.training.lm_dataset import read_examples

    tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    rows = read_examples(studio.paths.root / DATASET, tokenizer, "text", cutoff, False).rows
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype, local_files_only=True)
    base.config.use_cache = False
    peft_model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=RANK, lora_alpha=ALPHA,
                                                 lora_dropout=DROPOUT, target_modules="all-linear"))

    def collate(examples):
        width = max(len(ids) for ids, _ in examples)
        ids = torch.full((len(examples), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for n, (row_ids, row_labels) in enumerate(examples):
            ids[n, :len(row_ids)], labels[n, :len(row_labels)], mask[n, :len(row_ids)] = (
                torch.tensor(row_ids), torch.tensor(row_labels), 1)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    loader = torch.utils.data.DataLoader(rows, shuffle=True, batch_size=batch, collate_fn=collate)
    optimizer = torch.optim.AdamW(peft_model.parameters(), lr=LR)
    lr_scheduler = get_constant_schedule(optimizer)
    peft_model, optimizer, loader, lr_scheduler = accelerator.prepare(peft_model, optimizer, loader, lr_scheduler)
    peft_model.train()
    done, start = 0, None
    while done < steps:
        for batch_ in loader:
            outputs = peft_model(**batch_)
            accelerator.backward(outputs.loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            outputs.loss.item()  # as the example logs the loss each step (and ours reports it): the step is done
            done += 1
            if start is None:  # after the first step, as the studio's figure (its one-time costs left out)
                start = time.perf_counter()
            if done >= steps:
                break
    seconds = time.perf_counter() - start
    accelerator.free_memory()
    del peft_model, base, optimizer
    return (steps - 1) / seconds
