"""Downloads into models/ (filled in below)."""
from __future__ import annotations

from modules.errors import InvalidRequest


def run_download_job(studio, ctx, request):
    raise InvalidRequest("downloads are not available yet", "source")
