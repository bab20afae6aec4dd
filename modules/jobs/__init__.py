"""The job engine: every heavy operation (generation, chat, vision, training) is a Job.

engine.py   queues, workers, job kinds, progress / stream / metrics, interrupt and skip
child.py    runners whose work runs in a child process (training): events relayed, crashes contained
store.py    jobs of long kinds persisted in the data dir, listed again after a restart
"""
from modules.jobs.engine import Job, JobContext, JobEngine, JobKind, JobState, Progress

__all__ = ["Job", "JobContext", "JobEngine", "JobKind", "JobState", "Progress"]
