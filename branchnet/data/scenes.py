"""``scenes``: the embedded default dataset, procedurally generated with exact labels.

Small RGB images of a few primitives (spheres, boxes, cylinders) of several colours
and textures on a textured ground plane before a wall, under a random camera and a
directional light with cast shadows, rendered by ray casting
(:mod:`branchnet.data.render`). Per image it provides:

========== =============== ==========================================================
task       type            definition
========== =============== ==========================================================
seg        segmentation    0 background (ground, wall), 1 sphere, 2 box, 3 cylinder
depth      depth           z-buffer: distance along the optical axis (world units)
normals    normals         unit normal in camera coordinates (x right, y up, z to viewer)
edges      edges           a pixel is an edge when a 4-neighbour lies on another surface
                           (occlusion or contact boundary) or its normal turns by more
                           than ``CREASE_DEG`` (crease); every surface is convex or
                           planar, so these are all the occlusion and crease boundaries
keypoints  keypoints       max of Gaussians (sigma ``KEYPOINT_SIGMA`` * H/64 px) at the
                           projected centres of visible objects and their visible
                           corners (box vertices, cylinder cap-rim points)
count      classification  number of visible objects (>= ``MIN_VISIBLE`` pixels), 0..M
attr_*     attribute       40 binary facts, e.g. ``attr_red_sphere`` (a red sphere is
                           visible), ``attr_left`` (a visible object's centre lies left
                           of the image centre), ``attr_camera_high`` ...
========== =============== ==========================================================

These relate the way real tasks do: depth, normals and edges share geometry;
segmentation, keypoints and count share objects; colour attributes share appearance.

Images are generated once per (settings, split, size), seeded per image (so a split is
the same whatever the chunking), in parallel over CPU cores, and cached atomically as
``.npy`` arrays under ``<root>/scenes-<hash>/<split>-<n>/`` (root: ``data.root``,
``$BRANCHNET_CACHE`` or ``~/.cache/branchnet``). Options (``data.options``):
``max_objects`` (default 5), ``seed`` (default 0; the data seed, independent of the
training seed), ``workers`` (generator processes, default: all cores).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from branchnet.data import MultiTaskDataset
from branchnet.data.render import BOX, CYLINDER, SPHERE, SceneBatch, cast, project
from branchnet.errors import BadInput, did_you_mean
from branchnet.tasks import TaskSpec

GENERATOR_VERSION = 1
CLASS_NAMES = ("background", "sphere", "box", "cylinder")
COLOURS = {  # name -> base RGB albedo
    "red": (0.85, 0.15, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.9, 0.8, 0.15),
    "white": (0.9, 0.9, 0.88),
}
SHAPES = {"sphere": SPHERE, "box": BOX, "cylinder": CYLINDER}
CREASE_DEG = 30.0
KEYPOINT_SIGMA = 1.0
MIN_VISIBLE = 4
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "affinity": 3}
DEFAULT_SPLITS = {"train": 3000, "val": 500, "test": 500, "affinity": 250}
OPTIONS = {"max_objects": 5, "workers": None, "seed": 0}
ARRAYS = ("image", "seg", "depth", "normals", "edges", "keypoints", "count", "attributes", "surface")


# --------------------------------------------------------------------------------------
# Scene sampling


@dataclass
class SceneExtras:
    """Per-scene appearance and bookkeeping beyond the geometry (for shading, attributes)."""

    colour: list[str]           # colour name per object slot ("" where absent)
    texture: list[str]          # "plain" | "stripes" | "checker" per slot
    ground_checker: bool
    ground_scale: float
    ground_colours: np.ndarray  # (2, 3)
    wall_colour: np.ndarray     # (3,)
    light_strength: float
    ambient: float


def sample_scene(rng: np.random.Generator, max_objects: int) -> tuple[dict[str, np.ndarray], SceneExtras]:
    """One random scene: geometry arrays for :class:`SceneBatch` and its appearance."""
    eye = np.array([rng.uniform(-1.0, 1.0), rng.uniform(0.8, 3.0), rng.uniform(-3.5, -1.5)])
    target = np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.8), rng.uniform(2.5, 3.5)])
    fov = np.deg2rad(rng.uniform(45.0, 70.0))
    elevation = np.deg2rad(rng.uniform(30.0, 75.0))
    azimuth = rng.uniform(-np.pi, np.pi)
    light = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), -np.cos(elevation) * np.cos(azimuth)])
    kind = np.zeros(max_objects, dtype=np.int64)
    center = np.zeros((max_objects, 3))
    size = np.ones((max_objects, 3))
    angle = np.zeros(max_objects)
    present = np.zeros(max_objects, dtype=bool)
    colour = [""] * max_objects
    texture = [""] * max_objects
    footprints: list[tuple[float, float, float]] = []
    n = int(rng.integers(1, max_objects + 1))
    colour_names = list(COLOURS)
    for slot in range(n):
        k = int(rng.integers(0, 3))
        if k == SPHERE:
            r = rng.uniform(0.3, 0.7)
            half = np.array([r, r, r])
            foot = r
        elif k == BOX:
            half = rng.uniform(0.25, 0.6, size=3)
            foot = float(np.hypot(half[0], half[2]))
        else:
            r = rng.uniform(0.25, 0.5)
            h = rng.uniform(0.5, 1.6)
            half = np.array([r, h / 2.0, r])
            foot = r
        for _ in range(20):  # rejection sampling of a free spot on the ground
            x, z = rng.uniform(-2.2, 2.2), rng.uniform(1.0, 5.0)
            if all(np.hypot(x - fx, z - fz) > foot + fr + 0.05 for fx, fz, fr in footprints):
                break
        else:
            continue
        footprints.append((x, z, foot))
        present[slot] = True
        kind[slot] = k
        center[slot] = (x, half[1], z)
        size[slot] = (half[0], 2 * half[1], half[2]) if k == CYLINDER else half
        angle[slot] = rng.uniform(0.0, np.pi / 2) if k == BOX else 0.0
        colour[slot] = colour_names[int(rng.integers(0, len(colour_names)))]
        texture[slot] = ("plain", "stripes", "checker")[int(rng.integers(0, 3))]
    grey = rng.uniform(0.35, 0.65)
    tint = rng.uniform(-0.08, 0.08, size=3)
    extras = SceneExtras(
        colour=colour, texture=texture,
        ground_checker=bool(rng.random() < 0.5), ground_scale=float(rng.uniform(0.6, 1.6)),
        ground_colours=np.clip(np.stack([np.full(3, grey) + tint, np.full(3, grey * 0.7) + tint]), 0, 1),
        wall_colour=np.clip(rng.uniform(0.45, 0.8) + rng.uniform(-0.1, 0.1, size=3), 0, 1),
        light_strength=float(rng.uniform(0.6, 1.0)), ambient=float(rng.uniform(0.2, 0.4)),
    )
    geometry = dict(eye=eye, target=target, fov=np.array(fov), present=present, kind=kind,
                    center=center, size=size, angle=angle, light=light)
    return geometry, extras


def stack_scenes(geometries: list[dict[str, np.ndarray]]) -> SceneBatch:
    return SceneBatch(**{key: np.stack([g[key] for g in geometries]) for key in geometries[0]})


# --------------------------------------------------------------------------------------
# Labels derived from the ray-cast buffers


def edge_map(surface: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Edges (H, W) bool from surface ids (H, W) and camera normals (H, W, 3).

    A pixel is an edge when one of its 4-neighbours is on another surface or has a
    normal more than ``CREASE_DEG`` away. (Surfaces are convex or planar, so a surface
    never occludes itself: every depth discontinuity is a change of surface.)
    """
    edge = np.zeros(surface.shape, dtype=bool)
    cos_limit = np.cos(np.deg2rad(CREASE_DEG))
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis] = slice(0, -1)
        b[axis] = slice(1, None)
        a, b = tuple(a), tuple(b)
        differs = surface[a] != surface[b]
        crease = np.sum(normals[a] * normals[b], -1) < cos_limit
        boundary = differs | crease
        edge[a] |= boundary
        edge[b] |= boundary
    return edge


def object_keypoints(geometry: dict[str, np.ndarray], slot: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space centre (3,) and corner points (Q, 3) of object ``slot``."""
    kind = int(geometry["kind"][slot])
    c = geometry["center"][slot]
    s = geometry["size"][slot]
    if kind == BOX:
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        ca, sa = np.cos(geometry["angle"][slot]), np.sin(geometry["angle"][slot])
        rot = np.array([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])
        corners = c + (signs * s) @ rot.T
    elif kind == CYLINDER:
        ring = np.linspace(0, 2 * np.pi, 4, endpoint=False)
        top = c[1] + s[1] / 2.0
        corners = np.stack([c[0] + s[0] * np.cos(ring), np.full(4, top), c[2] + s[0] * np.sin(ring)], -1)
    else:
        corners = np.zeros((0, 3))
    return c, corners


def keypoint_heatmap(geometry: dict[str, np.ndarray], surface: np.ndarray, depth: np.ndarray,
                     visible_slots: list[int]) -> np.ndarray:
    """Heatmap (H, W) in [0, 1]: Gaussians at projected centres and visible corners."""
    h, w = surface.shape
    points = []
    for slot in visible_slots:
        centre, corners = object_keypoints(geometry, slot)
        points.append(centre[None])
        if len(corners):
            col, row, z = project(corners, geometry["eye"], geometry["target"], float(geometry["fov"]), h, w)
            inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
            for q in np.flatnonzero(inside):
                r, cc = int(row[q]), int(col[q])
                # visible when nothing is in front of it (corners lie on the object's surface)
                if z[q] <= depth[r, cc] * 1.02 + 1e-3:
                    points.append(corners[q][None])
    heat = np.zeros((h, w))
    if not points:
        return heat
    pts = np.concatenate(points)
    col, row, z = project(pts, geometry["eye"], geometry["target"], float(geometry["fov"]), h, w)
    sigma = KEYPOINT_SIGMA * h / 64.0
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    for cx, cy, cz in zip(col, row, z):
        if cz > 0:
            heat = np.maximum(heat, np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)))
    return heat


# --------------------------------------------------------------------------------------
# Attributes: 40 binary facts about a scene, each computed from geometry and buffers


@dataclass
class SceneFacts:
    """What attributes look at for one rendered scene."""

    geometry: dict[str, np.ndarray]
    extras: SceneExtras
    surface: np.ndarray          # (H, W) surface ids
    visible: list[int]           # visible object slots
    pixels: dict[int, int]       # visible slot -> pixel count
    centroid: dict[int, tuple[float, float]]  # visible slot -> (row, col) pixel centroid


def _has(colour: str | None, shape: str | None) -> Callable[[SceneFacts], bool]:
    def fact(f: SceneFacts) -> bool:
        return any((colour is None or f.extras.colour[s] == colour)
                   and (shape is None or int(f.geometry["kind"][s]) == SHAPES[shape]) for s in f.visible)
    return fact


def _touches_border(f: SceneFacts) -> bool:
    border = np.concatenate([f.surface[0], f.surface[-1], f.surface[:, 0], f.surface[:, -1]])
    return any((border == 2 + s).any() for s in f.visible)


def _objects_overlap(f: SceneFacts) -> bool:
    s = f.surface
    for a, b in ((s[:, :-1], s[:, 1:]), (s[:-1], s[1:])):
        if ((a >= 2) & (b >= 2) & (a != b)).any():
            return True
    return False


ATTRIBUTES: dict[str, Callable[[SceneFacts], bool]] = {}
for _c in COLOURS:
    for _s in SHAPES:
        ATTRIBUTES[f"{_c}_{_s}"] = _has(_c, _s)
for _c in COLOURS:
    ATTRIBUTES[_c] = _has(_c, None)
for _s in SHAPES:
    ATTRIBUTES[_s] = _has(None, _s)
ATTRIBUTES.update({
    "two_spheres": lambda f: sum(int(f.geometry["kind"][s]) == SPHERE for s in f.visible) >= 2,
    "left": lambda f: any(f.centroid[s][1] < f.surface.shape[1] / 2 for s in f.visible),
    "right": lambda f: any(f.centroid[s][1] >= f.surface.shape[1] / 2 for s in f.visible),
    "top": lambda f: any(f.centroid[s][0] < f.surface.shape[0] / 2 for s in f.visible),
    "large": lambda f: any(n > 0.05 * f.surface.size for n in f.pixels.values()),
    "overlap": _objects_overlap,
    "border": _touches_border,
    "many": lambda f: len(f.visible) >= 4,
    "same_shape": lambda f: len(f.visible) >= 2 and len({int(f.geometry["kind"][s]) for s in f.visible}) == 1,
    "same_colour": lambda f: len({f.extras.colour[s] for s in f.visible}) < len(f.visible),
    "striped": lambda f: any(f.extras.texture[s] == "stripes" for s in f.visible),
    "checker_ground": lambda f: f.extras.ground_checker,
    "light_left": lambda f: bool(f.geometry["light"][0] < 0),
    "bright": lambda f: f.extras.light_strength > 0.8,
    "camera_high": lambda f: bool(f.geometry["eye"][1] > 1.9),
    "wide_angle": lambda f: bool(np.rad2deg(f.geometry["fov"]) > 57.5),
    "wall_half": lambda f: bool((f.surface == 1).mean() > 0.5),
})
ATTRIBUTE_NAMES = tuple(ATTRIBUTES)
assert len(ATTRIBUTE_NAMES) == 40


# --------------------------------------------------------------------------------------
# Shading


def _stripes(u: np.ndarray, freq: float) -> np.ndarray:
    return (np.sin(u * freq) > 0).astype(float)


def shade(hits_normal: np.ndarray, surface: np.ndarray, local: np.ndarray, point: np.ndarray,
          shadow: np.ndarray, geometry: dict[str, np.ndarray], extras: SceneExtras) -> np.ndarray:
    """Lambertian shading with textures and cast shadows -> RGB float (P, 3) in [0, 1]."""
    albedo = np.empty(point.shape)
    ground = surface == 0
    if extras.ground_checker:
        cell = (np.floor(point[:, 0] / extras.ground_scale) + np.floor(point[:, 2] / extras.ground_scale)) % 2
    else:
        cell = _stripes(point[:, 0] + 0.3 * point[:, 2], 6.0 / extras.ground_scale) * 0.25
    albedo[ground] = (extras.ground_colours[0] * (1 - cell[ground, None])
                      + extras.ground_colours[1] * cell[ground, None])
    wall = surface == 1
    albedo[wall] = extras.wall_colour * (0.9 + 0.1 * _stripes(point[wall, 0], 3.0)[:, None])
    for slot, name in enumerate(extras.colour):
        mask = surface == 2 + slot
        if not name or not mask.any():
            continue
        base = np.array(COLOURS[name])
        if extras.texture[slot] == "stripes":
            pattern = _stripes(local[mask, 1], 18.0)
        elif extras.texture[slot] == "checker":
            q = np.floor(local[mask] * 5.0).sum(-1) % 2
            pattern = q
        else:
            pattern = np.zeros(mask.sum())
        albedo[mask] = base * (1.0 - 0.35 * pattern[:, None])
    lambert = np.clip(hits_normal @ geometry["light"], 0.0, None)
    light = extras.ambient + extras.light_strength * lambert * np.where(shadow, 0.25, 1.0)
    return np.clip(albedo * light[:, None], 0.0, 1.0)


# --------------------------------------------------------------------------------------
# Generation


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of ``split`` (scene, then pixel noise)."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index, GENERATOR_VERSION])


def render_scenes(seed: int, split: str, indices: range, height: int, width: int,
                  max_objects: int) -> dict[str, np.ndarray]:
    """Render images ``indices`` of ``split``: a dict of arrays, first axis = image."""
    geometries, extras, rngs = [], [], []
    for index in indices:
        rng = scene_rng(seed, split, index)
        g, e = sample_scene(rng, max_objects)
        geometries.append(g)
        extras.append(e)
        rngs.append(rng)
    hits = cast(stack_scenes(geometries), height, width)
    n = len(geometries)
    out = {
        "image": np.zeros((n, height, width, 3), np.uint8),
        "seg": np.zeros((n, height, width), np.uint8),
        "depth": np.zeros((n, height, width), np.float32),
        "normals": np.zeros((n, height, width, 3), np.float16),
        "edges": np.zeros((n, height, width), np.uint8),
        "keypoints": np.zeros((n, height, width), np.float16),
        "count": np.zeros(n, np.uint8),
        "attributes": np.zeros((n, len(ATTRIBUTE_NAMES)), np.uint8),
        "surface": np.zeros((n, height, width), np.uint8),
    }
    classes = np.array([0, 0] + [0] * max_objects)
    for b in range(n):
        g, e = geometries[b], extras[b]
        surface = hits.surface[b].reshape(height, width)
        depth = hits.depth[b].reshape(height, width)
        normal_cam = hits.normal_cam[b].reshape(height, width, 3)
        classes[2:] = np.where(g["present"], g["kind"] + 1, 0)
        rgb = shade(hits.normal[b], hits.surface[b], hits.local[b], hits.point[b], hits.shadow[b], g, e)
        rgb = rgb + rngs[b].normal(0.0, 0.01, size=rgb.shape)
        ids, counts = np.unique(surface, return_counts=True)
        pixels = {int(i) - 2: int(c) for i, c in zip(ids, counts) if i >= 2 and c >= MIN_VISIBLE}
        visible = sorted(pixels)
        rows, cols = np.mgrid[0:height, 0:width] + 0.5
        centroid = {s: (float(rows[surface == 2 + s].mean()), float(cols[surface == 2 + s].mean())) for s in visible}
        facts = SceneFacts(g, e, surface, visible, pixels, centroid)
        out["image"][b] = np.round(np.clip(rgb, 0, 1) * 255).reshape(height, width, 3).astype(np.uint8)
        out["seg"][b] = classes[surface]
        out["depth"][b] = depth
        out["normals"][b] = normal_cam
        out["edges"][b] = edge_map(surface, normal_cam)
        out["keypoints"][b] = keypoint_heatmap(g, surface, depth, visible)
        out["count"][b] = len(visible)
        out["attributes"][b] = [ATTRIBUTES[name](facts) for name in ATTRIBUTE_NAMES]
        out["surface"][b] = surface
    return out


def _render_chunk(args: tuple) -> dict[str, np.ndarray]:
    return render_scenes(*args)


def generate_split(seed: int, split: str, count: int, height: int, width: int, max_objects: int,
                   workers: int | None = None, chunk: int = 50,
                   progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Render ``count`` images of ``split`` in chunks over ``workers`` processes."""
    jobs = [(seed, split, range(start, min(start + chunk, count)), height, width, max_objects)
            for start in range(0, count, chunk)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    parts: list[dict[str, np.ndarray]] = []
    if workers == 1:
        for job in jobs:
            parts.append(_render_chunk(job))
            if progress:
                progress(len(job[2]))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for job, part in zip(jobs, pool.map(_render_chunk, jobs)):
                parts.append(part)
                if progress:
                    progress(len(job[2]))
    return {key: np.concatenate([p[key] for p in parts]) for key in ARRAYS}


# --------------------------------------------------------------------------------------
# Cache and dataset


def cache_root(root: str | None) -> Path:
    """Where generated splits live: ``root``, ``$BRANCHNET_CACHE`` or ``~/.cache/branchnet``."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("BRANCHNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "branchnet"


def scenes_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validated dataset options with defaults."""
    for key in options:
        if key not in OPTIONS:
            raise BadInput(f"unknown scenes option 'data.options.{key}'{did_you_mean(key, OPTIONS)}; "
                           f"valid: {', '.join(OPTIONS)}")
    merged = {**OPTIONS, **options}
    if not isinstance(merged["max_objects"], int) or not 1 <= merged["max_objects"] <= 12:
        raise BadInput("scenes option 'data.options.max_objects' must be an integer from 1 to 12")
    if not isinstance(merged["seed"], int):
        raise BadInput("scenes option 'data.options.seed' must be an integer")
    return merged


#: Bytes a pixel of one image takes while a chunk renders (measured with tracemalloc: about
#: 430-460 B at 32-96 px, 5-12 objects; rounded up), and once stored (every label array).
RENDER_BYTES_PER_PIXEL = 500
STORED_BYTES_PER_PIXEL = 19


def generation_memory(count: int, height: int, width: int, workers: int | None = None, chunk: int = 50) -> int:
    """Bytes :func:`generate_split` needs at its peak: every worker's chunk while it renders, plus
    the whole split twice (the chunks and their concatenation)."""
    workers = max(1, min(workers or os.cpu_count() or 1, math.ceil(count / chunk)))
    pixels = height * width
    return workers * min(chunk, count) * pixels * RENDER_BYTES_PER_PIXEL + 2 * count * pixels * STORED_BYTES_PER_PIXEL


def check_generation_memory(split: str, count: int, height: int, width: int, workers: int | None = None) -> None:
    """Refuse, before allocating anything, a split whose generation cannot fit in the free memory."""
    from branchnet.machine import check_memory

    check_memory(generation_memory(count, height, width, workers),
                 f"generating {count} scenes of {height}x{width} for split '{split}'",
                 "lower data.image_size or data.splits (or data.options.workers)")


def split_dir(root: str | None, seed: int, split: str, count: int, height: int, width: int,
              max_objects: int) -> Path:
    key = json.dumps({"v": GENERATOR_VERSION, "seed": seed, "size": [height, width], "max_objects": max_objects},
                     sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return cache_root(root) / f"scenes-{digest}" / f"{split}-{count}"


def ensure_split(root: str | None, seed: int, split: str, count: int, height: int, width: int,
                 max_objects: int, workers: int | None = None, quiet: bool = False) -> Path:
    """Generate and cache a split if it is not cached yet; returns its directory.

    Written to a temporary directory and renamed, so concurrent or interrupted runs never
    see a partial split.
    """
    target = split_dir(root, seed, split, count, height, width, max_objects)
    if (target / "done.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create the scenes cache {target.parent}: {exc.strerror}; "
                       "set data.root or $BRANCHNET_CACHE to a writable directory") from None
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise BadInput(f"the scenes cache {target.parent} is not writable (another user's?) and split "
                       f"'{split}' is not cached there yet; set data.root or $BRANCHNET_CACHE to a writable directory")
    check_generation_memory(split, count, height, width, workers)
    from branchnet.atomic import dir_mode, write_error
    from branchnet.progress import progress_bar

    with progress_bar(quiet) as bar:
        job = bar.add_task(f"generating scenes/{split}", total=count)
        arrays = generate_split(seed, split, count, height, width, max_objects, workers,
                                progress=lambda k: bar.advance(job, k))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        os.chmod(tmp, dir_mode())  # mkdtemp makes it private; the cache is shared like any directory
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        try:
            for key, value in arrays.items():
                np.save(tmp / f"{key}.npy", value)
            (tmp / "done.json").write_text(json.dumps({"count": count, "attributes": ATTRIBUTE_NAMES}))
        except OSError as exc:
            raise write_error(target / "arrays", exc) from None
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "done.json").is_file():  # someone else's partial dir: replace it
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class ScenesDataset(MultiTaskDataset):
    """The procedural scenes dataset (see the module docstring for the tasks)."""

    name = "scenes"

    def augment_unsafe(self) -> dict[str, set[str]]:
        """Flip swaps left/right facts; scale and crop cut objects (count, every attribute);
        jitter changes colours and brightness (the colour and light attributes)."""
        attributes = {t for t in self.tasks if t.startswith("attr_")}
        return {"flip": attributes & {"attr_left", "attr_right", "attr_light_left"},
                "geometry": attributes | ({"count"} & set(self.tasks)), "jitter": attributes}

    @classmethod
    def available_tasks(cls, options: dict[str, Any]) -> dict[str, TaskSpec]:
        max_objects = scenes_options(options)["max_objects"]
        tasks = {
            "seg": TaskSpec("segmentation", num_classes=len(CLASS_NAMES), description="object class per pixel"),
            "depth": TaskSpec("depth", description="z-buffer depth"),
            "normals": TaskSpec("normals", description="camera-space unit normals"),
            "edges": TaskSpec("edges", description="occlusion and crease boundaries"),
            "keypoints": TaskSpec("keypoints", description="heatmap of object centres and corners"),
            "count": TaskSpec("classification", num_classes=max_objects + 1, description="visible objects"),
        }
        for name in ATTRIBUTE_NAMES:
            tasks[f"attr_{name}"] = TaskSpec("attribute", description=f"binary fact '{name}'")
        return tasks

    def __init__(self, data, split: str, tasks: list[str], quiet: bool = False) -> None:
        super().__init__(data, split, tasks)
        options = scenes_options(data.options)
        count = data.splits.get(split) or DEFAULT_SPLITS[split]
        h, w = self.image_size
        directory = ensure_split(data.root, options["seed"], split, count, h, w, options["max_objects"],
                                 options["workers"], quiet)
        self.arrays = {key: np.load(directory / f"{key}.npy", mmap_mode="r") for key in ARRAYS}
        self.count = count

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a = self.arrays
        image = torch.from_numpy(np.array(a["image"][index])).permute(2, 0, 1)
        targets: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task == "seg":
                targets[task] = torch.from_numpy(a["seg"][index].astype(np.int64))
            elif task == "depth":
                targets[task] = torch.from_numpy(np.array(a["depth"][index], np.float32))[None]
            elif task == "normals":
                targets[task] = torch.from_numpy(a["normals"][index].astype(np.float32)).permute(2, 0, 1)
            elif task == "edges":
                targets[task] = torch.from_numpy(a["edges"][index].astype(np.float32))[None]
            elif task == "keypoints":
                targets[task] = torch.from_numpy(a["keypoints"][index].astype(np.float32))[None]
            elif task == "count":
                targets[task] = torch.tensor(int(a["count"][index]), dtype=torch.int64)
            else:
                column = ATTRIBUTE_NAMES.index(task[len("attr_"):])
                targets[task] = torch.tensor(float(a["attributes"][index, column]))
        return image, targets
