"""Fréchet Video Distance (Unterthiner et al., 2018) with the TF-Hub I3D convention.

The convention is that of the reference TF code released with "Towards
Accurate Generative Models of Video: A New Metric & Challenges", which most
published FVD numbers come from:

- uint8 frames are resized to 224x224 with TF1's `tf.image.resize_bilinear`
  (align_corners=False, half_pixel_centers=False: source pixel = i * in/out,
  no antialiasing), kept in float, and scaled by `2 * x / 255 - 1`;
- every frame of the clip goes in (at least 9, the fewest for which I3D's
  final 2x7x7 pool is whole);
- the embedding is the 400 Kinetics logits of TF-Hub's `i3d-kinetics-400`
  (logits averaged over time, before the softmax);
- statistics are the mean and the unbiased (N - 1) covariance, and the
  Fréchet distance is computed in float64.

`embedding="features"` (the 1024-d average pool after Mixed_5c, averaged over
time) and `frames=N` (the first N frames of every clip) select the variants
other codebases use.

`protocol="styleganv"` reproduces the FVD of StyleGAN-V (Skorokhodov et al., CVPR
2022), which many video-generation papers report as `fvd2048_16f` or
`fvd2048_128f`; `STYLEGANV` below lists each of its choices with the file and line
of universome/stylegan-v (commit 3fecd69c602e1cda204357201461c0fb0a634909) it
comes from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from i3d_jax.arrays import load_npz, npz_keys
from i3d_jax.atomic_file import write_atomically
from i3d_jax.fvd_protocols import (  # noqa: F401  (re-exported: the FVD API is here)
    FVD_RESOLUTION,
    PROTOCOLS,
    STYLEGANV,
    TF,
    Protocol,
    clip_start,
    get_protocol,
    preprocess,
    resize_bilinear_half_pixel,
    resize_bilinear_tf1,
)

EMBEDDINGS = ("logits", "features")
# I3D endpoint that each embedding is read from (both are then averaged over time).
EMBEDDING_ENDPOINTS = {"logits": "Logits", "features": "AvgPool"}
# Conv3d_1a and the max-pools before Mixed_5c divide time by 8; the final
# average pool wants 2 steps of Mixed_5c, so 9 frames is the least that fills it.
MIN_FRAMES = 9
DEFAULT_BATCH_SIZE = 16  # as the TF code


# ---------------------------------------------------------------------------
# Statistics and the Fréchet distance (NumPy, float64)


def statistics(embeddings, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D] divided by N - ddof) of embeddings [N, D], in
    float64: ddof 1, the unbiased covariance (TF-GAN, the TF FVD code); 0, the
    biased one (StyleGAN-V)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [num_videos, dim], got shape {embeddings.shape}")
    if embeddings.shape[0] < 2:
        raise ValueError(
            f"a covariance needs at least 2 videos, got {embeddings.shape[0]}"
        )
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings hold NaN or Inf")
    mu = embeddings.mean(axis=0)
    sigma = np.cov(embeddings, rowvar=False, ddof=ddof)
    return mu, sigma


def kernel_distance(real_embeddings, fake_embeddings) -> float:
    """KVD: the unbiased estimate of the squared MMD between two sets of embeddings
    [N, D] with the polynomial kernel k(x, y) = (x . y / D + 1) ** 3, over the whole
    sets (as TATS reports KVD, tats/fvd/fvd.py:103-115, and StyleGAN-V's KID per
    subset, src/metrics/kernel_inception_distance.py:40-42; TF-GAN's
    kernel_classifier_distance gives the same for sets of up to 1,024, and above
    that averages blocks of 1,024). In float64, not scaled by 1000."""
    x = np.asarray(real_embeddings, np.float64)
    y = np.asarray(fake_embeddings, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"embeddings must be [N, D] with one D, got shapes {x.shape} and "
                         f"{y.shape}")
    if min(len(x), len(y)) < 2:
        raise ValueError(f"KVD needs at least 2 videos a set, got {len(x)} and {len(y)}")
    dim = x.shape[1]

    def kernel(a, b):
        return (a @ b.T / dim + 1.0) ** 3

    def within(a):
        k = kernel(a, a)
        return (k.sum() - np.trace(k)) / (len(a) * (len(a) - 1))

    return float(within(x) + within(y) - 2.0 * kernel(x, y).mean())


def _check_gaussian(name: str, mu, sigma):
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1:
        raise ValueError(f"{name}: mean must be [D], got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name}: covariance must be [{mu.shape[0]}, {mu.shape[0]}] for a mean of "
            f"dimension {mu.shape[0]}, got shape {sigma.shape}"
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"{name}: mean or covariance holds NaN or Inf")
    scale = max(np.abs(sigma).max(), np.finfo(np.float64).tiny)
    if np.abs(sigma - sigma.T).max() > 1e-8 * scale:
        raise ValueError(f"{name}: covariance is not symmetric")
    # Exact symmetry, so eigh sees the matrix the caller meant.
    return mu, (sigma + sigma.T) / 2


def _psd_eigenvalues(name: str, matrix):
    """Eigen-decomposition of a symmetric PSD matrix, rounding noise set to 0."""
    values, vectors = np.linalg.eigh(matrix)
    largest = max(np.abs(values).max(), np.finfo(np.float64).tiny)
    # eigh is backward stable: each eigenvalue is off by at most about
    # D * eps * largest. Below that a PSD matrix's eigenvalues are noise that
    # the square root would blow up (sqrt(1e-15) = 3e-8 per dimension; a
    # rank-deficient covariance has hundreds), so they count as exact zeros.
    # Anything well below zero is a real negative eigenvalue: not a covariance.
    noise = matrix.shape[0] * np.finfo(np.float64).eps * largest
    if values.min() < -1e-9 * largest * max(1, matrix.shape[0]) ** 0.5:
        raise ValueError(
            f"{name} is not positive semi-definite (eigenvalue {values.min():.3g}, "
            f"largest {largest:.3g})"
        )
    return np.where(values > noise, values, 0.0), vectors


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    sigma1 sigma2 is not symmetric, but it is similar to the symmetric PSD
    matrix S sigma2 S with S = sigma1^(1/2), so the trace of its square root
    is the sum of the square roots of that matrix's eigenvalues. Two
    symmetric eigen-decompositions give it without the complex arithmetic
    (and imaginary residue) of a general matrix square root.
    """
    mu1, sigma1 = _check_gaussian("first Gaussian", mu1, sigma1)
    mu2, sigma2 = _check_gaussian("second Gaussian", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"the two Gaussians have different dimensions: {mu1.shape[0]} and {mu2.shape[0]}"
        )
    values, vectors = _psd_eigenvalues("first covariance", sigma1)
    sqrt_sigma1 = (vectors * np.sqrt(values)) @ vectors.T
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    product = (product + product.T) / 2
    product_values, _ = _psd_eigenvalues("sigma1^(1/2) sigma2 sigma1^(1/2)", product)
    trace_sqrt_product = np.sqrt(product_values).sum()
    mean_term = np.sum((mu1 - mu2) ** 2)
    traces = np.trace(sigma1) + np.trace(sigma2)
    distance = mean_term + traces - 2.0 * trace_sqrt_product
    # Equal Gaussians can land a rounding error below zero; report that as 0,
    # and leave anything larger visible.
    if -1e-10 * (traces + mean_term) <= distance < 0:
        distance = 0.0
    return float(distance)


def fvd(real_embeddings, fake_embeddings, ddof: int = 1) -> float:
    """FVD between two sets of embeddings [N, D] (covariances divided by N - ddof)."""
    real_embeddings = np.asarray(real_embeddings)
    fake_embeddings = np.asarray(fake_embeddings)
    if real_embeddings.ndim != 2 or fake_embeddings.ndim != 2 or (
        real_embeddings.shape[1] != fake_embeddings.shape[1]
    ):
        raise ValueError(
            f"real and fake embeddings must be [N, D] with the same D, got shapes "
            f"{real_embeddings.shape} and {fake_embeddings.shape}"
        )
    return frechet_distance(*statistics(real_embeddings, ddof),
                            *statistics(fake_embeddings, ddof))


# ---------------------------------------------------------------------------
# Statistics of a set of videos, saved once and compared later


@dataclass
class VideoSetStatistics:
    """Mean and covariance of a set's embeddings, with what produced them."""

    mu: np.ndarray
    sigma: np.ndarray
    num_videos: int | None = None
    frames: int | None = None
    # Height and width of the videos before the resize to 224x224.
    resolution: tuple[int, int] | None = None
    embedding: str | None = None
    weights: str | None = None
    protocol: str | None = None  # None: a file from before protocols (they were tf)
    frame_stride: int | None = None  # styleganv: frames between a clip's frames
    # The embeddings themselves [N, D] (float32), for KVD; files written before
    # KVD have none.
    embeddings: np.ndarray | None = field(default=None, compare=False, repr=False)
    origin: str = field(default="", compare=False)

    @classmethod
    def from_embeddings(cls, embeddings, ddof: int = 1, **metadata):
        mu, sigma = statistics(embeddings, ddof)
        return cls(mu, sigma, num_videos=int(np.shape(embeddings)[0]),
                   embeddings=np.asarray(embeddings, np.float32), **metadata)

    def save(self, path):
        """Writes an .npz atomically (a temporary file renamed when whole)."""
        path = Path(path)
        arrays = {"mu": np.asarray(self.mu, np.float64),
                  "sigma": np.asarray(self.sigma, np.float64)}
        optional = {"num_videos": (self.num_videos, np.int64),
                    "frames": (self.frames, np.int64),
                    "resolution": (self.resolution, lambda v: np.asarray(v, np.int64)),
                    "embedding": (self.embedding, np.str_),
                    "weights": (self.weights, np.str_),
                    "protocol": (self.protocol, np.str_),
                    "frame_stride": (self.frame_stride, np.int64),
                    "embeddings": (self.embeddings, lambda v: np.asarray(v, np.float32))}
        for key, (value, convert) in optional.items():
            if value is not None:
                arrays[key] = convert(value)
        write_atomically(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such statistics file")
        arrays = load_npz(path)
        missing = [key for key in ("mu", "sigma") if key not in arrays]
        if missing:
            raise ValueError(
                f"{path}: statistics need keys mu and sigma; missing {', '.join(missing)} "
                f"(keys present: {', '.join(sorted(arrays)) or 'none'})"
            )
        mu, sigma = _check_gaussian(str(path), arrays["mu"], arrays["sigma"])
        if "protocol" in arrays and str(arrays["protocol"]) not in PROTOCOLS:
            raise ValueError(f"{path}: protocol {str(arrays['protocol'])!r} is not one of "
                             f"{', '.join(PROTOCOLS)}")
        if "embedding" in arrays and str(arrays["embedding"]) not in EMBEDDINGS:
            raise ValueError(
                f"{path}: embedding {str(arrays['embedding'])!r} is not one of "
                f"{', '.join(EMBEDDINGS)}"
            )

        def optional(key, convert):
            return convert(arrays[key]) if key in arrays else None

        return cls(
            mu,
            sigma,
            num_videos=optional("num_videos", int),
            frames=optional("frames", int),
            resolution=optional("resolution", lambda a: tuple(int(v) for v in a)),
            embedding=optional("embedding", str),
            weights=optional("weights", str),
            protocol=optional("protocol", str),
            frame_stride=optional("frame_stride", int),
            embeddings=optional("embeddings", np.asarray),
            origin=str(path),
        )


def is_statistics_file(path) -> bool:
    """Whether `path` is an .npz holding `mu` and `sigma` (not videos)."""
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        keys = npz_keys(path)
    except ValueError:
        return False
    return "mu" in keys and "sigma" in keys


@partial(jax.jit, static_argnames=("model", "resolution", "resize"))
def _embed_batch(model, variables, videos, resolution, resize):
    # `model` ends at Logits ([B, C]) or AvgPool ([B, T', 1024]).
    out = model.apply(variables, preprocess(videos, resolution, resize), train=False)
    return out if out.ndim == 2 else jnp.mean(out, axis=1)


# ---------------------------------------------------------------------------
# Embedding sets of videos, sharded over the local devices


def _check_embedding(embedding: str):
    if embedding not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {embedding!r}; choose one of {', '.join(EMBEDDINGS)}")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(eq=False)
class VideoEmbedder:
    """Embeds uint8 videos [T, H, W, 3] with I3D, batched and sharded.

    Each batch is split over `devices` (default: all local devices) along the
    batch axis; the weights are replicated. The last batch is padded to the
    same size (one compiled program) and the padding dropped. Videos of a set
    must share their frame count and size; `frames` keeps the first N frames.
    """

    model_variables: dict = field(repr=False)
    model: object = field(repr=False)  # an InceptionI3d ending at the embedding's endpoint
    embedding: str = "logits"
    frames: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    # The network input: 224x224 is the convention; smaller only makes tests cheap.
    network_resolution: tuple[int, int] = FVD_RESOLUTION
    devices: Sequence | None = None
    weights_name: str = ""
    protocol: Protocol = TF  # the resize and the covariance; clips are chosen by the caller

    def __post_init__(self):
        _check_embedding(self.embedding)
        if self.frames is not None and self.frames < MIN_FRAMES:
            raise ValueError(
                f"frames={self.frames}: I3D's FVD embedding needs at least {MIN_FRAMES} frames"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        devices = list(self.devices) if self.devices is not None else jax.local_devices()
        self.mesh = Mesh(np.asarray(devices), ("batch",))
        self._batch_sharding = NamedSharding(self.mesh, PartitionSpec("batch"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._variables = jax.device_put(self.model_variables, replicated)

    @classmethod
    def from_pretrained(cls, metadata, variables, embedding: str = "logits", kernels="auto",
                        **options):
        """From (metadata, variables) as `load_weights` or `load_pretrained` return them;
        `kernels` as `build_model` takes them."""
        if metadata.in_channels != 3:
            raise ValueError(
                f"FVD embeds RGB videos, but the weights ({metadata.source or 'checkpoint'}) "
                f"take {metadata.in_channels}-channel ({metadata.stream}) input"
            )
        _check_embedding(embedding)
        model = metadata.build_model(final_endpoint=EMBEDDING_ENDPOINTS[embedding],
                                     kernels=kernels)
        return cls(variables, model, embedding=embedding, weights_name=metadata.source,
                   **options)

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def _select_frames(self, clip, name):
        clip = np.asarray(clip) if not isinstance(clip, np.ndarray) else clip
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise ValueError(f"{name}: expected a video [T, H, W, 3], got shape {clip.shape}")
        if clip.dtype != np.uint8:
            raise ValueError(
                f"{name}: expected uint8 frames in 0..255 (the FVD convention), got {clip.dtype}"
            )
        needed = self.frames or MIN_FRAMES
        if clip.shape[0] < needed:
            what = f"--frames {self.frames}" if self.frames else "I3D's FVD embedding"
            raise ValueError(f"{name}: {clip.shape[0]} frames, but {what} needs at least {needed}")
        return clip[: self.frames] if self.frames else clip

    def embed(self, videos: Iterable, num_videos: int | None = None, progress: bool = True,
              description: str = "embedding"):
        """Embeddings [N, D] (float32) of `videos`, and the set's (frames, (H, W)).

        `videos` is an array [N, T, H, W, 3] uint8 or an iterable of
        (name, clip) pairs or of clips; names appear in errors.
        """
        from tqdm import tqdm

        if isinstance(videos, np.ndarray):
            if videos.ndim != 5:
                raise ValueError(f"expected videos [N, T, H, W, 3], got shape {videos.shape}")
            num_videos = videos.shape[0]
        if num_videos is None and hasattr(videos, "__len__"):
            num_videos = len(videos)
        batch = self.batch_capacity(num_videos)
        outputs, shape, pending = [], None, None
        buffer, count = [], 0
        with tqdm(total=num_videos, unit="video", desc=description, disable=not progress) as bar:

            def collect(result):
                values, valid = result
                outputs.append(np.asarray(values)[:valid])
                bar.update(valid)

            for index, item in enumerate(videos):
                name, clip = item if isinstance(item, tuple) else (f"video {index}", item)
                clip = self._select_frames(clip, name)
                if shape is None:
                    shape = clip.shape
                elif clip.shape != shape:
                    raise ValueError(
                        f"{name}: shape {clip.shape} differs from the set's {shape} "
                        f"(frames, height, width, channels); every video of a set must match"
                        + ("; pass --frames N to use the first N frames of each"
                           if clip.shape[1:] == shape[1:] else "")
                    )
                buffer.append(clip)
                count += 1
                if len(buffer) == batch:
                    # Dispatch is asynchronous: decode the next batch while
                    # this one runs, and only then wait for the previous one.
                    launched = self._launch(buffer, batch)
                    if pending is not None:
                        collect(pending)
                    pending, buffer = launched, []
            if buffer:
                launched = self._launch(buffer, batch)
                if pending is not None:
                    collect(pending)
                pending = launched
            if pending is not None:
                collect(pending)
        if count == 0:
            raise ValueError("no videos to embed")
        embeddings = np.concatenate(outputs, axis=0)
        if not np.all(np.isfinite(embeddings)):
            raise ValueError("the I3D embedding produced NaN or Inf")
        return embeddings, (shape[0], tuple(shape[1:3]))

    def __call__(self, videos, **kwargs) -> np.ndarray:
        """Embeddings [N, D] of videos (see `embed`)."""
        return self.embed(videos, **kwargs)[0]

    def batch_capacity(self, num_videos: int | None) -> int:
        # A multiple of the device count so the batch splits evenly, and no
        # bigger than the set needs.
        batch = self.batch_size if num_videos is None else min(self.batch_size, max(num_videos, 1))
        return _round_up(batch, self.num_devices)

    def _launch(self, clips, batch: int):
        valid = len(clips)
        stacked = np.stack(clips)
        if valid < batch:
            padding = np.zeros((batch - valid,) + stacked.shape[1:], stacked.dtype)
            stacked = np.concatenate([stacked, padding])
        sharded = jax.device_put(stacked, self._batch_sharding)
        resolution = tuple(self.network_resolution)
        return _embed_batch(self.model, self._variables, sharded, resolution,
                            self.protocol.resize), valid

    def statistics(self, videos, **kwargs) -> VideoSetStatistics:
        embeddings, (frames, resolution) = self.embed(videos, **kwargs)
        return VideoSetStatistics.from_embeddings(
            embeddings, ddof=self.protocol.ddof, frames=frames, resolution=resolution,
            embedding=self.embedding, weights=self.weights_name, protocol=self.protocol.name,
        )
