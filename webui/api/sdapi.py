"""AUTOMATIC1111-compatible /sdapi/v1 (minimal; the web UI/API issue completes it)."""
from __future__ import annotations

import json

from modules.diffusion.params import Txt2ImgRequest, parse_request
from modules.images import encode_png_base64


def router(studio):
    from fastapi import APIRouter, Body

    r = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])

    @r.post("/txt2img")
    def txt2img(body: dict = Body(...)):
        req = parse_request(Txt2ImgRequest, body)
        job = studio.submit("txt2img", req).wait()
        job.raise_for_error()
        res = job.result
        return {
            "images": [encode_png_base64(g.image, g.infotext) for g in res.images],
            "parameters": req.model_dump(mode="json"),
            "info": json.dumps({"infotexts": [g.infotext for g in res.images], "all_seeds": [g.seed for g in res.images]}),
        }

    return r
