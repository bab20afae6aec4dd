"""The training task: LoRA training as process-backed, exclusive, persisted jobs.

The server side (task.py, runner.py, params.py, plan.py, memory.py, runfolder.py, launch.py,
dataset.py, buckets.py) never imports torch; the work runs in a child process under
`accelerate launch` (sd_lora_main.py and the modules it uses).
"""
