"""The YOLO training process: ultralytics' trainer (`model.train(...)`) in a child process of its own
(modules/jobs/child.py), with this extension's interpreter, so ultralytics and its torch never run in the
studio and a crash here fails the job, not the studio.

Loaded as a file by modules/jobs/child_main.py: `train(ctx, job)` reports progress per batch and the metrics
per epoch (box/cls/dfl loss, precision, recall, mAP50, mAP50-95) through ctx, stops between batches on
ctx.interrupted (ultralytics then validates, saves last.pt and best.pt and returns), and publishes best.pt
as models/yolo/<output_name>.pt in one rename. Nothing is downloaded: plots are off (no Arial.ttf), AMP is
off (its check would fetch a model), the base is a local file or an architecture .yaml.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# ultralytics' names of the metrics → the names the Train tab plots (train_kind.PLOTS).
LOSSES = {"train/box_loss": "box_loss", "train/cls_loss": "cls_loss", "train/dfl_loss": "dfl_loss"}
VALIDATION = {"metrics/precision(B)": "precision", "metrics/recall(B)": "recall", "metrics/mAP50(B)": "mAP50",
              "metrics/mAP50-95(B)": "mAP50-95"}


def epoch_metrics(trainer) -> dict[str, float]:
    """One epoch's row: the mean training losses and the validation metrics, by the Train tab's names."""
    losses = trainer.label_loss_items(trainer.tloss, prefix="train")
    row = {ours: float(losses[theirs]) for theirs, ours in LOSSES.items() if theirs in losses}
    row.update({ours: float(trainer.metrics[theirs]) for theirs, ours in VALIDATION.items()
                if theirs in (trainer.metrics or {})})
    return row


class Reporter:
    """The trainer's callbacks: progress per batch, a metrics row per finished epoch, Stop between batches."""

    def __init__(self, ctx, epochs: int):
        self.ctx, self.epochs = ctx, epochs
        self.step = 0
        self.rows: list[dict] = []
        self._epoch_done = False  # set by a training epoch's end: final_eval's own on_fit_epoch_end is no row

    def on_train_batch_end(self, trainer) -> None:
        self.step += 1
        total = self.epochs * len(trainer.train_loader)
        self.ctx.progress(self.step, total, text=f"epoch {trainer.epoch + 1}/{self.epochs}")
        if self.ctx.interrupted:
            trainer.stop = True  # ultralytics ends the epoch here, validates, saves last.pt / best.pt

    def on_train_epoch_end(self, trainer) -> None:
        self._epoch_done = True

    def on_fit_epoch_end(self, trainer) -> None:
        if not self._epoch_done:
            return
        self._epoch_done = False
        epoch = trainer.epoch + 1
        row = epoch_metrics(trainer)
        for name, value in row.items():
            self.ctx.metric(name, value, epoch)
        self.rows.append({"epoch": epoch, **row})
        self.ctx.log("epoch " + str(epoch) + ": " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))


def publish(source: Path, output: Path) -> None:
    """Copy then rename in the same folder: models/yolo never shows half a file (the registry skips dot-files)."""
    temp = output.with_name(f".{output.name}.tmp")
    shutil.copyfile(source, temp)
    os.replace(temp, output)


def train(ctx, job: dict) -> dict:
    req, extra = job["request"], job["extra"]
    run_dir, output = Path(job["run_dir"]), Path(job["output"])
    os.chdir(run_dir)  # anything ultralytics writes relative to the working folder stays in the run

    import ultralytics.data.utils as data_utils
    from ultralytics import YOLO

    # check_det_dataset fetches Arial.ttf for plot labels; plots are off, so no font is needed (no download).
    data_utils.check_font = lambda *args, **kwargs: None
    data = extra["data"]
    data_file = run_dir / "data.yaml"  # absolute paths (YAML reads JSON), so ultralytics' datasets_dir plays no part
    data_file.write_text(json.dumps({"path": job["dataset_dir"], "train": data["train"], "val": data["val"],
                                     "names": dict(enumerate(data["names"]))}), encoding="utf-8")
    base = job["base"]
    model = YOLO(base.get("path") or base["name"])
    reporter = Reporter(ctx, req["epochs"])
    for event in ("on_train_batch_end", "on_train_epoch_end", "on_fit_epoch_end"):
        model.add_callback(event, getattr(reporter, event))
    device = "0" if job["device"] == "cuda" else "cpu"
    ctx.log(f"training {base['name']} on {job['dataset_dir']} ({device})")
    chosen = {"lr0": req["lr0"]} if req["lr0"] is not None else {}  # None: ultralytics' default (auto: its own)
    model.train(data=str(data_file), epochs=req["epochs"], imgsz=req["imgsz"], batch=req["batch_size"],
                workers=req["workers"], optimizer=req["optimizer"], seed=req["seed"], device=device,
                project=str(run_dir), name="ultralytics", exist_ok=True, plots=False, amp=False, val=True,
                verbose=False, **chosen)
    trainer = model.trainer
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    if not best.is_file():
        raise RuntimeError(f"ultralytics saved no weights in {trainer.save_dir}")
    publish(best, output)
    stopped = ctx.interrupted
    return {"output": str(output), "checkpoint": str(trainer.last), "epochs": len(reporter.rows),
            "metrics": reporter.rows, "steps": reporter.step, "total_steps": req["epochs"] * len(trainer.train_loader),
            "outcome": "interrupted" if stopped else "done"}
