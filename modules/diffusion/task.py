"""The diffusion task: txt2img and img2img (inpaint = img2img with a mask) as job kinds."""
from __future__ import annotations

from typing import TYPE_CHECKING

from modules.jobs import JobKind

if TYPE_CHECKING:
    from modules.tasks import Registrar

QUEUE = "images"  # generation jobs run one after another, as in A1111 (one at a time per device)


def register(reg: "Registrar") -> None:
    from functools import partial

    from modules.diffusion.generate import DiffusionServices, run_img2img, run_txt2img, validator
    from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest
    from modules.requests import parse_request

    services = DiffusionServices(reg.models, reg.samplers, reg.hooks, reg.outputs, reg.settings, reg.styles)
    validate = validator(reg.samplers, reg.styles, reg.registry, reg.settings)
    models = reg.models

    def checkpoint_key(req):  # with several devices, a job goes to the one holding its checkpoint
        return models.model_key("checkpoint", req.checkpoint_override)

    # parse: other tasks submit plain dicts (DreamBooth's class images), as an API client would.
    reg.add_job_kind(JobKind("txt2img", run_txt2img, queue=QUEUE, validate=validate, model_key=checkpoint_key,
                             parse=partial(parse_request, Txt2ImgRequest)), services)
    reg.add_job_kind(JobKind("img2img", run_img2img, queue=QUEUE, validate=validate, model_key=checkpoint_key,
                             parse=partial(parse_request, Img2ImgRequest)), services)
