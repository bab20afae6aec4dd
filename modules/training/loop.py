"""The training loop's machinery, shared by every kind (runs in the training process, under accelerate):
the state a checkpoint keeps beyond accelerate's own, atomic checkpoints, Stop, reporting.

A checkpoint is accelerate's `save_state` (the LoRA weights through the save hook, optimizer, LR
scheduler, grad scaler, RNG of every process) plus the trainer's state (step, epoch, position in
the epoch: with the seed that is the data order) and each process's noise generator. Noise,
timesteps and latent samples come from that generator, never the global RNG, so what libraries
draw from the global RNG cannot shift a resumed run: 6 steps = 3 + resume 3, bit for bit on the CPU.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from modules import atomic
from modules.training.runfolder import RunFolder


class TrainerState:
    """Registered with `accelerator.register_for_checkpointing`, so save_state / load_state carry it."""

    def __init__(self, seed: int, process_index: int, data_digest: str):
        import torch

        self.step = 0
        self.global_rng: tuple | None = None  # the global RNG as a resumed checkpoint left it
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of this epoch already trained on (this process's share)
        self.data_digest = data_digest
        self.generator = torch.Generator().manual_seed(seed * 1009 + process_index)

    def state_dict(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "data_digest": self.data_digest}

    def load_state_dict(self, state: dict) -> None:
        if state.get("data_digest") != self.data_digest:
            from modules.errors import InvalidRequest

            raise InvalidRequest("the dataset changed since this run's checkpoint (images, captions or repeats); "
                                 "a resume needs the same dataset, or start a new run", "dataset")
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]


class Reporter:
    """progress / metric / log to the studio (rank 0 only) and logs/train.log."""

    def __init__(self, ctx, run: RunFolder, is_main: bool):
        self.ctx, self.is_main = ctx, is_main
        self._log_file = open(run.logs / "train.log", "a", encoding="utf-8") if is_main else None
        self.started = time.monotonic()

    def log(self, line: str) -> None:
        if not self.is_main:
            return
        self.ctx.log(line)
        self._log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        self._log_file.flush()

    def progress(self, step: int, total: int, text: str) -> None:
        if self.is_main:
            self.ctx.progress(step, total, text=text)

    def metric(self, name: str, value: float, step: int) -> None:
        if self.is_main:
            self.ctx.metric(name, value, step)

    def preview(self, path: Path) -> None:
        if self.is_main:
            self.ctx.preview_path(str(path))

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()


def begin(ctx, payload: dict, request_cls):
    """The start every training's child shares: the request, its run folder, the Accelerator, the reporter
    (rank 0 speaks), a first log line and the seed. Returns (request, run, accelerator, report, started_at)."""
    from accelerate.utils import set_seed

    started_at = time.time()
    req = request_cls.model_validate(payload["request"])
    run = RunFolder(Path(payload["run_dir"]))
    accelerator = make_accelerator(req, run)
    report = Reporter(ctx, run, accelerator.is_main_process)
    report.log(f"training process: {accelerator.num_processes} process(es) on {accelerator.device}, "
               f"mixed precision {accelerator.mixed_precision}")
    set_seed(req.seed)
    return req, run, accelerator, report, started_at


def make_accelerator(request, run: RunFolder):
    """The Accelerator: its device and process count come from `accelerate launch`'s environment."""
    import importlib.util

    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    # TensorBoard event files in logs/ when tensorboard is installed (optional, as the issue asks).
    tracker = "tensorboard" if importlib.util.find_spec("tensorboard") else None
    accelerator = Accelerator(
        gradient_accumulation_steps=request.gradient_accumulation, mixed_precision=request.mixed_precision,
        log_with=tracker, project_config=ProjectConfiguration(project_dir=str(run.root), logging_dir=str(run.logs)))
    if tracker:
        accelerator.init_trackers("atelier", config={k: v for k, v in request.model_dump().items()
                                                     if isinstance(v, (int, float, str, bool))})
    return accelerator


def weight_dtype(accelerator):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def register_lora_hooks(accelerator, named: dict[str, object]) -> None:
    """save_state / load_state keep only the LoRA weights of the models (peft format), as diffusers'
    training examples do: the frozen base is the checkpoint's, not a copy per checkpoint."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    def name_of(model) -> str:
        inner = accelerator.unwrap_model(model)
        return next(name for name, m in named.items() if m is inner)

    def save_hook(models, weights, output_dir):
        for model in models:
            if accelerator.is_main_process:
                state = {k: v.detach().cpu().contiguous()
                         for k, v in get_peft_model_state_dict(accelerator.unwrap_model(model)).items()}
                save_file(state, str(Path(output_dir) / f"{name_of(model)}.lora.safetensors"))
        weights.clear()  # the LoRA weights are saved: accelerate must not save the whole models as well

    def load_hook(models, input_dir):
        while models:
            model = models.pop()
            state = load_file(str(Path(input_dir) / f"{name_of(model)}.lora.safetensors"))
            result = set_peft_model_state_dict(accelerator.unwrap_model(model), state)
            if getattr(result, "unexpected_keys", None):
                raise RuntimeError(f"checkpoint keys that match no LoRA layer: {result.unexpected_keys[:5]}")

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator, run: RunFolder, state: TrainerState, keep: int) -> Path:
    """accelerate's full state + the noise generators, in a temporary folder renamed when complete."""
    import torch

    temp = run.temp_checkpoint_dir(state.step)
    if accelerator.is_main_process:
        shutil.rmtree(temp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp))
    torch.save(state.generator.get_state(), temp / f"noise_rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    final = run.checkpoint_dir(state.step)
    if accelerator.is_main_process:
        atomic.write_json(temp / "trainer_state.json", state.state_dict())  # readable; the .pkl is what loads
        final = run.publish_checkpoint(temp, state.step)
        run.prune(keep)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, checkpoint: Path, state: TrainerState) -> None:
    import torch

    accelerator.load_state(str(checkpoint))
    rng = checkpoint / f"noise_rng_{accelerator.process_index}.pt"
    if rng.exists():  # a run resumed on more processes than it was saved with: the new ones keep their seed
        state.generator.set_state(torch.load(rng, weights_only=True))
    state.global_rng = global_rng_state()  # put back just before the next batch (see Loop.run_steps)


def global_rng_state() -> tuple:
    import torch

    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def set_global_rng_state(saved: tuple) -> None:
    import torch

    torch.set_rng_state(saved[0])
    if saved[1] is not None:
        torch.cuda.set_rng_state_all(saved[1])


def stop_requested(accelerator, ctx) -> bool:
    """Stop reaches rank 0 only: every process follows its decision."""
    import torch

    flag = torch.tensor([1.0 if ctx.interrupted else 0.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, "max")
    return bool(flag.item())


class Loop:
    """Optimizer steps over epochs of a prepared dataloader, resumable mid-epoch.

    `loss_of(batch)` returns the loss of one batch; `after_step(step)` runs after each optimizer
    step (checkpoints, samples). Returns "done" or "stopped" (a checkpoint was saved)."""

    def __init__(self, accelerator, ctx, run: RunFolder, state: TrainerState, reporter: Reporter, *, models,
                 params, optimizer, lr_scheduler, loader, sampler, total_steps: int, request):
        self.accelerator, self.ctx, self.run, self.state, self.reporter = accelerator, ctx, run, state, reporter
        self.models, self.params = models, params
        self.optimizer, self.lr_scheduler, self.loader, self.sampler = optimizer, lr_scheduler, loader, sampler
        self.total_steps, self.request = total_steps, request
        self.first_step_s: float | None = None
        self.first_step_at, self.steps_at_first = 0.0, 0
        self.last_checkpoint: Path | None = None

    def checkpoint(self) -> Path:
        self.last_checkpoint = save_checkpoint(self.accelerator, self.run, self.state, self.request.keep_checkpoints)
        self.reporter.log(f"saved checkpoint {self.last_checkpoint.name}")
        return self.last_checkpoint

    def run_steps(self, loss_of: Callable, after_step: Callable[[int], None]) -> str:
        acc, state, req = self.accelerator, self.state, self.request
        epochs = max(1, -(-self.total_steps // max(1, self._steps_per_epoch())))
        while state.step < self.total_steps:
            mid_epoch = state.batch_in_epoch > 0
            if mid_epoch and state.batch_in_epoch >= len(self.loader):  # a checkpoint at an epoch's very end
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                continue
            self.sampler.set_epoch(state.epoch)
            if hasattr(self.loader, "set_epoch"):  # accelerate's loader re-sets the sampler's epoch from its own count
                self.loader.set_epoch(state.epoch)
            # The global RNG (LoRA dropout draws from it) must be where the checkpoint left it when the next
            # batch trains, whatever the dataloaders' making draws: before a new epoch's iterator, as in a run
            # that never stopped, or, mid-epoch, once the skipping iterator exists.
            if state.global_rng is not None and not mid_epoch:
                set_global_rng_state(state.global_rng)
                state.global_rng = None
            loader = acc.skip_first_batches(self.loader, state.batch_in_epoch) if mid_epoch else self.loader
            running = 0.0
            for batch in loader:
                if state.global_rng is not None:
                    set_global_rng_state(state.global_rng)
                    state.global_rng = None
                with acc.accumulate(*self.models):
                    loss = loss_of(batch)
                    acc.backward(loss)
                    if acc.sync_gradients and req.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.params, req.max_grad_norm)
                    self.optimizer.step()
                    self.lr_scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                running += acc.reduce(loss.detach(), "mean").item() / req.gradient_accumulation
                state.batch_in_epoch += 1
                if not acc.sync_gradients:
                    continue
                state.step += 1
                if self.first_step_s is None:
                    self.first_step_s = time.monotonic() - self.reporter.started
                    self.first_step_at, self.steps_at_first = time.monotonic(), state.step
                lr = self.lr_scheduler.get_last_lr()[0]
                self.reporter.metric("loss", running, state.step)
                self.reporter.metric("lr", lr, state.step)
                self.reporter.progress(state.step, self.total_steps,
                                       f"epoch {state.epoch + 1}/{epochs} · loss {running:.4f}")
                acc.log({"loss": running, "lr": lr}, step=state.step)
                running = 0.0
                after_step(state.step)
                stop = stop_requested(acc, self.ctx) or (req.stop_after_steps is not None
                                                         and state.step >= req.stop_after_steps)
                if stop and state.step < self.total_steps:
                    self.reporter.log(f"stopping at step {state.step}: saving a checkpoint first")
                    self.checkpoint()
                    return "stopped"
                if req.save_every and state.step % req.save_every == 0 and state.step < self.total_steps:
                    self.checkpoint()
                if state.step >= self.total_steps:
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
        return "done"

    def steady_steps_per_s(self) -> float | None:
        """Steps per second after the first step (its one-time costs left out), when there were two or more."""
        done = self.state.step - self.steps_at_first
        seconds = time.monotonic() - self.first_step_at
        return round(done / seconds, 5) if self.first_step_s is not None and done > 0 and seconds > 0 else None

    def _steps_per_epoch(self) -> int:
        return -(-len(self.loader) // self.request.gradient_accumulation)


def write_result_json(run: RunFolder, result: dict) -> None:
    atomic.write_text(run.root / "result.json", json.dumps(result, indent=2, default=str) + "\n")


def finish(accelerator, run: RunFolder, result: dict, report: Reporter) -> dict:
    """The end every training's child shares: the peak memory on a GPU, accelerate's end, result.json."""
    import torch

    if torch.cuda.is_available():
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    accelerator.end_training()
    if accelerator.is_main_process:
        write_result_json(run, result)
    report.close()
    return result
