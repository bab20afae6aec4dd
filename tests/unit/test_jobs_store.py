"""The job store: long jobs listed again after a restart; corrupt or half-written files never break it."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modules.errors import PathRefused
from modules.jobs.store import DIED_WITH_SERVER, JobStore

REPO = Path(__file__).resolve().parents[2]


def record(job_id: str, state: str = "done", created: float = 100.0, finished: float | None = 200.0, **extra) -> dict:
    return {
        "id": job_id, "kind": "train_sd_lora", "state": state, "step": 3, "total": 10, "text": "epoch 1",
        "metrics": {"loss": [[1, 0.5], [2, 0.25]], "lr": [[1, 1e-4], [2, 9e-5]]},
        "results": [f"models/Lora/{job_id}.safetensors"], "error": None,
        "created_at": created, "started_at": created + 1, "finished_at": finished,
        "request": {"rank": 8, "dataset": "train/dogs", "prompts": ["a photo of sks dog"]},
        **extra,
    }


def test_records_round_trip_through_a_restart(tmp_path):
    first = record("a1", created=1.0)
    second = record("b2", state="interrupted", created=2.0, error=None)
    store = JobStore(tmp_path)
    store.save(second)
    store.save(first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a1.json", "b2.json"]
    assert JobStore(tmp_path).load_all() == [first, second]  # oldest first


def test_a_corrupt_file_is_skipped_and_logged(tmp_path, caplog):
    JobStore(tmp_path).save(record("good"))
    (tmp_path / "broken.json").write_text('{"id": "broken", "state": ')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "other.json").write_text(json.dumps(record("not-other")))
    with caplog.at_level(logging.WARNING, logger="atelier.jobs"):
        loaded = JobStore(tmp_path).load_all()
    assert [r["id"] for r in loaded] == ["good"]
    logged = caplog.text
    for name in ("broken.json", "list.json", "binary.json", "other.json"):
        assert name in logged


def test_a_job_running_when_the_server_died_is_listed_as_failed(tmp_path):
    store = JobStore(tmp_path)
    store.save(record("running1", state="running", finished=None))
    store.save(record("queued1", state="queued", created=50.0, finished=None))
    store.save(record("done1", state="done"))
    # "Restart": a new store over the same folder.
    loaded = {r["id"]: r for r in JobStore(tmp_path).load_all()}
    for job_id in ("running1", "queued1"):
        assert loaded[job_id]["state"] == "failed"
        assert loaded[job_id]["error"] == DIED_WITH_SERVER
        assert loaded[job_id]["finished_at"] is not None
        assert loaded[job_id]["metrics"]["loss"] == [[1, 0.5], [2, 0.25]]  # what it had done is kept
    assert loaded["done1"] == record("done1")
    # Saved back: the file itself says so now.
    assert json.loads((tmp_path / "running1.json").read_text())["state"] == "failed"


def test_a_write_killed_midway_leaves_the_old_record(tmp_path):
    JobStore(tmp_path).save(record("job1", state="running", finished=None))
    # A writer killed (SIGKILL) after writing its temporary file but before the rename.
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from modules.jobs.store import JobStore
        def stall(fd):
            print("writing", flush=True)
            time.sleep(60)
        os.fsync = stall
        JobStore({str(tmp_path)!r}).save({{"id": "job1", "state": "done", "step": 10}})
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # it was half way
    finally:
        writer.kill()
        writer.wait(10)
    assert json.loads((tmp_path / "job1.json").read_text())["step"] == 3
    [loaded] = JobStore(tmp_path).load_all()
    assert loaded["step"] == 3 and loaded["error"] == DIED_WITH_SERVER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job1.json"]  # the leftover temporary is gone


def test_the_store_is_bounded_dropping_the_oldest_finished(tmp_path):
    store = JobStore(tmp_path, keep=3)
    store.save(record("running", state="running", created=0.0, finished=None))
    for i in range(1, 5):
        store.save(record(f"f{i}", created=float(i), finished=float(10 + i)))
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["f3", "f4", "running"]
    # A smaller bound applies at load time too. The unfinished one is failed now, finished when its file was
    # last written (just now), so f3 is the oldest finished.
    loaded = JobStore(tmp_path, keep=2).load_all()
    assert [(r["id"], r["state"]) for r in loaded] == [("running", "failed"), ("f4", "done")]
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["f4", "running"]


def test_remove_and_ids_that_are_not_file_names(tmp_path):
    store = JobStore(tmp_path)
    store.save(record("gone"))
    store.remove("gone")
    store.remove("never-was")
    assert store.load_all() == []
    for bad in ("../escape", ".hidden", "a/b", "", None):
        with pytest.raises(PathRefused):
            store.save({"id": bad, "state": "done"})
    with pytest.raises(PathRefused):
        store.remove("../../etc/passwd")


def test_a_record_that_is_not_json_is_refused_before_any_write(tmp_path):
    store = JobStore(tmp_path)
    store.save(record("job1"))
    with pytest.raises(TypeError):
        store.save({**record("job1"), "request": object()})
    assert JobStore(tmp_path).load_all() == [record("job1")]
