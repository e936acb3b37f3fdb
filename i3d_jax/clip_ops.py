"""What a clip is made of, for one example: frame indices (a random start, evenly
spaced clips, looping short videos), JPEG/PNG frames decoded (only a crop window's
pixels where it can), resized, converted to the network's range and mirrored.
`input_pipeline` builds its tf.data pipelines from these."""
from __future__ import annotations

import dataclasses

import i3d_jax.quiet_tf  # noqa: F401  (before anything imports TF)

import tensorflow as tf  # noqa: E402

from i3d_jax.flow import FLOW_BOUND  # noqa: E402  (how stored flow is quantised)

# Clips of at most this many frames decode in one op per frame (`_decode_frames`).
MAX_UNROLLED_DECODES = 256
CHANNELS = {"rgb": 3, "flow": 2}


@dataclasses.dataclass(frozen=True)
class StreamSampling:
    """Which frames of a clip one stream sees: `num_frames` frames `stride`
    apart, the first `offset` frames after the clip's start."""

    num_frames: int
    stride: int = 1
    offset: int = 0

    def __post_init__(self):
        if self.num_frames < 1 or self.stride < 1 or self.offset < 0:
            raise ValueError(f"num_frames and stride must be positive and offset >= 0: {self}")

    @property
    def span(self) -> int:
        """Frames from the clip's start to this stream's last frame, inclusive."""
        return self.offset + (self.num_frames - 1) * self.stride + 1




def sample_clip_start(num_available, span: int, seed):
    """A random start for a clip of `span` frames (0 when the video is shorter)."""
    max_start = tf.maximum(num_available - span, 0)
    return tf.random.stateless_uniform([], seed, minval=0, maxval=max_start + 1, dtype=tf.int32)


def stream_indices(start, num_available, sampling: StreamSampling, num_frames=None):
    """One stream's frame indices from a clip's `start` (or starts [K] -> [K, T]);
    videos shorter than the span loop (indices wrap around)."""
    num_frames = sampling.num_frames if num_frames is None else num_frames
    steps = sampling.offset + tf.range(num_frames) * sampling.stride
    start = tf.convert_to_tensor(start)
    if start.shape.rank:
        return (start[:, None] + steps[None, :]) % num_available
    return (start + steps) % num_available


def sample_clip_indices(num_available, num_frames: int, stride: int, seed):
    """`num_frames` indices `stride` apart from a random start; videos shorter than
    the span loop (indices wrap around)."""
    sampling = StreamSampling(num_frames, stride)
    return stream_indices(sample_clip_start(num_available, sampling.span, seed), num_available,
                          sampling)


def evenly_spaced_starts(num_available, span: int, num_clips: int):
    """[num_clips] starts of clips of `span` frames spread evenly over the video."""
    last_start = tf.cast(tf.maximum(num_available - span, 0), tf.float32)
    if num_clips == 1:
        return tf.cast(tf.round(last_start / 2), tf.int32)[None]
    return tf.cast(tf.round(tf.linspace(0.0, last_start, num_clips)), tf.int32)


def evenly_spaced_clip_indices(num_available, num_frames: int, stride: int, num_clips: int):
    """[num_clips, num_frames] indices of clips spread evenly over the video (looped if short)."""
    sampling = StreamSampling(num_frames, stride)
    return stream_indices(evenly_spaced_starts(num_available, sampling.span, num_clips),
                          num_available, sampling)


def _frame_decoder(modality, crop_window=None):
    """encoded frame -> uint8 [h, w, C]; `crop_window` [y, x, h, w] decodes only that."""
    if modality == "rgb":
        if crop_window is not None:
            return lambda b: tf.io.decode_and_crop_jpeg(b, crop_window, channels=3)
        return lambda b: tf.io.decode_jpeg(b, channels=3)

    if crop_window is None:
        # Flow frames are 2-channel (grey + alpha) PNGs; decode_png refuses channels=2.
        return lambda b: tf.io.decode_png(b, channels=0)
    # One slice op a frame (Python slicing makes several, each milliseconds to trace).
    begin = tf.stack([crop_window[0], crop_window[1], 0])
    size = tf.stack([crop_window[2], crop_window[3], -1])
    return lambda b: tf.slice(tf.io.decode_png(b, channels=0), begin, size)


def decoded_frame_list(encoded, modality, crop_window, indices) -> list:
    """The frames of `encoded` [N] at `indices` [T] (T static), decoded one op each:
    a list of uint8 [h, w, C], for whoever stacks them (`_decode_frames`, or a batch's
    frames stacked at once). Frames picked one by one, not gathered first: a copy of
    their bytes the less; by `tf.gather`, one op where indexing makes several."""
    decode = _frame_decoder(modality, crop_window)
    return [decode(tf.gather(encoded, index))
            for index in tf.unstack(indices, num=indices.shape[0])]


def _decode_frames(encoded, modality, crop_window=None, indices=None):
    """Encoded frames [N] (or those at `indices` [N]) -> uint8 [N, h, w, C]; `crop_window`
    [y, x, h, w] decodes only that."""
    count = (encoded if indices is None else indices).shape[0]
    if count is not None and count <= MAX_UNROLLED_DECODES:
        # A clip's frame count is static: one decode op per frame. TF's loop machinery
        # (map_fn, or a while_loop into a TensorArray) cost ~150 us a frame, a third of a
        # 340x256 JPEG's decode (natural frames, 1 thread: 33 -> 22 ms for 64 frames).
        frames = tf.stack(decoded_frame_list(
            encoded, modality, crop_window, tf.range(count) if indices is None else indices))
    else:
        if indices is not None:
            encoded = tf.gather(encoded, indices)
        frames = tf.map_fn(_frame_decoder(modality, crop_window), encoded,
                           fn_output_signature=tf.TensorSpec(None, tf.uint8),
                           parallel_iterations=16)
    return tf.ensure_shape(frames, [None, None, None, CHANNELS[modality]])


def _frame_size(encoded_rgb_or_flow, modality):
    if modality == "rgb":
        shape = tf.io.extract_jpeg_shape(encoded_rgb_or_flow[0])
    else:
        shape = tf.shape(tf.io.decode_png(encoded_rgb_or_flow[0], channels=0))
    return shape[0], shape[1]


def _resized_size(height, width, short_side):
    scale = short_side / tf.cast(tf.minimum(height, width), tf.float32)
    new_h = tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32)
    new_w = tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32)
    return tf.maximum(new_h, short_side), tf.maximum(new_w, short_side), scale


def _resized(frames, modality, height, width, short_side):
    """Bilinear resize to short side `short_side`; flow vectors scale with the frame."""
    new_h, new_w, scale = _resized_size(height, width, short_side)
    out = tf.image.resize(tf.cast(frames, tf.float32), tf.stack([new_h, new_w]), method="bilinear")
    if modality == "flow":
        # uint8 -> pixels, scale, and back (values stay in the stored 0..255 range).
        out = (out / 255.0 * (2 * FLOW_BOUND) - FLOW_BOUND) * scale
        out = tf.clip_by_value((out + FLOW_BOUND) * (255.0 / (2 * FLOW_BOUND)), 0.0, 255.0)
    else:
        out = tf.clip_by_value(out, 0.0, 255.0)
    return out, new_h, new_w


def _to_network(frames, dtype):
    """uint8 (or float 0..255) -> [-1, 1] in `dtype`; for dtype uint8 the frames stay
    0..255 (resized ones rounded) and the steps scale them (`streams.network_range`)."""
    if dtype == tf.uint8:
        return frames if frames.dtype == tf.uint8 else tf.cast(tf.round(frames), tf.uint8)
    return tf.cast(tf.cast(frames, tf.float32) * (2.0 / 255.0) - 1.0, dtype)


def _flipped(clip, modality):
    """A network-ready clip mirrored left to right; flow's x changes sign (in uint8,
    255 - x, which is exactly -x once scaled)."""
    if modality == "flow" and clip.dtype == tf.uint8:
        return _flip_flow_uint8(clip)
    mirrored = _flip_left_right(clip)
    if modality == "flow":
        mirrored = mirrored * tf.constant([-1.0, 1.0], clip.dtype)
    return mirrored


def _flip_left_right(frames):
    """frames [T, H, W, C] mirrored along W. As [T * H, W, C] TF's reverse runs 3x
    faster than on the 4-D tensor (uint8 64x224x224x3, 1 thread: 2.9 against 8.8 ms)."""
    shape = tf.shape(frames)
    rows = tf.reshape(frames, tf.stack([-1, shape[2], shape[3]]))
    return tf.reshape(tf.reverse(rows, axis=[1]), shape)


def _flip_flow_uint8(flow):
    """Quantised flow [T, H, W, 2] mirrored along W with x negated (255 - x, exactly -x
    once scaled), in one pass over the (x, y) pairs seen as 16-bit words: reversed as
    [T * H, W], and x's byte flipped by XOR 255. TF's reverse of the 2-channel tensor
    and a 255 - x of its x channel took 26 ms a 64x224x224 clip on 1 thread; this ~2."""
    shape = tf.shape(flow)
    words = tf.reshape(tf.bitcast(flow, tf.uint16), tf.stack([-1, shape[2]]))
    # The word whose x byte is 255 and y byte 0, in this machine's byte order.
    x_mask = tf.bitcast(tf.constant([255, 0], tf.uint8), tf.uint16)
    mirrored = tf.bitwise.bitwise_xor(tf.reverse(words, axis=[1]), x_mask)
    return tf.reshape(tf.bitcast(mirrored, tf.uint8), shape)


def _check_crop(height, width, crop_size, video_id):
    return tf.debugging.assert_greater_equal(
        tf.minimum(height, width), crop_size,
        message=tf.strings.format("frames smaller than the crop size in video {}", video_id))
