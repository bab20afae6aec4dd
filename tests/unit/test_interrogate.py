"""Interrogate without a captioning model: refused at submit with a 4xx naming what to install."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image


def test_interrogate_without_a_captioning_model_is_refused(data_dir):
    from modules.errors import AtelierError
    from modules.studio import Studio, StudioOptions
    from webui.interrogate import caption_request

    shutil.rmtree(data_dir / "models" / "VLM")
    studio = Studio(StudioOptions(data_dir=data_dir, device="cpu", build_demo=False))
    studio.load()
    try:
        with pytest.raises(AtelierError) as refused:
            studio.submit("vision", caption_request(Image.new("RGB", (32, 32))))
        assert 400 <= refused.value.status < 500
        assert "models/VLM" in refused.value.message, refused.value.message
    finally:
        studio.shutdown()
