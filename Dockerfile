# Atelier for GPU hosts and pod templates (RunPod, Vast, …). Not built on the project's own machines
# (they have no container daemon): docs/hosting.md says so. The install and start lines are the
# README's own commands (tests/unit/test_hosting_files.py checks it), so this file cannot drift.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/atelier
COPY . .
# The README's command, install only: ./venv with requirements.txt's exact pins (torch's CUDA build from PyPI).
RUN python3 launch.py --install-only

# Models, outputs, chats, training runs and the made-up login live here: mount a volume to keep them.
VOLUME /data
EXPOSE 7860
# --listen without auth flags: the studio makes up a login, prints it at start and keeps it in /data/login.json.
ENTRYPOINT ["python3", "launch.py", "--skip-install", "--listen", "--port", "7860", "--data-dir", "/data"]
