"""Who may use the studio: the logins of the UI and of the API, decided once at start.

As given: --gradio-auth, --api-auth (without it --gradio-auth guards the API too), --api-key.
Exposed (--listen / --share) with the UI or the API left open by them: a password for user `atelier` is made once, kept in
<data>/login.json (mode 0600) and required on the UI and the API — a public link that strangers can
open must not be an open GPU. --insecure-no-auth is the explicit way out.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from modules import atomic
from modules.studio import StudioOptions
from webui.flags import parse_auth, parse_keys

GENERATED_USER = "atelier"


@dataclass(frozen=True)
class Access:
    ui_pairs: tuple[tuple[str, str], ...]
    api_pairs: tuple[tuple[str, str], ...]
    api_keys: tuple[str, ...]
    generated: tuple[str, str] | None  # the made-up login, when there is one (printed at start)
    login_file: Path

    @property
    def open_ui(self) -> bool:
        return not self.ui_pairs

    @property
    def open_api(self) -> bool:
        return not (self.api_pairs or self.api_keys)


def decide_access(options: StudioOptions, login_file: Path) -> Access:
    ui = tuple(parse_auth(options.gradio_auth, "--gradio-auth"))
    api = tuple(parse_auth(options.api_auth, "--api-auth")) or ui
    keys = tuple(parse_keys(options.api_key))
    generated = None
    if options.exposed and not options.insecure_no_auth and (not ui or not (api or keys)):
        generated = generated_login(login_file)  # for whichever side the flags leave open
        ui = ui or (generated,)
        api = api or (() if keys else (generated,))
    return Access(ui, api, keys, generated, login_file)


def generated_login(login_file: Path) -> tuple[str, str]:
    """The stored made-up login, or a new one (so a restart keeps the password the user wrote down)."""
    try:
        saved = json.loads(login_file.read_text("utf-8"))
        if saved.get("user") and saved.get("password"):
            return saved["user"], saved["password"]
    except (OSError, ValueError, AttributeError):
        pass
    login = (GENERATED_USER, secrets.token_urlsafe(12))
    # atomic.write_json writes through mkstemp, whose file is created 0600: only this user can read it.
    atomic.write_json(login_file, {"user": login[0], "password": login[1]})
    return login


def start_messages(options: StudioOptions, access: Access) -> tuple[list[str], list[str]]:
    """(lines to print, warnings to log) at start."""
    if not options.exposed:
        return [], []
    how = " and ".join(x for x, on in (("--listen", options.listen), ("--share", options.share)) if on)
    printed, warnings = [], []
    if access.generated:
        user, password = access.generated
        sides = " and ".join(side for side, pairs in (("UI", access.ui_pairs), ("API", access.api_pairs))
                             if access.generated in pairs)
        printed.append(f"Login ({sides}): user {user!r}, password {password!r} — kept in {access.login_file}; "
                       f"choose your own with --gradio-auth / --api-auth USER:PASS")
    if access.open_ui:
        warnings.append(f"{how} with --insecure-no-auth and no --gradio-auth: anyone who can reach this server "
                        f"can use the web UI")
    if access.open_api:
        warnings.append(f"{how} with --insecure-no-auth and no --api-auth or --api-key: anyone who can reach "
                        f"this server can use the REST API")
    return printed, warnings
