"""`python -m webui [flags]`: parse flags → build the Studio → serve. The port opens first;
models load behind it while the UI shows a loading state."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from webui.flags import build_parser, check_args, options_from_args

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # an unknown flag exits here with status 2 and the usage
    check_args(parser, args)
    from modules.allocator import keep_freed_memory

    # before any other thread allocates: one arena for all of them
    kept = False if args.system_allocator else keep_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("webui").info("memory allocator: %s", "glibc, freed memory kept for the next job" if kept
                                    else "the system's default")
    from modules.studio import Studio
    from webui.server import serve

    studio = Studio(options_from_args(args, REPO_ROOT))
    serve(studio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
