"""Command-line flags; AUTOMATIC1111's names where one exists. Unknown flags are a usage error."""
from __future__ import annotations

import argparse
from pathlib import Path

from modules.devices import DEVICE_FLAG, DEVICE_FLAG_FORMS
from modules.studio import StudioOptions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 launch.py", description="Atelier, a local AI studio")
    p.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 so other machines can reach it")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder for models/, outputs/, config.json (default: the repo)")
    p.add_argument("--ckpt-dir", type=Path, default=None, help="checkpoints folder (default: <data-dir>/models/Stable-diffusion)")
    p.add_argument("--lora-dir", type=Path, default=None, help="LoRA folder (default: <data-dir>/models/Lora)")
    p.add_argument("--extension-envs", type=Path, default=None,
                   help="where extensions' own Python environments are built, one folder per extension (default: "
                        "<data-dir>/extensions-data/<name>/env); one such folder can serve several data dirs")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|mps|cuda:0,cuda:2",
                   help="compute device (default: auto); cuda on a machine with several GPUs uses every one, "
                        "cuda:0,cuda:2 picks some (one image job per GPU at a time)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    p.add_argument("--gradio-auth", default=None, metavar="USER:PASS[,USER2:PASS2]", help="protect the web UI")
    p.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER2:PASS2]", help="protect the REST API")
    p.add_argument("--api-key", default=None, metavar="KEY[,KEY2]",
                   help="accept `Authorization: Bearer KEY` on every API route (OpenAI clients send it)")
    p.add_argument("--root-path", default="", help="public path prefix when served behind a reverse proxy, e.g. /sd")
    p.add_argument("--enable-insecure-extension-access", action="store_true",
                   help="allow installing extensions even when listening beyond localhost")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="with --listen/--share and no auth flags, do not require the made-up login (anyone can use it)")
    p.add_argument("--system-allocator", action="store_true",
                   help="leave glibc's malloc as it is (by default freed tensor memory is kept for the next job "
                        "instead of being page-faulted in anew: faster, but the process keeps its peak RAM)")
    p.add_argument("--no-demo", action="store_true", help="do not build the random-weights demo model")
    return p


def parse_auth(value: str | None, flag: str) -> list[tuple[str, str]]:
    """'user:pass,user2:pass2' -> [(user, pass), …]; a malformed pair raises ValueError (a usage error).
    A password may itself hold ':' (split at the first one only)."""
    if not value:
        return []
    pairs = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"{flag}: expected USER:PASS[,USER2:PASS2], got {item!r}")
        pairs.append((user, password))
    return pairs


def parse_keys(value: str | None) -> list[str]:
    """'key1,key2' -> ['key1', 'key2']; an empty key or one with spaces is a usage error."""
    if value is None:
        return []
    keys = [k.strip() for k in value.split(",")]
    if not keys or any(not k or any(c.isspace() for c in k) for k in keys):
        raise ValueError(f"--api-key: expected KEY[,KEY2] without spaces, got {value!r}")
    return keys


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks argparse cannot express; a failure is a usage error (exit status 2)."""
    try:
        parse_auth(args.gradio_auth, "--gradio-auth")
        parse_auth(args.api_auth, "--api-auth")
    except ValueError as exc:
        parser.error(str(exc))
    try:
        parse_keys(args.api_key)
    except ValueError as exc:
        parser.error(str(exc))
    if not DEVICE_FLAG.match(args.device.lower()):
        parser.error(f"--device must be {DEVICE_FLAG_FORMS}; not {args.device!r}")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, not {args.port}")
    if args.root_path and (not args.root_path.startswith("/") or "://" in args.root_path or " " in args.root_path):
        parser.error(f"--root-path must be a path starting with '/', like /sd; got {args.root_path!r}")


def options_from_args(args: argparse.Namespace, repo_root: Path) -> StudioOptions:
    return StudioOptions(
        data_dir=args.data_dir or repo_root,
        ckpt_dir=args.ckpt_dir,
        lora_dir=args.lora_dir,
        extension_envs=args.extension_envs,
        device=args.device,
        listen=args.listen,
        share=args.share,
        port=args.port,
        gradio_auth=args.gradio_auth,
        api_auth=args.api_auth,
        api_key=args.api_key,
        root_path=args.root_path,
        enable_insecure_extension_access=args.enable_insecure_extension_access,
        insecure_no_auth=args.insecure_no_auth,
        build_demo=not args.no_demo,
    )
