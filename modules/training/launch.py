"""The launcher the studio chooses for a training process: `accelerate launch` on the CPU, one GPU,
or every GPU of the machine with DDP. The training code is the same for all three (accelerate's
Accelerator reads the launcher's environment)."""
from __future__ import annotations

import os
import socket
import sys


def accelerate_launcher(device_name: str, gpu_count: int, mixed_precision: str, gpus: str = "all") -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
               "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if device_name != "cuda" or gpu_count < 1:
        threads = str(max(1, os.cpu_count() or 1))  # what accelerate would pick, said so it does not warn
        return command + ["--num_processes", "1", "--cpu", "--num_cpu_threads_per_process", threads]
    if gpus == "one" or gpu_count == 1:
        return command + ["--num_processes", "1", "--gpu_ids", "0"]
    return command + ["--multi_gpu", "--num_processes", str(gpu_count), "--gpu_ids", "all",
                      "--main_process_port", str(_free_port())]


def _free_port() -> int:
    with socket.socket() as sock:  # DDP's rendezvous port: one a second training on this machine is not using
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_for(device_name: str, gpu_count: int, gpus: str = "all") -> int:
    if device_name != "cuda" or gpu_count < 1 or gpus == "one":
        return 1
    return gpu_count
