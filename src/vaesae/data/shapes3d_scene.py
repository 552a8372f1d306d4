"""Procedural Shapes3D scene: geometry templates and colour composition.

A Shapes3D image is a room corner (floor, walls, sky) with one object in the middle. Its six
factors split into three hues (floor, wall, object) and three geometric factors (scale, shape,
orientation). Colour enters linearly, so each of the 8 x 4 x 15 geometries is rendered once into a
*template* of four per-pixel weights::

    W[0] floor weight, W[1] wall weight, W[2] object weight, W[3] sky coverage

where a surface's weight is (coverage fraction of the pixel) x (its shading, shadow included). An
image is then ``clip(sum_s W[s] * hsv(hue_s, 1, 1) + W[3] * SKY_RGB, 0, 1)``: a gather and a
multiply per batch (:func:`compose`), no re-render.

Geometry (right-handed world, y up, lengths in scene units): the object stands on the floor
``y = 0``, centred on the vertical axis through the origin; the walls are the planes
``x = +-room_half_width`` and ``z = +-room_half_depth`` up to ``wall_height``; everything else is
sky. The camera's view axis passes through the point ``(0, cam_height, 0)`` on the object's axis,
``cam_distance`` away, tilted by ``pitch_deg``; the orientation factor swings the camera around
the vertical axis by ``azimuth_per_degree * orientation`` degrees, so the walls' corner crosses
the image while the object stays centred. Shading is Lambertian: an ambient term, a key light
and a head light along the view axis. The floor's and walls' key light is a spot light above and
left of the object (its cone gives the floor's gradient) with a small disc, so the object's
shadow has a soft edge; the object's key light is directional. Every constant below was fitted to
real Shapes3D frames (``vaesae.data.reference``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SCENE_VERSION = "2"

FLOOR, WALL, OBJECT, SKY = 0, 1, 2, 3
CUBE, CYLINDER, SPHERE, CAPSULE = 0, 1, 2, 3

SKY_RGB = np.array([153.0, 226.0, 249.0]) / 255.0
"""Sky colour (RGB in [0, 1]): the median of the top rows of the real frames."""


@dataclass(frozen=True)
class SceneParams:
    """Camera, room, object and light constants (scene units, degrees), fitted to real frames.

    Fit (103 real frames, ``vaesae.data.reference``): camera, room and object sizes by
    Nelder-Mead on the per-pixel overlap of rendered coverage with the real frames' surface
    masks (pixels classed by hue; sky by low saturation), the orientation of the GIF's first 15
    frames known from its sweep and the other factors from the best match; then the lights'
    positions by Nelder-Mead on the image error, the gains (ambient, key, head per surface) by
    least squares on the unclipped channels inside it. The room's half depth sets the unit.
    """

    cam_distance: float = 1.5070
    cam_height: float = 0.3918
    pitch_deg: float = -0.7848  # negative: looking slightly down
    fov_deg: float = 43.2715
    # Camera yaw per degree of the orientation factor; negative: at -30 the camera stands right
    # of the back wall's normal, so the right-hand corner shows.
    azimuth_per_degree: float = -1.0219
    room_half_depth: float = 2.0000
    room_half_width: float = 1.8934
    wall_height: float = 1.0248
    # Object sizes at scale 1 (multiplied by the scale factor): half extents / radii.
    cube_half: float = 0.1809
    cylinder_radius: float = 0.1861
    cylinder_half_height: float = 0.1894
    sphere_radius: float = 0.2239
    capsule_radius: float = 0.1640
    capsule_half_length: float = 0.1767
    # Spot light of floor and walls: position, aim point, cosine falloff exponent, disc radius.
    light_pos: tuple[float, float, float] = (-0.6093, 3.1249, 0.2105)
    light_aim: tuple[float, float, float] = (-0.9868, 0.0000, -0.0093)
    spot_exponent: float = 3.3971
    light_radius: float = 0.1499
    # Directional key light of the object (towards the light, world axes).
    object_light_dir: tuple[float, float, float] = (-0.3106, 0.9489, 0.0561)
    # Per surface (floor, wall, object): ambient, key-light and head-light gains.
    ambient: tuple[float, float, float] = (0.3354, 0.3576, 0.3670)
    key_gain: tuple[float, float, float] = (0.8625, 0.5536, 0.7159)
    head_gain: tuple[float, float, float] = (0.0046, 0.5534, 0.5828)


SCENE = SceneParams()

_EPS = 1e-6


def _camera(scene: SceneParams, orientation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and camera-to-world rotation (3, 3); camera axes x right, y up, z view."""
    pitch = np.radians(scene.pitch_deg)
    yaw = np.radians(scene.azimuth_per_degree * orientation_deg)
    # Positive pitch tilts the view up.
    tilt = np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(pitch), np.sin(pitch)], [0.0, -np.sin(pitch), np.cos(pitch)]]
    )
    turn = np.array(
        [[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0], [-np.sin(yaw), 0.0, np.cos(yaw)]]
    )
    rot = turn @ tilt
    target = np.array([0.0, scene.cam_height, 0.0])
    return target - scene.cam_distance * rot[:, 2], rot


def _pixel_rays(scene: SceneParams, rot: np.ndarray, size: int, supersample: int) -> np.ndarray:
    """Unit ray directions (n*n, 3), n = size*supersample, row-major from the top-left sample.

    Samples sit at the centres of an n x n grid over the image square; the image plane spans
    ``+-tan(fov/2)`` at unit depth in both axes (square pixels).
    """
    n = size * supersample
    half = np.tan(np.radians(scene.fov_deg) / 2.0)
    c = ((np.arange(n) + 0.5) / n * 2.0 - 1.0) * half
    u, v = np.meshgrid(c, -c)
    d = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3) @ rot.T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _hit_sphere(o: np.ndarray, d: np.ndarray, centre: np.ndarray, r: float) -> np.ndarray:
    """Nearest positive t with |o + t d - centre| = r (d unit), inf on a miss."""
    oc = o - centre
    b = np.sum(d * oc, axis=-1)
    disc = b * b - (np.sum(oc * oc, axis=-1) - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _hit_tube(o: np.ndarray, d: np.ndarray, r: float, y0: float, y1: float) -> np.ndarray:
    """Nearest positive t on the side of the vertical cylinder x^2 + z^2 = r^2, y0 <= y <= y1."""
    ox, oz = o[..., 0], o[..., 2]
    a = np.maximum(d[:, 0] ** 2 + d[:, 2] ** 2, 1e-12)
    b = ox * d[:, 0] + oz * d[:, 2]
    disc = b * b - a * (ox * ox + oz * oz - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    y = o[..., 1] + t * d[:, 1]
    return np.where((disc >= 0) & (t > _EPS) & (y >= y0) & (y <= y1), t, np.inf)


def _hit_disc(o: np.ndarray, d: np.ndarray, r: float, y: float) -> np.ndarray:
    """Positive t on the horizontal disc of radius r at height y around the vertical axis."""
    dy = np.where(np.abs(d[:, 1]) > 1e-12, d[:, 1], 1e-12)
    t = (y - o[..., 1]) / dy
    px = o[..., 0] + t * d[:, 0]
    pz = o[..., 2] + t * d[:, 2]
    return np.where((t > _EPS) & (px * px + pz * pz <= r * r), t, np.inf)


def _hit_box(o: np.ndarray, d: np.ndarray, half: float) -> np.ndarray:
    """Nearest positive t on the cube [-half, half] x [0, 2 half] x [-half, half] (slab test)."""
    lo = np.array([-half, 0.0, -half])
    hi = np.array([half, 2.0 * half, half])
    safe = np.where(np.abs(d) > 1e-12, d, 1e-12)
    t1 = (lo - o) / safe
    t2 = (hi - o) / safe
    near = np.minimum(t1, t2).max(axis=1)
    far = np.maximum(t1, t2).min(axis=1)
    return np.where((near <= far) & (near > _EPS), near, np.inf)


def _object_sizes(scene: SceneParams, shape: int, scale: float) -> tuple[float, float]:
    """(radius or half width, half height of the straight part) of the scaled object."""
    if shape == CUBE:
        return scene.cube_half * scale, scene.cube_half * scale
    if shape == CYLINDER:
        return scene.cylinder_radius * scale, scene.cylinder_half_height * scale
    if shape == SPHERE:
        return scene.sphere_radius * scale, 0.0
    if shape == CAPSULE:
        return scene.capsule_radius * scale, scene.capsule_half_length * scale
    raise ValueError(f"shape must be 0..3 (cube, cylinder, sphere, capsule), got {shape}")


def _hit_object(o: np.ndarray, d: np.ndarray, shape: int, r: float, h: float) -> np.ndarray:
    """Nearest positive t on the object resting on the floor (o: (3,) or (N, 3), d: (N, 3))."""
    if shape == CUBE:
        return _hit_box(o, d, r)
    if shape == CYLINDER:
        return np.minimum(_hit_tube(o, d, r, 0.0, 2.0 * h), _hit_disc(o, d, r, 2.0 * h))
    if shape == SPHERE:
        return _hit_sphere(o, d, np.array([0.0, r, 0.0]), r)
    # Capsule: a tube of half length h between two hemispheres of radius r.
    return np.minimum.reduce(
        [
            _hit_tube(o, d, r, r, r + 2.0 * h),
            _hit_sphere(o, d, np.array([0.0, r, 0.0]), r),
            _hit_sphere(o, d, np.array([0.0, r + 2.0 * h, 0.0]), r),
        ]
    )


def _object_normals(p: np.ndarray, shape: int, r: float, h: float) -> np.ndarray:
    """Outward unit normals at surface points p (N, 3) of the object."""
    if shape == CUBE:
        q = p - np.array([0.0, r, 0.0])
        n = np.zeros_like(p)
        axis = np.argmax(np.abs(q), axis=1)
        rows = np.arange(len(p))
        n[rows, axis] = np.sign(q[rows, axis])
        return n
    if shape == CYLINDER:
        n = np.stack([p[:, 0], np.zeros(len(p)), p[:, 2]], axis=1)
        n[p[:, 1] >= 2.0 * h - 1e-6] = (0.0, 1.0, 0.0)
    elif shape == SPHERE:
        n = p - np.array([0.0, r, 0.0])
    else:
        # Nearest point on the capsule's axis segment.
        n = p - np.stack([np.zeros(len(p)), np.clip(p[:, 1], r, r + 2.0 * h), np.zeros(len(p))], 1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _spot_irradiance(scene: SceneParams, p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Spot-light term max(0, n.l) * max(0, -l.a)^exponent at points p with normals n (N, 3).

    l is the unit vector from the point to the light, a the unit spot axis (light to aim point).
    """
    light = np.asarray(scene.light_pos)
    axis = np.asarray(scene.light_aim) - light
    axis = axis / np.linalg.norm(axis)
    lvec = light - p
    lvec = lvec / np.linalg.norm(lvec, axis=1, keepdims=True)
    lambert = np.clip(np.sum(n * lvec, axis=1), 0.0, None)
    return lambert * np.clip(-(lvec @ axis), 0.0, None) ** scene.spot_exponent


def _light_points(scene: SceneParams, count: int) -> np.ndarray:
    """``count`` points (count, 3) spread evenly over the light's horizontal disc.

    A golden-angle spiral: point k sits at radius ``light_radius * sqrt((k + 0.5) / count)``
    and angle ``k * pi * (3 - sqrt(5))`` around ``light_pos``.
    """
    k = np.arange(count)
    rho = scene.light_radius * np.sqrt((k + 0.5) / count)
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    offsets = np.stack([rho * np.cos(phi), np.zeros(count), rho * np.sin(phi)], axis=1)
    return np.asarray(scene.light_pos) + offsets


def _light_visibility(
    p: np.ndarray, lights: np.ndarray, shape: int, r: float, h: float
) -> np.ndarray:
    """1.0 where the segment from point p[i] to light point lights[i] misses the object, else 0.

    Only segments passing within the object's bounding sphere are traced.
    """
    seg = lights - p
    length = np.linalg.norm(seg, axis=1)
    u = seg / length[:, None]
    bound_c = np.array([0.0, r + h, 0.0])
    along = np.clip(np.sum((bound_c - p) * u, axis=1), 0.0, length)
    near = np.linalg.norm(p + along[:, None] * u - bound_c, axis=1) < np.hypot(r, r + h) + 1e-6
    blocked = np.zeros(len(p), dtype=bool)
    # Start just off the surface so the ray does not re-hit it.
    blocked[near] = _hit_object(p[near] + 1e-5 * u[near], u[near], shape, r, h) < length[near]
    return (~blocked).astype(float)


def _render_terms(
    scale: float,
    shape: int,
    orientation_deg: float,
    size: int,
    supersample: int,
    scene: SceneParams,
) -> np.ndarray:
    """Lighting terms of one geometry, float64 [3, 4, size, size]: term x surface x pixel.

    Term 0 is coverage (the ambient term), term 1 the key light, term 2 the head light
    max(0, -n.f) with f the camera's view axis; each is the mean over the pixel's rays of
    ``[ray sees surface] * term``. The key light of floor and walls is the spot light S * V:
    S from :func:`_spot_irradiance`, V = 1 where the ray's point of the light's disc
    (:func:`_light_points`, one per ray of the pixel) is seen past the object, else 0 (the
    object's shadow, soft at its edge). The object's key light is the directional
    max(0, n.object_light_dir). The sky has coverage only.
    """
    centre, rot = _camera(scene, orientation_deg)
    d = _pixel_rays(scene, rot, size, supersample)
    r, h = _object_sizes(scene, shape, scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[:, 1] < 0, -centre[1] / d[:, 1], np.inf)
        t_x = (np.sign(d[:, 0]) * scene.room_half_width - centre[0]) / d[:, 0]
        t_z = (np.sign(d[:, 2]) * scene.room_half_depth - centre[2]) / d[:, 2]
    t_x = np.where(np.isfinite(t_x) & (t_x > 0), t_x, np.inf)
    t_z = np.where(np.isfinite(t_z) & (t_z > 0), t_z, np.inf)
    t_wall = np.minimum(t_x, t_z)
    y_wall = centre[1] + t_wall * d[:, 1]
    t_wall = np.where((y_wall >= 0) & (y_wall <= scene.wall_height), t_wall, np.inf)
    t_obj = _hit_object(centre, d, shape, r, h)

    t_all = np.stack([t_floor, t_wall, t_obj], axis=1)
    surface = np.argmin(t_all, axis=1)
    t_hit = t_all[np.arange(len(d)), surface]
    surface = np.where(np.isfinite(t_hit), surface, SKY)

    hit = surface != SKY
    p = centre + t_hit[hit, None] * d[hit]
    s = surface[hit]
    n = np.zeros_like(p)
    n[s == FLOOR] = (0.0, 1.0, 0.0)
    on_wall = s == WALL
    on_x_wall = on_wall & (t_x[hit] <= t_z[hit])
    n[on_x_wall, 0] = -np.sign(d[hit][on_x_wall, 0])
    n[on_wall & ~on_x_wall, 2] = -np.sign(d[hit][on_wall & ~on_x_wall, 2])
    on_obj = s == OBJECT
    n[on_obj] = _object_normals(p[on_obj], shape, r, h)

    # Room surfaces take the spot light and the object's shadow; the object its own key light.
    spot = np.empty(len(p))
    spot[~on_obj] = _spot_irradiance(scene, p[~on_obj], n[~on_obj])
    # Each of a pixel's rays tests its shadow against its own point of the light's disc, so the
    # pixel averages a soft shadow (penumbra) at the cost of one shadow ray per ray.
    n_side = size * supersample
    ray_row, ray_col = np.divmod(np.flatnonzero(hit)[~on_obj], n_side)
    sub = (ray_row % supersample) * supersample + ray_col % supersample
    lights = _light_points(scene, supersample * supersample)[sub]
    spot[~on_obj] *= _light_visibility(p[~on_obj], lights, shape, r, h)
    key = np.asarray(scene.object_light_dir) / np.linalg.norm(scene.object_light_dir)
    spot[on_obj] = np.clip(n[on_obj] @ key, 0.0, None)
    head = np.clip(-(n @ rot[:, 2]), 0.0, None)

    n_rays = len(d)
    terms = np.zeros((3, 4, n_rays))
    terms[0, surface, np.arange(n_rays)] = 1.0
    rays_hit = np.flatnonzero(hit)
    terms[1, s, rays_hit] = spot
    terms[2, s, rays_hit] = head
    return terms.reshape(3, 4, size, supersample, size, supersample).mean(axis=(3, 5))


def render_geometry(
    scale: float,
    shape: int,
    orientation_deg: float,
    size: int = 64,
    supersample: int = 4,
    *,
    shaded: bool = True,
    scene: SceneParams = SCENE,
) -> np.ndarray:
    """Per-pixel surface weights of one Shapes3D geometry, float32 [4, size, size].

    Casts ``supersample**2`` rays per pixel (pinhole camera, :class:`SceneParams`) and
    intersects them analytically with the floor, the walls and the object; rays that miss all
    three see the sky. Channel s (floor, wall, object) is the mean over the pixel's rays of
    ``[ray sees s] * shade_s``, with ``shade_s = ambient_s + key_gain_s * K + head_gain_s * H``:
    K the key light (for floor and walls a spot light times the object's soft shadow, for the
    object a directional light) and H the head light, as in :func:`_render_terms`. The sky
    channel is plain coverage. With ``shaded=False`` every channel is plain coverage, so
    the four channels sum to 1 in every pixel.

    scale: the factor value (0.75..1.25), multiplies the object's size; shape: 0 cube,
    1 cylinder, 2 sphere, 3 capsule; orientation_deg: the factor value (-30..30 degrees).
    """
    terms = _render_terms(scale, shape, orientation_deg, size, supersample, scene)
    if not shaded:
        return terms[0].astype(np.float32)
    gains = np.zeros((3, 4))
    gains[:, :3] = (scene.ambient, scene.key_gain, scene.head_gain)
    gains[0, SKY] = 1.0
    return np.einsum("ts,tshw->shw", gains, terms).astype(np.float32)


def build_templates(
    factor_values_scale: np.ndarray,
    factor_values_orientation: np.ndarray,
    size: int = 64,
    *,
    supersample: int = 4,
    scene: SceneParams = SCENE,
) -> np.ndarray:
    """All geometry templates, float32 [n_scale, 4 shapes, n_orientation, 4 surfaces, size, size].

    Entry [i, k, j] is :func:`render_geometry` of scale ``factor_values_scale[i]``, shape k and
    orientation ``factor_values_orientation[j]`` (degrees).
    """
    scales = np.asarray(factor_values_scale, dtype=float)
    orientations = np.asarray(factor_values_orientation, dtype=float)
    out = np.empty((len(scales), 4, len(orientations), 4, size, size), dtype=np.float32)
    for i, scale in enumerate(scales):
        for shape in range(4):
            for j, orientation in enumerate(orientations):
                out[i, shape, j] = render_geometry(
                    scale, shape, orientation, size, supersample, scene=scene
                )
    return out


def hue_to_rgb(hues: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB at full saturation and value: [...] hue fractions in [0, 1) -> [..., 3].

    Piecewise-linear form: r = clip(|6h - 3| - 1), g = clip(2 - |6h - 2|), b = clip(2 - |6h - 4|),
    each clipped to [0, 1].
    """
    h6 = torch.remainder(hues, 1.0) * 6.0
    r = (h6 - 3.0).abs() - 1.0
    g = 2.0 - (h6 - 2.0).abs()
    b = 2.0 - (h6 - 4.0).abs()
    return torch.stack([r, g, b], dim=-1).clamp(0.0, 1.0)


def compose(weights: torch.Tensor, hues: torch.Tensor) -> torch.Tensor:
    """Shapes3D images from templates: weights [N, 4, H, W], hues [N, 3] -> RGB [N, 3, H, W].

    ``out[n, c] = sum_s weights[n, s] * rgb(hues[n, s])[c] + weights[n, 3] * SKY_RGB[c]``,
    clipped to [0, 1], with s over (floor, wall, object) and rgb the full-saturation HSV colour
    of the hue fraction (:func:`hue_to_rgb`). One batched matrix product; the result has the
    dtype and device of ``weights``.
    """
    n, _, height, width = weights.shape
    colours = hue_to_rgb(hues.to(device=weights.device, dtype=weights.dtype))  # [N, surface, rgb]
    flat = weights[:, :3].reshape(n, 3, height * width)
    out = torch.bmm(colours.transpose(1, 2), flat).reshape(n, 3, height, width)
    sky = torch.as_tensor(SKY_RGB, dtype=weights.dtype, device=weights.device)
    out = out + weights[:, 3:4] * sky.view(1, 3, 1, 1)
    return out.clamp_(0.0, 1.0)
