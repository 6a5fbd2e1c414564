"""Image augmentation for the samplers: the affine distortions of Koch et al. (2015), and
optionally a smooth elastic deformation (Simard et al. 2003) on top.

:class:`KochAffine` holds the ranges of the seven distortion parameters
(:data:`SANTORO_AFFINE`: the MANN reference implementation's rotation and shift) and the
elastic field's size; :func:`_koch_params` draws them from an episode's generator and
:func:`_affine_warp` applies them, so that an augmented pair batch stays a pure function of
``(seed, i)``.
numpy only; used by :class:`~metalearn_shared.episodes.PairSampler` and
:class:`~metalearn_shared.episodes.SequenceSampler`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["AUGMENTS", "KochAffine", "SANTORO_AFFINE", "augment_spec", "distort", "param_count"]


@dataclass(frozen=True)
class KochAffine:
    """Ranges of the affine distortion of Koch et al. (2015), Sec. 4.

    Each of the seven parameters is drawn uniformly from its range and applied with
    probability ``p``, otherwise left at identity. The transform maps an image about its
    centre by ``A = R(rotation) · Shear(shear_x, shear_y) · Scale(scale_x, scale_y)`` and then
    translates it; pixels are sampled bilinearly, zeros outside the image.

    Attributes:
        rotation_deg: maximum absolute rotation in degrees (θ ∈ [-10, 10]).
        shear: maximum absolute shear factor (ρx, ρy ∈ [-0.3, 0.3]).
        scale: ``(low, high)`` scale factors (sx, sy ∈ [0.8, 1.2]).
        translation: maximum absolute shift as a fraction of the image side; Koch's
            ±2 px at 105 × 105 is ``2 / 105``.
        p: probability of applying each parameter.
        elastic: root-mean-square length of an elastic displacement, as a fraction of the
            image side; 0 (the default) for none. Every image then gets its own field:
            Gaussian noise per pixel and axis, smoothed by a Gaussian of ``elastic_sigma``
            and scaled to this RMS, so that strokes bend without breaking. It is added to
            the output coordinates before the affine map, and the image is sampled once.
        elastic_sigma: the smoothing Gaussian's standard deviation, as a fraction of the
            side (larger: smoother, more global bends).
    """

    rotation_deg: float = 10.0
    shear: float = 0.3
    scale: tuple[float, float] = (0.8, 1.2)
    translation: float = 2.0 / 105.0
    p: float = 0.5
    elastic: float = 0.0
    elastic_sigma: float = 0.1

    def __post_init__(self) -> None:
        if not (self.elastic >= 0 and self.elastic_sigma > 0):
            raise ValueError(f"elastic must be >= 0 and elastic_sigma > 0 (fractions of the "
                             f"image side); got {self.elastic} and {self.elastic_sigma}.")


#: The per-image augmentation of the MANN reference implementation (the Theano
#: ``ntm-one-shot`` that matched Santoro et al. 2016): every image of an episode rotated by
#: its own angle in [-30°, 30°] and shifted by up to 10 px of the native 105 px side (here a
#: continuous shift of up to 10/105 of the side), no shear or scale, always applied.
SANTORO_AFFINE = KochAffine(
    rotation_deg=30.0, shear=0.0, scale=(1.0, 1.0), translation=10.0 / 105.0, p=1.0
)


#: Training augmentations by name (``metalearn train --augment``): per-image distortions of
#: every training episode; evaluation episodes are never distorted.
AUGMENTS: dict[str, KochAffine | None] = {
    "none": None,
    "koch": KochAffine(),
    "santoro": SANTORO_AFFINE,
    # Koch's affine distortion and a smooth bend of every stroke: displacements of 1.5 px RMS
    # at 28 px, correlated over 3 px (docs/results.md, issue 14).
    "elastic": KochAffine(elastic=1.5 / 28.0, elastic_sigma=3.0 / 28.0),
}


def _augment_ranges(augment: bool | KochAffine | None) -> KochAffine | None:
    """A sampler's ``augment`` argument as a :class:`KochAffine`, or ``None`` for none."""
    if augment is None or isinstance(augment, KochAffine):
        return augment
    if isinstance(augment, (bool, np.bool_)):
        return KochAffine() if augment else None
    raise TypeError(
        f"augment must be a bool or a KochAffine; found {type(augment).__name__} "
        f"({augment!r}). Pass True for Koch's defaults or KochAffine(...) for other ranges."
    )


def augment_spec(name: str) -> KochAffine | None:
    """The distortion ranges of a named augmentation (:data:`AUGMENTS`).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in AUGMENTS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of "
                         f"{', '.join(AUGMENTS)} (none = no distortion).")
    return AUGMENTS[name]


def param_count(spec: KochAffine, shape: tuple[int, int]) -> int:
    """Parameters per image that :func:`_koch_params` draws: the 7 affine ones, and with an
    elastic field its ``2 · H · W`` displacements."""
    return 7 + (2 * shape[0] * shape[1] if spec.elastic else 0)


@functools.lru_cache(maxsize=16)
def _gaussian_rows(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` Gaussian smoothing matrix, each row summing to 1 (so the border
    averages what lies inside the image); built once per size and sigma, not per episode."""
    d = np.arange(size, dtype=np.float64)
    g = np.exp(-0.5 * ((d[:, None] - d[None, :]) / sigma) ** 2)
    g = (g / g.sum(axis=1, keepdims=True)).astype(np.float32)
    g.setflags(write=False)  # shared by every caller
    return g


def _elastic_fields(rng: np.random.Generator, spec: KochAffine, n: tuple[int, ...],
                    shape: tuple[int, int]) -> np.ndarray:
    """``float32 (*n, 2·H·W)``: per image a smooth displacement field ``(dx, dy)`` in pixels
    whose root-mean-square length is ``spec.elastic`` of the side."""
    h, w = shape
    side = max(h, w)
    noise = rng.standard_normal((*n, 2, h, w), dtype=np.float32)
    field = _gaussian_rows(h, spec.elastic_sigma * side) @ noise @ _gaussian_rows(
        w, spec.elastic_sigma * side).T
    rms = np.sqrt(np.mean(np.sum(field**2, axis=-3), axis=(-2, -1), keepdims=True))[..., None, :, :]
    field *= np.float32(spec.elastic * side) / np.maximum(rms, np.float32(1e-12))
    return field.reshape(*n, 2 * h * w)


def _koch_params(
    rng: np.random.Generator, spec: KochAffine, n: tuple[int, ...], shape: tuple[int, int]
) -> np.ndarray:
    """``float32 (*n, P)`` distortion parameters: the affine ``(θ rad, ρx, ρy, sx, sy, tx px,
    ty px)``, then with an elastic field its ``(dx, dy)`` displacements (``P``:
    :func:`param_count`)."""
    h, w = shape
    u = rng.random((2, *n, 7))  # (values | switches, *n, 7)
    lo = np.array(
        [
            -np.deg2rad(spec.rotation_deg),
            -spec.shear,
            -spec.shear,
            spec.scale[0],
            spec.scale[0],
            -spec.translation * w,
            -spec.translation * h,
        ]
    )
    hi = np.array(
        [
            np.deg2rad(spec.rotation_deg),
            spec.shear,
            spec.shear,
            spec.scale[1],
            spec.scale[1],
            spec.translation * w,
            spec.translation * h,
        ]
    )
    identity = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    affine = np.where(u[1] < spec.p, lo + (hi - lo) * u[0], identity).astype(np.float32)
    if not spec.elastic:
        return affine
    return np.concatenate([affine, _elastic_fields(rng, spec, n, shape)], axis=-1)


def distort(images: np.ndarray, rng: np.random.Generator, spec: KochAffine) -> np.ndarray:
    """``float32 (N, H, W)`` images, each distorted by its own draw from ``spec`` out of
    ``rng`` (what test-time views and fine-tuning queries are made of)."""
    return _affine_warp(images, _koch_params(rng, spec, (len(images),), images.shape[-2:]))


def _affine_warp(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Warp each image by its own affine transform, bilinear, zeros outside.

    Args:
        images: ``float32 (..., H, W)``.
        params: ``float32 (..., P)`` from :func:`_koch_params`, the same leading shape.

    Returns:
        ``float32 (..., H, W)``: output pixel p shows input pixel ``A⁻¹(p + d(p) - c - t) + c``,
        with ``c`` the image centre and ``d`` the elastic displacement (0 without one).
    """
    lead = images.shape[:-2]
    images = images.reshape(-1, *images.shape[-2:])
    params = params.reshape(-1, params.shape[-1])
    n, h, w = images.shape
    if params.shape[1] not in (7, 7 + 2 * h * w):
        raise ValueError(f"_affine_warp: {params.shape[1]} parameters per image; expected 7 "
                         f"(affine) or {7 + 2 * h * w} (affine and a {h}×{w} elastic field).")
    theta, shx, shy, sx, sy, tx, ty = (params[:, j : j + 1] for j in range(7))  # each (n, 1)
    cos, sin = np.cos(theta), np.sin(theta)
    # A = R · Shear · Scale, then its closed-form 2×2 inverse.
    a00 = (cos - sin * shy) * sx
    a01 = (cos * shx - sin) * sy
    a10 = (sin + cos * shy) * sx
    a11 = (sin * shx + cos) * sy
    det = a00 * a11 - a01 * a10  # >= 0.8² · (1 - 0.3²) > 0 for Koch's ranges
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows, cols = np.divmod(np.arange(h * w, dtype=np.float32), np.float32(w))  # (H*W,)
    u = cols[None, :] - np.float32(cx) - tx  # (n, H*W)
    v = rows[None, :] - np.float32(cy) - ty
    if params.shape[1] > 7:  # the elastic field, dx then dy, each (n, H*W)
        u = u + params[:, 7 : 7 + h * w]
        v = v + params[:, 7 + h * w :]
    src_x = (a11 * u - a01 * v) / det + np.float32(cx)  # (n, H*W)
    src_y = (a00 * v - a10 * u) / det + np.float32(cy)
    x0 = np.floor(src_x)
    y0 = np.floor(src_y)
    fx = src_x - x0
    fy = src_y - y0
    # Pad by one zero pixel on every side; clip farther samples onto the zero border.
    padded = np.zeros((n, h + 2, w + 2), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(-1)
    # Indices in the narrowest integer type that holds them (int32 for any batch a sampler
    # draws), each row offset computed once: the gathers dominate this function.
    itype = np.int32 if flat.size < 2**31 else np.int64
    base = (np.arange(n, dtype=itype) * itype((h + 2) * (w + 2)))[:, None]  # (n, 1)
    xc, yc = x0.astype(itype), y0.astype(itype)
    xi = np.clip(xc + 1, 0, w + 1)
    xj = np.clip(xc + 2, 0, w + 1)
    ri = np.clip(yc + 1, 0, h + 1) * itype(w + 2) + base  # (n, H*W) row starts
    rj = np.clip(yc + 2, 0, h + 1) * itype(w + 2) + base
    top = np.take(flat, ri + xi) * (1 - fx) + np.take(flat, ri + xj) * fx
    bottom = np.take(flat, rj + xi) * (1 - fx) + np.take(flat, rj + xj) * fx
    out = top * (1 - fy) + bottom * fy  # (n, H*W)
    return out.reshape(*lead, h, w).astype(np.float32, copy=False)
