"""Who may use the studio (webui/access.py): the made-up login for exposed servers without auth flags."""
from __future__ import annotations

import stat

from modules.studio import StudioOptions
from webui.access import decide_access, start_messages


def test_local_use_needs_no_login(tmp_path):
    access = decide_access(StudioOptions(data_dir=tmp_path), tmp_path / "login.json")
    assert access.open_ui and access.open_api and access.generated is None
    assert not (tmp_path / "login.json").exists()


def test_exposed_without_flags_makes_one_login_and_keeps_it_across_restarts(tmp_path):
    opts = StudioOptions(data_dir=tmp_path, share=True)
    first = decide_access(opts, tmp_path / "login.json")
    assert first.generated and first.ui_pairs == first.api_pairs == (first.generated,)
    assert stat.S_IMODE((tmp_path / "login.json").stat().st_mode) == 0o600
    assert decide_access(opts, tmp_path / "login.json").generated == first.generated  # a restart: the same password
    printed, warnings = start_messages(opts, first)
    assert first.generated[1] in printed[0] and "UI and API" in printed[0] and not warnings


def test_given_flags_are_used_and_only_the_open_side_gets_the_made_up_login(tmp_path):
    given = decide_access(StudioOptions(data_dir=tmp_path, listen=True, gradio_auth="me:pw"), tmp_path / "a.json")
    assert given.generated is None and given.ui_pairs == given.api_pairs == (("me", "pw"),)
    keys_only = decide_access(StudioOptions(data_dir=tmp_path, listen=True, api_key="k1"), tmp_path / "b.json")
    assert keys_only.ui_pairs == (keys_only.generated,) and keys_only.api_pairs == () and keys_only.api_keys == ("k1",)


def test_insecure_no_auth_is_the_explicit_way_out_and_warns(tmp_path):
    opts = StudioOptions(data_dir=tmp_path, listen=True, insecure_no_auth=True)
    access = decide_access(opts, tmp_path / "login.json")
    assert access.open_ui and access.open_api and not (tmp_path / "login.json").exists()
    printed, warnings = start_messages(opts, access)
    assert not printed and len(warnings) == 2 and all("--insecure-no-auth" in w for w in warnings)
