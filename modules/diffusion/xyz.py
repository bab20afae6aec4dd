"""The X/Y/Z plot, A1111's most used script, as one job: every cell of the grid is a generation of its
own (saved as usual), then a labelled grid of their first images is made, with its infotext.

A request asks for it as A1111's API does: `script_name: "x/y/z plot"` and `script_args` in the order
of A1111 1.7+'s script (see ARGS; a shorter list takes the defaults for the rest). The axis types are
A1111's indices or labels (xyz_axes.py). The cells are checked when the request is submitted — each is
a full request, refused with the reason before anything runs — and run with the slowest axis to change
(the checkpoint) outermost, so each model is loaded once. Progress counts over all cells; an interrupt
stops after the current step and the grid is made of what is done.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import ValidationError

from modules.diffusion import grid as grid_mod
from modules.diffusion import infotext, seeds
from modules.diffusion.params import GeneratedImage, GenerationResult, Img2ImgRequest
from modules.diffusion.xyz_axes import AxisPlan, find_axis, format_label, parse_values
from modules.errors import InvalidRequest
from modules.jobs.context import JobContext

SCRIPT_NAME = "x/y/z plot"
TITLE = "X/Y/Z plot"
ARGS = ("x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown", "z_type", "z_values",
        "z_values_dropdown", "draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds",
        "vary_seeds_x", "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode")
DEFAULTS: dict[str, Any] = {"x_type": 1, "x_values": "", "x_values_dropdown": [], "y_type": 0, "y_values": "",
                            "y_values_dropdown": [], "z_type": 0, "z_values": "", "z_values_dropdown": [],
                            "draw_legend": True, "include_lone_images": False, "include_sub_grids": False,
                            "no_fixed_seeds": False, "vary_seeds_x": False, "vary_seeds_y": False,
                            "vary_seeds_z": False, "margin_size": 0, "csv_mode": False}
MAX_CELLS = 400
MAX_GRID_PIXELS = 200_000_000  # A1111's img_max_size_mp default
FIELD = "script_args"


def requested(req) -> bool:
    return isinstance(req.script_name, str) and req.script_name.strip().lower() == SCRIPT_NAME


def kind_of(req) -> str:
    return "img2img" if isinstance(req, Img2ImgRequest) else "txt2img"


def read_args(args: list) -> dict:
    """script_args by position → {name: value}, types checked; refusals name script_args[i]."""
    if not isinstance(args, list):
        raise InvalidRequest("send the X/Y/Z plot's arguments as a list, in A1111's order", FIELD)
    if len(args) > len(ARGS):
        raise InvalidRequest(f"the X/Y/Z plot takes {len(ARGS)} arguments ({', '.join(ARGS)}); got {len(args)}", FIELD)
    out = dict(DEFAULTS)
    for i, (name, value) in enumerate(zip(ARGS, args)):
        where = f"{FIELD}[{i}]"
        if value is None:
            continue
        if name.endswith("_type"):
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                raise InvalidRequest(f"{name} is an axis index (A1111's) or label", where)
        elif name.endswith("_dropdown"):
            if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
                raise InvalidRequest(f"{name} is a list of values", where)
        elif name.endswith("_values"):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise InvalidRequest(f"{name} is the axis's values as text, e.g. \"10, 20, 30\"", where)
            value = str(value)
        elif name == "margin_size":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 500:
                raise InvalidRequest("margin_size is a number of pixels, 0 to 500", where)
            value = int(value)
        elif not isinstance(value, bool):
            raise InvalidRequest(f"{name} is true or false", where)
        out[name] = value
    return out


@dataclass
class Cell:
    index: tuple[int, int, int]  # (ix, iy, iz)
    request: Any  # the cell's own Txt2ImgRequest / Img2ImgRequest
    parts: int  # progress parts: batch count x passes


@dataclass
class Plot:
    axes: list[AxisPlan]  # x, y, z
    options: dict
    cells: list[Cell] = field(default_factory=list)  # in the order they run

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(len(a.values) for a in self.axes)  # type: ignore[return-value]


def _axis(kind: str, args: dict, letter: str) -> AxisPlan:
    where = f"{FIELD}[{ARGS.index(f'{letter}_type')}]"
    try:
        axis = find_axis(kind, args[f"{letter}_type"])
    except ValueError as exc:
        raise InvalidRequest(f"{letter.upper()} type: {exc}", where) from None
    if axis.apply is None:
        raise InvalidRequest(f"the {axis.label} axis is not available in Atelier: {axis.why_not}", where)
    try:
        values = parse_values(axis, args[f"{letter}_values"], args[f"{letter}_values_dropdown"], args["csv_mode"])
    except ValueError as exc:
        raise InvalidRequest(f"{letter.upper()} values: {exc}", f"{FIELD}[{ARGS.index(f'{letter}_values')}]") from None
    if axis.label in ("Seed", "Var. seed") and not args["no_fixed_seeds"]:
        values = [seeds.resolve(v) for v in values]  # A1111: -1 on a seed axis is a random seed, fixed for the plot
    text = args[f"{letter}_values"] or ", ".join(str(v) for v in args[f"{letter}_values_dropdown"])
    return AxisPlan(axis, values, text, bool(args[f"vary_seeds_{letter}"]), [format_label(axis, v) for v in values])


def _order(axes: list[AxisPlan]) -> list[int]:
    """Which axis changes slowest: A1111's rule (the costliest outermost; otherwise z, then y, then x)."""
    x, y, z = (a.axis.cost for a in axes)
    first, second = 2, 1
    if x > y and x > z:
        first, second = 0, (1 if y > z else 2)
    elif y > x and y > z:
        first, second = 1, (0 if x > z else 2)
    elif z > x and z > y:
        first, second = 2, (0 if x > y else 1)
    return [first, second, 3 - first - second]


def plan(req) -> Plot:
    """The cells of the plot, each a validated request; InvalidRequest naming script_args otherwise."""
    kind = kind_of(req)
    args = read_args(req.script_args)
    axes = [_axis(kind, args, letter) for letter in "xyz"]
    nx, ny, nz = (len(a.values) for a in axes)
    if nx * ny * nz > MAX_CELLS:
        raise InvalidRequest(f"the plot has {nx * ny * nz} cells; at most {MAX_CELLS}", FIELD)
    if nx * ny * nz * req.width * req.height > MAX_GRID_PIXELS:
        raise InvalidRequest(f"the grid would be larger than {MAX_GRID_PIXELS // 1_000_000} megapixels", FIELD)
    base = {k: v for k, v in req.__dict__.items() if k not in ("script_name", "script_args")}
    if not args["no_fixed_seeds"]:
        base["seed"] = seeds.resolve(req.seed)  # every cell starts from the same seed (A1111's fix_seed)
    cls = type(req)
    cells: dict[tuple[int, int, int], Cell] = {}
    for iz, z in enumerate(axes[2].values):
        for iy, y in enumerate(axes[1].values):
            for ix, x in enumerate(axes[0].values):
                fields = copy.copy(base)
                fields["override_settings"] = dict(base.get("override_settings") or {})
                fields["styles"] = list(base.get("styles") or [])
                labels = []
                for plan_, value in zip(axes, (x, y, z)):
                    try:
                        plan_.axis.apply(fields, value, plan_.values)
                    except ValueError as exc:
                        raise InvalidRequest(f"{plan_.axis.label}: {exc}", FIELD) from None
                    if plan_.axis.label != "Nothing":
                        labels.append(format_label(plan_.axis, value) or str(value))
                _vary_seeds(fields, axes, (ix, iy, iz))
                try:
                    request = cls.model_validate(fields)
                except ValidationError as exc:
                    err = InvalidRequest.from_validation(exc)
                    raise InvalidRequest(f"the cell {', '.join(labels)}: {err.field}: {err.message}", FIELD) from None
                except InvalidRequest as exc:
                    raise InvalidRequest(f"the cell {', '.join(labels)}: {exc.field}: {exc.message}", FIELD) from None
                passes = 2 if request.enable_hr and kind == "txt2img" else 1
                cells[(ix, iy, iz)] = Cell((ix, iy, iz), request, request.n_iter * passes)
    order = _order(axes)
    shape = (nx, ny, nz)

    def loops(level: int, index: list[int]):
        if level == 3:
            yield tuple(index)
            return
        dim = order[level]
        for i in range(shape[dim]):
            index[dim] = i
            yield from loops(level + 1, index)

    options = {k: args[k] for k in ("draw_legend", "include_lone_images", "include_sub_grids", "margin_size",
                                    "no_fixed_seeds")}
    return Plot(axes, options, [cells[i] for i in loops(0, [0, 0, 0])])


def _vary_seeds(fields: dict, axes: list[AxisPlan], index: tuple[int, int, int]) -> None:
    """A1111's "Vary seeds for X/Y/Z": each step along such an axis adds to the seed."""
    if fields.get("seed", -1) == -1:
        return
    xdim = len(axes[0].values) if axes[0].vary_seeds else 1
    ydim = len(axes[1].values) if axes[1].vary_seeds else 1
    ix, iy, iz = index
    offset = (ix if axes[0].vary_seeds else 0) + (iy * xdim if axes[1].vary_seeds else 0) + \
             (iz * xdim * ydim if axes[2].vary_seeds else 0)
    fields["seed"] = (fields["seed"] + offset) % (seeds.MAX_SEED + 1)


class CellContext(JobContext):
    """The job's context as one cell sees it: its parts come after the cells before it."""

    def __init__(self, parent: JobContext, offset: int, label: str):
        super().__init__(parent.job, parent.services)
        self._offset, self._label = offset, label

    def set_parts(self, parts: int) -> None:
        pass  # the plot set the parts of all cells

    def progress(self, step: int, total: int, part: int | None = None, text: str | None = None) -> None:
        super().progress(step, total, None if part is None else self._offset + part,
                         f"{self._label}: {text}" if text else self._label)


def run(ctx: JobContext, req, run_cell: Callable[[JobContext, Any], GenerationResult],
        save_grid: Callable[[GeneratedImage], None] | None) -> GenerationResult:
    """Run every cell (run_cell: the ordinary generation of one request), then the grid."""
    plot = plan(req)
    ctx.set_parts(sum(c.parts for c in plot.cells))
    done: dict[tuple[int, int, int], GenerationResult] = {}
    offset = 0
    for n, cell in enumerate(plot.cells):
        if ctx.interrupted:
            break
        done[cell.index] = run_cell(CellContext(ctx, offset, f"X/Y/Z cell {n + 1}/{len(plot.cells)}"), cell.request)
        offset += cell.parts
    return _assemble(req, plot, done, ctx.interrupted, save_grid)


def _grid_infotext(plot: Plot, first: GeneratedImage, with_z: bool) -> str:
    extra: dict[str, Any] = {"Script": TITLE}
    for letter, axis_plan in zip("XYZ", plot.axes):
        if axis_plan.axis.label == "Nothing" or (letter == "Z" and not with_z):
            continue
        extra[f"{letter} Type"] = axis_plan.axis.label
        extra[f"{letter} Values"] = axis_plan.text
        if axis_plan.axis.label in ("Seed", "Var. seed") and not plot.options["no_fixed_seeds"]:
            extra[f"Fixed {letter} Values"] = ", ".join(str(v) for v in axis_plan.values)
    return infotext.with_params(first.infotext, extra)


def _assemble(req, plot: Plot, done: dict, interrupted: bool,
              save_grid: Callable[[GeneratedImage], None] | None) -> GenerationResult:
    nx, ny, nz = plot.shape
    firsts = {i: r.images[0] for i, r in done.items() if r.images}
    if not firsts:
        return GenerationResult(images=[], request=req, interrupted=interrupted,
                                info={"infotexts": [], "all_seeds": [], "interrupted": interrupted})
    first_cell = firsts.get((0, 0, 0)) or next(iter(firsts.values()))
    x_plan, y_plan, z_plan = plot.axes
    legend = plot.options["draw_legend"]
    margin = plot.options["margin_size"]
    subgrids = []
    for iz in range(nz):
        rows = [[firsts[(ix, iy, iz)].image if (ix, iy, iz) in firsts else None for ix in range(nx)] for iy in range(ny)]
        try:
            subgrids.append(grid_mod.labelled_grid(rows, x_plan.labels if legend else [""] * nx,
                                                   y_plan.labels if legend else [""] * ny, margin))
        except ValueError:  # no cell of this slice was made
            subgrids.append(None)
    made = [s for s in subgrids if s is not None]
    if nz > 1:
        main = grid_mod.labelled_grid([subgrids], z_plan.labels if legend else [""] * nz, [""], margin)
    else:
        main = made[0]
    images = [GeneratedImage(image=main, infotext=_grid_infotext(plot, first_cell, True), seed=first_cell.seed,
                             subseed=first_cell.subseed)]
    if plot.options["include_sub_grids"] and nz > 1:
        for iz, sub in enumerate(subgrids):
            cell = firsts.get((0, 0, iz)) or first_cell
            if sub is not None:
                images.append(GeneratedImage(image=sub, infotext=_grid_infotext(plot, cell, False), seed=cell.seed,
                                             subseed=cell.subseed))
    if save_grid is not None:
        for g in images:
            save_grid(g)
    if plot.options["include_lone_images"]:
        for iz in range(nz):
            for iy in range(ny):
                for ix in range(nx):
                    if (ix, iy, iz) in done:
                        images.extend(done[(ix, iy, iz)].images)
    info = dict(next(iter(done.values())).info)
    info.update({"prompt": req.prompt, "negative_prompt": req.negative_prompt, "infotexts": [g.infotext for g in images],
                 "all_seeds": [g.seed for g in images], "all_subseeds": [g.subseed for g in images],
                 "index_of_first_image": 1, "interrupted": interrupted,
                 "all_prompts": [infotext.parse(g.infotext)["Prompt"] for g in images]})
    return GenerationResult(images=images, request=req, info=info, interrupted=interrupted)
