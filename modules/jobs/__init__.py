"""The job engine: every heavy operation (generation, chat, vision, training) is a Job.

job.py      a job (state, progress, preview, stream, metrics, logs, files, result) and JobKind
context.py  what a runner sees (ctx)
engine.py   queues, workers, the device gate, interrupt and skip, persistence of long kinds
child.py    runners whose work runs in a child process (training): events relayed, crashes contained
store.py    jobs of long kinds persisted in the data dir, listed again after a restart
"""
from modules.jobs.context import JobContext
from modules.jobs.engine import JobEngine
from modules.jobs.job import Job, JobKind, JobState, Progress

__all__ = ["Job", "JobContext", "JobEngine", "JobKind", "JobState", "Progress"]
