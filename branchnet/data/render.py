"""A small vectorised ray caster for the ``scenes`` dataset.

Scenes: up to M primitives (spheres, boxes rotated about the vertical axis, upright
cylinders) standing on a ground plane ``y = 0`` in front of a wall ``z = WALL_Z``, seen
by a pinhole camera and lit by one directional light with cast shadows. One primary
ray per pixel through the pixel centre gives every label exactly:

* ``surface`` id per pixel: 0 ground, 1 wall, 2 + k object slot k;
* ``depth``: the z-buffer, i.e. distance along the optical axis (world units);
* ``normals``: unit surface normal in camera coordinates (x right, y up, z towards the
  viewer, so visible surfaces have n_z > 0);
* ``crease`` helpers: the face id per pixel (box faces, cylinder side/cap).

Everything is batched over B scenes with numpy; one call renders B images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WALL_Z = 6.5
EPS = 1e-4
SPHERE, BOX, CYLINDER = 0, 1, 2


@dataclass
class SceneBatch:
    """Parameters of B scenes with up to M object slots (``present`` marks used slots).

    Shapes: ``eye``, ``target`` (B, 3); ``fov`` (B,) radians; ``kind`` (B, M) int
    (SPHERE/BOX/CYLINDER); ``center`` (B, M, 3) object centre; ``size`` (B, M, 3): sphere
    (r, r, r), box half-extents (hx, hy, hz), cylinder (r, height, r); ``angle`` (B, M)
    box rotation about y; ``light`` (B, 3) unit vector towards the light.
    """

    eye: np.ndarray
    target: np.ndarray
    fov: np.ndarray
    present: np.ndarray
    kind: np.ndarray
    center: np.ndarray
    size: np.ndarray
    angle: np.ndarray
    light: np.ndarray


@dataclass
class Hits:
    """Per-pixel results, each (B, P) or (B, P, 3) with P = H * W."""

    t: np.ndarray          # ray parameter of the hit
    surface: np.ndarray    # 0 ground, 1 wall, 2 + k object slot k
    face: np.ndarray       # face id within the surface (for creases)
    normal: np.ndarray     # world-space unit normal
    point: np.ndarray      # world-space hit point
    local: np.ndarray      # object-local coordinates of the hit (texture space)
    depth: np.ndarray      # z-buffer (distance along the optical axis)
    normal_cam: np.ndarray  # camera-space unit normal
    shadow: np.ndarray     # True where the light is blocked by an object


def camera_basis(eye: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right, up and forward unit vectors (B, 3) of look-at cameras (world up is +y)."""
    forward = target - eye
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    world_up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, world_up)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    up = np.cross(right, forward)
    return right, up, forward


def primary_rays(scenes: SceneBatch, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins (B, 1, 3) and unit directions (B, P, 3) through each pixel centre."""
    right, up, forward = camera_basis(scenes.eye, scenes.target)
    tan = np.tan(scenes.fov / 2.0)[:, None]
    aspect = width / height
    xs = (2.0 * (np.arange(width) + 0.5) / width - 1.0)
    ys = (1.0 - 2.0 * (np.arange(height) + 0.5) / height)
    px = np.tile(xs, height)[None, :] * tan * aspect          # (B, P)
    py = np.repeat(ys, width)[None, :] * tan
    d = forward[:, None, :] + px[..., None] * right[:, None, :] + py[..., None] * up[:, None, :]
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return scenes.eye[:, None, :], d


def intersect_object(o: np.ndarray, d: np.ndarray, scenes: SceneBatch, m: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hits of rays (o (B,1|P,3), d (B,P,3)) with object slot ``m`` of every scene.

    Rays are first culled against the object's bounding sphere, so the exact
    intersection runs only on the few rays that can hit it. Returns ``t`` (B, P) (inf
    where missed), world normal (B, P, 3), face id (B, P) and object-local hit
    coordinates (B, P, 3) (texture space).
    """
    shape = d.shape[:2]
    t_out = np.full(shape, np.inf)
    normal_out = np.zeros(d.shape)
    face_out = np.zeros(shape, dtype=np.int8)
    local_out = np.zeros(d.shape)

    kind_all = scenes.kind[:, m]
    size_all = scenes.size[:, m]
    bound = np.where(kind_all == SPHERE, size_all[:, 0],
                     np.where(kind_all == BOX, np.linalg.norm(size_all, axis=-1),
                              np.hypot(size_all[:, 0], size_all[:, 1] / 2.0))) * 1.001
    oc_all = o - scenes.center[:, m][:, None, :]
    b = np.sum(d * oc_all, -1)
    disc = b * b - (np.sum(oc_all * oc_all, -1) - bound[:, None] ** 2)
    candidate = (disc > 0) & (-b + np.sqrt(np.maximum(disc, 0.0)) > EPS) & scenes.present[:, m][:, None]
    bi, pi = np.nonzero(candidate)
    if bi.size == 0:
        return t_out, normal_out, face_out, local_out

    kind = kind_all[bi]
    size = size_all[bi]
    oc = oc_all[bi, pi if oc_all.shape[1] > 1 else 0]
    cos, sin = np.cos(scenes.angle[bi, m]), np.sin(scenes.angle[bi, m])
    # into the object's frame (rotation about y by -angle)
    ol = np.stack([cos * oc[:, 0] - sin * oc[:, 2], oc[:, 1], sin * oc[:, 0] + cos * oc[:, 2]], -1)
    dw = d[bi, pi]
    dl = np.stack([cos * dw[:, 0] - sin * dw[:, 2], dw[:, 1], sin * dw[:, 0] + cos * dw[:, 2]], -1)
    t = np.full(bi.shape, np.inf)
    normal_l = np.zeros(dl.shape)
    face = np.zeros(bi.shape, dtype=np.int8)

    # sphere
    r = size[:, 0]
    bs = np.sum(dl * ol, -1)
    disc = bs * bs - (np.sum(ol * ol, -1) - r ** 2)
    ts = -bs - np.sqrt(np.maximum(disc, 0.0))
    hit = (kind == SPHERE) & (disc > 0) & (ts > EPS)
    t = np.where(hit, ts, t)
    normal_l = np.where(hit[:, None], (ol + ts[:, None] * dl) / r[:, None], normal_l)

    # box: slab method in the local frame
    safe = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
    t1 = (-size - ol) / safe
    t2 = (size - ol) / safe
    tnear = np.minimum(t1, t2)
    t_in = tnear.max(-1)
    t_far = np.maximum(t1, t2).min(-1)
    axis = tnear.argmax(-1)
    hit = (kind == BOX) & (t_far >= t_in) & (t_in > EPS)
    t = np.where(hit, t_in, t)
    rows = np.arange(bi.size)
    sign = -np.sign(dl[rows, axis])
    box_normal = np.zeros(dl.shape)
    box_normal[rows, axis] = sign
    normal_l = np.where(hit[:, None], box_normal, normal_l)
    face = np.where(hit, (axis * 2 + (sign > 0)).astype(np.int8), face)

    # upright cylinder: side x^2 + z^2 = r^2 for |y| <= h/2, plus the top cap y = h/2
    half = size[:, 1] / 2.0
    a = dl[:, 0] ** 2 + dl[:, 2] ** 2
    bc = dl[:, 0] * ol[:, 0] + dl[:, 2] * ol[:, 2]
    disc = bc * bc - a * (ol[:, 0] ** 2 + ol[:, 2] ** 2 - r ** 2)
    t_side = (-bc - np.sqrt(np.maximum(disc, 0.0))) / np.where(a < 1e-12, 1e-12, a)
    side = (disc > 0) & (t_side > EPS) & (np.abs(ol[:, 1] + t_side * dl[:, 1]) <= half)
    t_cap = (half - ol[:, 1]) / np.where(np.abs(dl[:, 1]) < 1e-12, -1e-12, dl[:, 1])
    cap_point = ol + t_cap[:, None] * dl
    cap = (t_cap > EPS) & (cap_point[:, 0] ** 2 + cap_point[:, 2] ** 2 <= r ** 2)
    t_cyl = np.where(side, t_side, np.inf)
    is_cap = cap & (t_cap < t_cyl)
    t_cyl = np.where(is_cap, t_cap, t_cyl)
    hit = (kind == CYLINDER) & np.isfinite(t_cyl)
    t = np.where(hit, t_cyl, t)
    side_point = ol + t_side[:, None] * dl
    side_normal = np.stack([side_point[:, 0], np.zeros(bi.shape), side_point[:, 2]], -1) / r[:, None]
    cyl_normal = np.where(is_cap[:, None], np.array([0.0, 1.0, 0.0]), side_normal)
    normal_l = np.where(hit[:, None], cyl_normal, normal_l)
    face = np.where(hit, is_cap.astype(np.int8), face)

    # back to the world frame (rotation about y by +angle)
    normal_w = np.stack([cos * normal_l[:, 0] + sin * normal_l[:, 2], normal_l[:, 1],
                         -sin * normal_l[:, 0] + cos * normal_l[:, 2]], -1)
    t_out[bi, pi] = t
    normal_out[bi, pi] = normal_w
    face_out[bi, pi] = face
    local_out[bi, pi] = ol + np.where(np.isfinite(t), t, 0.0)[:, None] * dl
    return t_out, normal_out, face_out, local_out


def cast(scenes: SceneBatch, height: int, width: int) -> Hits:
    """Render B scenes at ``height`` x ``width``: nearest hit, ids, depth, normals, shadows."""
    o, d = primary_rays(scenes, height, width)
    shape = d.shape[:2]
    # ground y = 0 (rays going down) and wall z = WALL_Z (rays going forward)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(d[..., 1] < -1e-9, -o[..., 1] / d[..., 1], np.inf)
        t_wall = np.where(d[..., 2] > 1e-9, (WALL_Z - o[..., 2]) / d[..., 2], np.inf)
    wall_first = t_wall < t_ground
    t = np.where(wall_first, t_wall, t_ground)
    surface = np.where(wall_first, 1, 0).astype(np.int16)
    normal = np.where(wall_first[..., None], np.array([0.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0]))
    normal = np.broadcast_to(normal, d.shape).copy()
    face = np.zeros(shape, dtype=np.int8)
    point0 = o + t[..., None] * d
    local = point0.copy()
    for m in range(scenes.kind.shape[1]):
        tm, nm, fm, lm = intersect_object(o, d, scenes, m)
        closer = tm < t
        t = np.where(closer, tm, t)
        surface = np.where(closer, 2 + m, surface)
        normal = np.where(closer[..., None], nm, normal)
        face = np.where(closer, fm, face)
        local = np.where(closer[..., None], lm, local)
    point = o + t[..., None] * d
    right, up, forward = camera_basis(scenes.eye, scenes.target)
    depth = t * np.einsum("bpi,bi->bp", d, forward)
    normal_cam = np.stack([np.einsum("bpi,bi->bp", normal, right),
                           np.einsum("bpi,bi->bp", normal, up),
                           -np.einsum("bpi,bi->bp", normal, forward)], -1)
    # shadow rays towards the light, blocked by any object
    origin = point + 1e-3 * normal
    light = np.broadcast_to(scenes.light[:, None, :], d.shape)
    shadow = np.zeros(shape, dtype=bool)
    for m in range(scenes.kind.shape[1]):
        ts, _, _, _ = intersect_object(origin, light, scenes, m)
        shadow |= np.isfinite(ts) & (surface != 2 + m)
    return Hits(t=t, surface=surface, face=face, normal=normal, point=point, local=local,
                depth=depth, normal_cam=normal_cam, shadow=shadow)


def project(points: np.ndarray, eye: np.ndarray, target: np.ndarray, fov: float, height: int, width: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (col, row) and depth of world ``points`` (Q, 3) for one camera.

    Pixel centres are at integer + 0.5, matching :func:`primary_rays`.
    """
    right, up, forward = camera_basis(eye[None], target[None])
    rel = points - eye[None]
    z = rel @ forward[0]
    x = rel @ right[0]
    y = rel @ up[0]
    tan = np.tan(fov / 2.0)
    aspect = width / height
    with np.errstate(divide="ignore", invalid="ignore"):
        col = (x / (z * tan * aspect) + 1.0) * width / 2.0
        row = (1.0 - y / (z * tan)) * height / 2.0
    return col, row, z
