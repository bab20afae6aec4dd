"""The extension API, version 1: the only surface an extension touches.

`setup(api)` receives one ExtensionAPIv1 per extension. Everything it registers is
recorded with the extension's name as owner, so disabling the extension removes it
again. Nothing else in modules/ is public: extensions that import internals are on
their own. See docs/extensions.md for the guide and the versioning rules.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable

from modules.errors import InvalidRequest
from modules.extensions.hooks import HOOK_NAMES
from modules.extensions.registries import HTTP_METHODS, RouteSpec, VisionTaskSpec
from modules.extensions.tabs import TabSpec

if TYPE_CHECKING:
    from modules.jobs import JobContext
    from modules.studio import Studio

API_VERSION = "1"
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SCHEDULER_RE = re.compile(r"^[A-Z][A-Za-z0-9]*Scheduler$")


def _types() -> SimpleNamespace:
    """The typed objects hooks receive, importable as `api.types.X` (part of v1)."""
    from modules.chat.params import ChatMessage, ChatRequest, ChatResult, ChatStreamPiece, CompletionRequest
    from modules.diffusion.params import GeneratedImage, GenerationResult, Img2ImgRequest, Txt2ImgRequest
    from modules.models.adapters import Loaded
    from modules.training.kinds import TrainingInputs
    from modules.training.params import BaseTrainingRequest

    # InvalidRequest(message, field): raised from a route or job it becomes a 422 naming the field.
    # Loaded: what a model kind's adapter returns from load() (see add_model_kind).
    # TrainingRequest / TrainingInputs: a training kind's request base and what its check returns (add_training_kind).
    return SimpleNamespace(Txt2ImgRequest=Txt2ImgRequest, Img2ImgRequest=Img2ImgRequest,
                           GenerationResult=GenerationResult, GeneratedImage=GeneratedImage,
                           ChatRequest=ChatRequest, ChatMessage=ChatMessage, ChatResult=ChatResult,
                           ChatStreamPiece=ChatStreamPiece, CompletionRequest=CompletionRequest,
                           InvalidRequest=InvalidRequest, Loaded=Loaded, TrainingRequest=BaseTrainingRequest,
                           TrainingInputs=TrainingInputs)


class ExtensionJobContext:
    """What an extension's job runner sees: progress, a preview, a stream, metrics, log lines,
    whether to stop, and a child process to run its work in."""

    def __init__(self, ctx: "JobContext"):
        self._ctx = ctx

    @property
    def interrupted(self) -> bool:
        return self._ctx.interrupted

    def progress(self, step: int, total: int, text: str | None = None) -> None:
        self._ctx.progress(step, total, text=text)

    def preview(self, image) -> None:
        self._ctx.preview(image)

    def emit(self, piece) -> None:
        """Append a JSON-able piece to the job's stream (GET /atelier/v1/jobs/{id}/stream reads it)."""
        self._ctx.emit(piece)

    def metric(self, name: str, value: float, step: int) -> None:
        self._ctx.metric(name, value, step)

    def log(self, line: str) -> None:
        self._ctx.log(line)

    def run_child(self, target: str, request: dict, **options):
        """Run "package.module:function" in a child process (a crash there fails only this job);
        options: launcher, memory_limit_mb, stop_grace_s, env, cwd — see modules/jobs/child.py."""
        return self._ctx.run_child(target, request, **options)


class JobHandle:
    """A submitted job, seen from an extension: id, state, progress, result, wait()."""

    def __init__(self, job):
        self._job = job

    id = property(lambda self: self._job.id)
    state = property(lambda self: self._job.state.value)
    progress = property(lambda self: self._job.progress.fraction)
    result = property(lambda self: self._job.result)
    error = property(lambda self: self._job.error)

    def wait(self, timeout: float | None = None) -> "JobHandle":
        self._job.wait(timeout)
        return self


class ExtensionAPIv1:
    """`atelier.extensions.v1`. Keep it small: every method here is a promise."""

    version = API_VERSION

    def __init__(self, studio: "Studio", name: str, priority: int, folder: Path, data_dir: Path,
                 report: Callable[[str, str, str], None], python: Path | None = None):
        self.name = name
        self.folder = Path(folder)  # the extension's own files (read-only by convention)
        self._data_dir = Path(data_dir)
        self._python = Path(python) if python is not None else None
        self.log = logging.getLogger(f"atelier.ext.{name}")
        self.types = _types()
        self._studio = studio
        self._priority = priority
        self._report = report  # (owner, where, traceback text)
        self._samplers: list[str] = []
        self._model_kinds: list[str] = []
        self._job_kinds: list[str] = []
        self._training_jobs: list[str] = []  # the job kinds of its training kinds (removed on disable)
        self._settings_model: type | None = None
        self._settings_title = ""
        self._lock = threading.Lock()
        self.active = True

    @property
    def data_dir(self) -> Path:
        """A folder of its own for data it writes (made on first use)."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        return self._data_dir

    @property
    def datasets_dir(self) -> Path:
        """The data dir's datasets/ folder (the Train tab's datasets; e.g. calibration images), to read from."""
        from modules.training.captions import datasets_root

        return datasets_root(self._studio.paths.root)

    @property
    def python(self) -> Path:
        """The interpreter its child processes run: its own environment's (extension.toml `environment`, when
        the studio's Python cannot host its requirements), else the studio's own."""
        return self._python or Path(sys.executable)

    def start_worker(self, target: str, env: dict | None = None, memory_limit_mb: int | None = None,
                     start_timeout_s: float = 120.0):
        """A persistent child process running `api.python`: target "file.py:Factory" (a file of this extension;
        Factory() builds the object whose public methods the studio calls). Returns it started; `worker.call(
        method, timeout_s=…, **json_args)` → the method's JSON value, `worker.stop()`, `worker.alive`,
        `worker.private_dir` (files for it to read). Its output goes to this extension's log; a crash fails the
        call that saw it (ChildFailed, with the reason) and never the studio. See modules/jobs/worker.py."""
        from modules.jobs.worker import ChildWorker
        from modules.paths import resolve_inside

        file, sep, factory = target.rpartition(":")
        if not sep or not file.endswith(".py") or not factory.isidentifier():
            raise ValueError(f"worker target {target!r} must be 'file.py:Factory' inside the extension's folder")
        path = resolve_inside(self.folder, file, field_name="target")
        worker = ChildWorker(f"{path}:{factory}", python=self.python, env=env, memory_limit_mb=memory_limit_mb,
                             log_line=self.log.info, start_timeout_s=start_timeout_s)
        return worker.start()

    # -- UI -------------------------------------------------------------
    def add_tab(self, title: str, build: Callable[[], Any], order: int = 500) -> None:
        """A tab: `build()` creates Gradio components (import gradio inside it) and may
        return them by name. The built-in tabs register through this same TabSpec."""
        slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
        self._studio.tabs.add(TabSpec(title=title, build=_GuardedBuild(self, title, build), owner=self.name,
                                      order=order, elem_id=f"tab_ext_{self.name}_{slug}".replace("-", "_")))

    def add_settings_section(self, model: type, title: str | None = None) -> None:
        """A typed settings section (a pydantic model whose fields all have defaults),
        persisted in config.json under extensions.<name> and shown in the Extensions tab."""
        from pydantic import BaseModel

        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError("add_settings_section takes a pydantic BaseModel class")
        model()  # every field needs a default: fail now, not when the user opens the tab
        self._settings_model = model
        self._settings_title = title or self.name

    @property
    def settings(self):
        """The current settings section as an instance of its model (defaults if unset)."""
        if self._settings_model is None:
            raise RuntimeError("call api.add_settings_section(Model) first")
        from pydantic import ValidationError

        stored = self._studio.settings.extension_section(self.name)
        try:
            return self._settings_model.model_validate(stored)
        except ValidationError:
            self.log.warning("stored settings of %s are invalid; using the defaults", self.name)
            return self._settings_model()

    def save_settings(self, values) -> Any:
        """Validate (a model instance or a dict) and persist; returns the new instance."""
        from pydantic import ValidationError

        if self._settings_model is None:
            raise RuntimeError("call api.add_settings_section(Model) first")
        data = values.model_dump() if hasattr(values, "model_dump") else dict(values)
        try:
            obj = self._settings_model.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest.from_validation(exc) from None
        self._studio.settings.set_extension_section(self.name, obj.model_dump(mode="json"))
        return obj

    # -- generation -----------------------------------------------------
    def add_sampler(self, name: str, scheduler_class: str, options: dict | None = None,
                    aliases: tuple[str, ...] = ()) -> None:
        """A sampler: a diffusers scheduler class name plus constructor options."""
        from modules.diffusion.samplers import SamplerSpec

        if not _SCHEDULER_RE.match(scheduler_class):
            raise ValueError(f"{scheduler_class!r} is not a diffusers scheduler class name (e.g. 'DDIMScheduler')")
        if name in self._studio.samplers.names() and name not in self._samplers:
            raise ValueError(f"a sampler named {name!r} exists already")
        self._studio.samplers.add(SamplerSpec(name, scheduler_class, dict(options or {}), tuple(aliases)))
        self._samplers.append(name)

    # -- hooks ----------------------------------------------------------
    def add_hook(self, hook: str, fn: Callable) -> Callable:
        """Register `fn` for one of HOOK_NAMES, ordered by (priority, extension name)."""
        if hook not in HOOK_NAMES:
            raise ValueError(f"unknown hook {hook!r}; hooks: {', '.join(HOOK_NAMES)}")
        self._studio.hooks.add(hook, fn, owner=self.name, priority=self._priority)
        return fn

    def before_generate(self, fn: Callable) -> Callable:
        """fn(request) -> request | None. Runs on the job worker before sampling."""
        return self.add_hook("before_generate", fn)

    def after_generate(self, fn: Callable) -> Callable:
        """fn(result: GenerationResult) -> result | None. Runs before the images are saved."""
        return self.add_hook("after_generate", fn)

    def on_image_saved(self, fn: Callable) -> Callable:
        """fn(image: GeneratedImage) with image.path set. Return value ignored."""
        return self.add_hook("on_image_saved", fn)

    def before_chat(self, fn: Callable) -> Callable:
        return self.add_hook("before_chat", fn)

    def after_chat(self, fn: Callable) -> Callable:
        return self.add_hook("after_chat", fn)

    def on_chat_stream(self, fn: Callable) -> Callable:
        """Decorator: fn(piece) for each piece of a chat reply as it is generated (a ChatStreamPiece)."""
        return self.add_hook("chat_stream", fn)

    # -- REST -----------------------------------------------------------
    def add_route(self, path: str, endpoint: Callable, methods: tuple[str, ...] = ("GET",), summary: str = "") -> None:
        """A FastAPI-style endpoint answering at /ext/<name><path> (typed params, pydantic bodies)."""
        if not isinstance(path, str) or not path.startswith("/") or ".." in path:
            raise ValueError(f"route path {path!r} must start with '/' and stay under /ext/{self.name}/")
        methods = tuple(m.upper() for m in methods)
        bad = [m for m in methods if m not in HTTP_METHODS]
        if bad:
            raise ValueError(f"unsupported HTTP method {bad[0]!r}; use {', '.join(HTTP_METHODS)}")
        self._studio.extensions.routes.add(RouteSpec(self.name, path, methods, endpoint, summary))

    def get(self, path: str) -> Callable:
        """Decorator: @api.get("/hello")."""
        return self._route_decorator(path, "GET")

    def post(self, path: str) -> Callable:
        """Decorator: @api.post("/apply")."""
        return self._route_decorator(path, "POST")

    def _route_decorator(self, path: str, method: str) -> Callable:
        def register(fn: Callable) -> Callable:
            self.add_route(path, fn, (method,))
            return fn
        return register

    # -- models, vision, jobs --------------------------------------------
    def add_model_kind(self, kind: str, folder: str, adapter=None) -> Path:
        """A models/<folder> the registry scans as `kind`; returns the folder. With an `adapter`
        (load / to / prepare / release / residency, see modules/models/adapters.py) the model manager
        loads the kind for jobs (`ctx.models.use(kind, name)`), counted in the same memory budget."""
        from modules.paths import MODEL_FOLDERS, resolve_inside

        if not _KIND_RE.match(kind):
            raise ValueError(f"model kind {kind!r}: use lower-case letters, digits, '-', '_', '.'")
        if kind in MODEL_FOLDERS or (kind in self._studio.paths.extra_kinds and kind not in self._model_kinds):
            raise ValueError(f"model kind {kind!r} exists already")
        if "/" in folder or "\\" in folder:
            raise ValueError(f"folder {folder!r} must be one folder name under models/")
        path = resolve_inside(self._studio.paths.models, folder, field_name="folder", must_exist=False)
        path.mkdir(parents=True, exist_ok=True)
        self._studio.extensions.set_model_kind(kind, path)
        if adapter is not None:
            self._studio.models.add_adapter(kind, adapter)
        self._model_kinds.append(kind)
        return path

    def refresh_models(self, kind: str) -> None:
        """Scan models/<folder> of one of this extension's kinds again: a file it wrote there is listed (and
        loadable) at once."""
        if kind not in self._model_kinds:
            raise ValueError(f"{kind!r} is not a model kind of {self.name}")
        self._studio.registry.refresh(kind)

    def add_vision_task(self, name: str, run: Callable, title: str = "", description: str = "",
                        model_kind: str | None = None, options: dict | None = None,
                        check: Callable | None = None) -> None:
        """A vision task: run(image, options) -> dict | str, listed by the vision tab and
        GET /atelier/v1/vision/tasks, run by the "vision" job kinds on the job worker. `options` holds the
        task's defaults (shown in the UI) merged with the request's, plus "model" (a name of `model_kind`),
        "objects", "prompt", "question", "language". A dict answer is the vision JSON shape (see docs/api.md;
        masks may be bool arrays or COCO RLE, boxes in pixels). `check(options)`, when given, runs when a request
        is submitted, with the same options: raising api.types.InvalidRequest there refuses the request (a 422
        naming the field) before it waits in the queue — for one image and for every image of a batch.
        Built-in task names are taken."""
        guarded_check = _GuardedRun(self, f"vision task {name} (check)", check) if check is not None else None
        self._studio.vision_tasks.add(VisionTaskSpec(name=name, run=_GuardedRun(self, f"vision task {name}", run),
                                                     title=title or name, description=description,
                                                     model_kind=model_kind, owner=self.name,
                                                     options=dict(options or {}), check=guarded_check))

    def use_model(self, kind: str, name: str | None = None):
        """`with api.use_model(kind, name) as handle:` — the model resident on the compute device and pinned
        for the block, loaded by the kind's adapter (see add_model_kind) within the one memory budget.
        From a job runner or a vision task (they run on the job worker), not from the UI's event loop."""
        return self._studio.models.use(kind, name)

    def register_job_kind(self, kind: str, runner: Callable[[ExtensionJobContext, Any], Any],
                          queue: str = "default", exclusive: bool = False, persist: bool = False) -> None:
        """A job kind on the job engine: runner(ctx, request) runs on the worker with
        ctx.progress(step, total), ctx.preview(image) and ctx.interrupted."""
        if not _KIND_RE.match(kind):
            raise ValueError(f"job kind {kind!r}: use lower-case letters, digits, '-', '_', '.'")
        self._studio.extensions.claim_job_kind(kind, self.name)

        def run(ctx, request):
            if not self.active:
                raise InvalidRequest(f"the extension {self.name} that provides {kind!r} is disabled", "kind")
            try:
                return runner(ExtensionJobContext(ctx), request)
            except InvalidRequest:
                raise
            except Exception:
                self._report(self.name, f"job {kind}", traceback.format_exc())
                raise

        self._studio.jobs.register_kind(kind, run, queue=queue, exclusive=exclusive, persist=persist,
                                        owner=self.name)
        self._job_kinds.append(kind)

    def add_training_kind(self, kind: str, request: type, check: Callable, child: str,
                          plots: tuple = (("loss", ("loss",)), ("metrics", ())), layout: dict | None = None,
                          finish: Callable[[dict], None] | None = None, env: dict | None = None,
                          stop_grace_s: float = 60.0) -> None:
        """A training kind: a form in the Train tab (of the extensions loaded at start; one enabled later
        trains over REST at once, its form after a restart), POST /atelier/v1/train {"kind": kind, …} and the
        /train_start endpoint, run as a training job (the "training" queue, exclusive, persisted).

        `request`: a pydantic model built on api.types.TrainingRequest (output_name, dataset, base_model, epochs,
        batch_size, seed, overwrite, resume) with `kind: Literal[kind] = kind` and its own fields; the form is
        built from them (Literal → dropdown, bool → checkbox, …), `layout` {group: (field names)} places them
        ("Basics", "Dataset", "Network", "Optimizer", "Samples", "Options", "Advanced"). Its class vars
        BASE_MODEL_KIND and DATASET_FILES fill the pickers, OUTPUT_KIND is the model kind refreshed at the end.
        `check(request, data_root: Path) -> api.types.TrainingInputs` runs at submit and again when the job
        starts; raise api.types.InvalidRequest naming the field (a 422). The studio adds the output-name check,
        the run folder (training/<output_name>/) and the step math.
        `child`: "file.py:function" of this extension, run in a child process with `api.python` (its own
        environment's interpreter): function(ctx, job) → a JSON dict, where ctx has progress(step, total, text),
        metric(name, value, step), log(line) and `interrupted` (Stop: save and return soon, within
        stop_grace_s), and job is {"request", "dataset_dir", "run_dir", "output", "extra", "base", "device"}.
        Its result's "output" (a path) is the model made; "checkpoint" what a Stop kept. A crash there fails the job,
        never the studio. `plots`: the live panel's two (title, metric names) pairs. `finish(result)` runs in
        the server after the child returned, before the output kind is refreshed. `env`: the child's extra
        environment."""
        from modules.paths import resolve_inside
        from modules.training.kinds import TrainingInputs, TrainingKindSpec
        from modules.training.params import KINDS, BaseTrainingRequest, checked_from, job_kind
        from modules.training.task import add_kind, services_of

        if not _KIND_RE.match(kind) or kind in KINDS:
            raise ValueError(f"training kind {kind!r}: use lower-case letters, digits, '-', '_', '.' (not a built-in)")
        if not (isinstance(request, type) and issubclass(request, BaseTrainingRequest)
                and "kind" in request.model_fields and request.model_fields["kind"].default == kind):
            raise TypeError(f"add_training_kind takes a model built on api.types.TrainingRequest with "
                            f"kind: Literal[{kind!r}] = {kind!r}")
        if len(plots) != 2 or not all(isinstance(t, str) and isinstance(n, tuple) for t, n in plots):
            raise ValueError("plots: two (title, (metric names…)) pairs")
        file, sep, function = child.rpartition(":")
        if not sep or not file.endswith(".py") or not function.isidentifier():
            raise ValueError(f"child {child!r} must be 'file.py:function' inside the extension's folder")
        path = resolve_inside(self.folder, file, field_name="child")
        guarded_check = _GuardedRun(self, f"training kind {kind} (check)", check)

        def checked(req, services, outputs: bool):
            inputs = guarded_check(req, services.paths.root)
            if not isinstance(inputs, TrainingInputs):
                raise TypeError(f"the check of training kind {kind!r} returned {type(inputs).__name__}, "
                                "not api.types.TrainingInputs")
            return checked_from(req, inputs, services, outputs)

        name = job_kind(kind)
        self._studio.extensions.claim_job_kind(name, self.name)
        spec = TrainingKindSpec(kind, request, checked, f"{path}:{function}", python=self.python,
                                plots=tuple((t, tuple(n)) for t, n in plots), layout=dict(layout or {}),
                                env=dict(env or {}),
                                finish=_GuardedRun(self, f"training kind {kind} (finish)", finish) if finish else None,
                                stop_grace_s=float(stop_grace_s), owner=self.name)
        add_kind(self._studio.jobs, services_of(self._studio.jobs), spec)
        self._training_jobs.append(name)

    def submit_job(self, kind: str, request: Any) -> JobHandle:
        return JobHandle(self._studio.jobs.submit(kind, request))

    def txt2img(self, request=None, **params):
        """Generate and wait; returns a GenerationResult. Not from a hook or a job runner
        (they run on the worker this would wait for)."""
        if threading.current_thread().name.startswith("atelier-jobs-"):
            raise RuntimeError("api.txt2img cannot be called from a hook or a job runner")
        from modules.diffusion.params import Txt2ImgRequest
        from modules.requests import parse_request

        req = request if request is not None else parse_request(Txt2ImgRequest, params)
        self._studio.wait_ready()
        job = self._studio.jobs.run("txt2img", req)
        job.raise_for_error()
        return job.result

    # -- teardown (the loader calls this on disable) ----------------------
    def _unregister(self) -> None:
        self.active = False
        s = self._studio
        s.tabs.remove_owner(self.name)
        s.hooks.remove_owner(self.name)
        s.extensions.routes.remove_owner(self.name)
        s.vision_tasks.remove_owner(self.name)
        s.training_kinds.remove_owner(self.name)
        for name in self._training_jobs:
            s.jobs.remove_kind(name)
        for name in self._samplers:
            s.samplers.remove(name)
        for kind in self._model_kinds:
            if kind in s.models.kinds():
                s.models.remove_adapter(kind)
            s.extensions.set_model_kind(kind, None)
        self._samplers, self._model_kinds, self._training_jobs = [], [], []


class _GuardedRun:
    """An extension's callable run for the studio: a person's error (AtelierError) passes as it is; anything
    else is reported against the extension (Extensions tab) and fails only the job that called it."""

    def __init__(self, api: ExtensionAPIv1, where: str, fn: Callable):
        self.api, self.where, self.fn = api, where, fn

    def __call__(self, *args, **kwargs):
        from modules.errors import AtelierError

        if not self.api.active:
            raise InvalidRequest(f"the extension {self.api.name} that provides this is disabled", "task")
        try:
            return self.fn(*args, **kwargs)
        except AtelierError:
            raise
        except Exception:
            self.api._report(self.api.name, self.where, traceback.format_exc())
            raise


class _GuardedBuild:
    """A tab build that cannot take the UI down: its error goes to the Extensions tab."""

    def __init__(self, api: ExtensionAPIv1, title: str, build: Callable):
        self.api, self.title, self.build = api, title, build

    def __call__(self, studio=None):
        follow = getattr(self.api._studio.extensions, "tab_built", None)
        if follow:  # the web UI hides this tab on page load while its extension is disabled
            follow(self.api.name)
        try:
            return self.build()
        except Exception:
            text = traceback.format_exc()
            self.api._report(self.api.name, f"tab {self.title}", text)
            renderer = getattr(self.api._studio.extensions, "render_error", None)
            if renderer:
                renderer(f"The extension {self.api.name} failed to build this tab.", text)
            return {}


# Which API object an extension gets, by the api_version in its extension.toml. A v2 would be
# added beside v1 (v1 extensions keep working), never in its place.
API_VERSIONS = MappingProxyType({API_VERSION: ExtensionAPIv1})
