"""TV-L1 flow against OpenCV's DualTVL1, a known motion and DeepMind's CricketShot flow.

Measured here (opencv-contrib-python-headless 4.13.0.92, CPU; the figures are
recorded as test properties and printed with -s):

- a CricketShot frame warped by a known smooth motion, mean end-point error
  in the interior: sinusoidal field 0.140 px (OpenCV 0.140), affine field
  0.027 px (OpenCV 0.028); between ours and OpenCV 0.014 and 0.013 px;
- consecutive CricketShot frames 20->21 and 40->41 (224x224 crop): correlation
  with DeepMind's flow 0.887 and 0.920 (OpenCV 0.886 and 0.921); with OpenCV's
  flow 0.995 and 0.996, mean end-point difference 0.016 and 0.018 px for
  flow of 0.17 and 0.24 px mean magnitude.
"""
import numpy as np
import pytest
from scipy import ndimage

from conftest import require_test_package, skip_or_fail
from i3d_jax import flow as F

cv2 = require_test_package("cv2", "comparing TV-L1 flow with OpenCV's")
if not hasattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create"):
    # Plain opencv-python has cv2 without the contrib module that holds DualTVL1.
    skip_or_fail(f"OpenCV {cv2.__version__} has no cv2.optflow.DualTVL1OpticalFlow_create: "
                 "install opencv-contrib-python-headless (requirements-test.txt), "
                 "not opencv-python")

INTERIOR = 16  # pixels left out at each border when scoring known motion
DEEPMIND_PAIRS = (20, 40)  # flow from frame t to t + 1


def opencv_tvl1(params: F.TVL1Params):
    # Setters, not create()'s keywords: its binding misspells one ("innnerIterations").
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    tvl1.setTau(params.tau)
    tvl1.setLambda(params.lambda_)
    tvl1.setTheta(params.theta)
    tvl1.setScalesNumber(params.scales)
    tvl1.setWarpingsNumber(params.warps)
    tvl1.setEpsilon(params.epsilon)
    tvl1.setInnerIterations(params.inner_iterations)
    tvl1.setOuterIterations(params.outer_iterations)
    tvl1.setScaleStep(params.scale_step)
    tvl1.setMedianFiltering(params.median_filtering)
    tvl1.setGamma(0.0)
    tvl1.setUseInitialFlow(False)
    return tvl1


def end_point_error(a, b):
    return np.hypot(*np.moveaxis(np.asarray(a) - np.asarray(b), -1, 0))


def correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# --- the building blocks, one by one ----------------------------------------


def test_gray_matches_cvtcolor():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 31, 47, 3), dtype=np.uint8)
    expected = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb])
    np.testing.assert_array_equal(F.to_gray(rgb), expected)
    as_float = rgb.astype(np.float32) / 255.0
    expected = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in as_float]) * 255.0
    np.testing.assert_allclose(F.to_gray(as_float), expected, atol=1e-3)


def test_resizes_match_cv_resize():
    image = np.random.default_rng(1).uniform(0, 255, (37, 53)).astype(np.float32)
    # A pyramid step: scaled by 0.8 with OpenCV's rounding of the size.
    shape = F.pyramid_shapes(37, 53, F.TVL1Params())[1]
    expected = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    assert expected.shape == shape
    np.testing.assert_allclose(np.asarray(F._resize_linear(image, shape, 1 / 0.8, 1 / 0.8)), expected, atol=1e-3)
    # Flow going up a level: to an exact size.
    expected = cv2.resize(image, (67, 45), interpolation=cv2.INTER_LINEAR)
    ours = F._resize_linear(image, (45, 67), 1 / (45 / 37), 1 / (67 / 53))
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-3)


def test_bicubic_warp_matches_cv_remap():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (29, 41)).astype(np.float32)
    # Displacements up to several pixels, so many positions fall outside the image.
    map_x = (np.arange(41)[None, :] + rng.normal(0, 4, (29, 41))).astype(np.float32)
    map_y = (np.arange(29)[:, None] + rng.normal(0, 4, (29, 41))).astype(np.float32)
    expected = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC)
    ours = np.asarray(F._remap_cubic(image[None], map_x, map_y))[0]
    np.testing.assert_allclose(ours, expected, atol=1e-3)


@pytest.mark.parametrize("size", [3, 5])
def test_median_matches_cv_median_blur(size):
    image = np.random.default_rng(3).uniform(-5, 5, (23, 30)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(F._median_filter(image, size)), cv2.medianBlur(image, size))


def test_other_parameters_match_opencv(cricket_rgb_u8):
    """Small crops, non-default parameters: the parameters mean what OpenCV's mean."""
    gray = F.to_gray(cricket_rgb_u8[40:42, 100:164, 60:140]).astype(np.uint8)
    params = F.TVL1Params(tau=0.2, lambda_=0.3, theta=0.4, scales=3, warps=3, epsilon=0.02,
                          inner_iterations=12, outer_iterations=4, scale_step=0.6, median_filtering=3)
    ours = F.tvl1_flow(gray, **dataclass_fields(params))[0]
    theirs = opencv_tvl1(params).calc(gray[0], gray[1], None)
    difference = end_point_error(ours, theirs).mean()
    print(f"non-default parameters, 64x80: mean EPE ours vs OpenCV {difference:.4f} px, "
          f"OpenCV mean |flow| {np.hypot(*np.moveaxis(theirs, -1, 0)).mean():.3f} px")
    assert difference < 0.01


def dataclass_fields(params):
    import dataclasses

    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


# --- full size, default parameters ------------------------------------------


@pytest.fixture(scope="module")
def known_motion(cricket_rgb_u8):
    """A CricketShot frame and the same frame warped by two smooth motions of a few pixels."""
    image1 = F.to_gray(cricket_rgb_u8[10:11])[0].astype(np.float64)
    height, width = image1.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    motions = {
        "sinusoidal": (2.0 + 1.5 * np.sin(2 * np.pi * yy / 112), -1.0 + 1.5 * np.cos(2 * np.pi * xx / 112)),
        "affine": (1.5 + 0.02 * (xx - 112) - 0.015 * (yy - 112), -1.0 + 0.015 * (xx - 112) + 0.02 * (yy - 112)),
    }
    firsts, truths = [], []
    for u, v in motions.values():
        # image0(p) = image1(p + flow(p)), so flow is exactly the flow from image0 to image1.
        firsts.append(ndimage.map_coordinates(image1, [yy + v, xx + u], order=3, mode="nearest"))
        truths.append(np.stack([u, v], axis=-1))
    firsts = np.stack(firsts).astype(np.float32)
    seconds = np.broadcast_to(image1.astype(np.float32), firsts.shape)
    import jax.numpy as jnp

    ours = np.asarray(F.tvl1_pairs(jnp.asarray(firsts), jnp.asarray(seconds)))
    tvl1 = opencv_tvl1(F.TVL1Params())
    theirs = np.stack([tvl1.calc(a / 255.0, b / 255.0, None) for a, b in zip(firsts, seconds)])
    return list(motions), np.stack(truths), ours, theirs


def test_known_motion_end_point_error(known_motion, record_property):
    names, truths, ours, theirs = known_motion
    inside = (slice(None), slice(INTERIOR, -INTERIOR), slice(INTERIOR, -INTERIOR))
    for name, truth, flow, reference in zip(names, truths, ours, theirs):
        ours_error = end_point_error(flow[inside[1:]], truth[inside[1:]]).mean()
        opencv_error = end_point_error(reference[inside[1:]], truth[inside[1:]]).mean()
        between = end_point_error(flow[inside[1:]], reference[inside[1:]]).mean()
        record_property(f"{name}_epe_ours", float(ours_error))
        record_property(f"{name}_epe_opencv", float(opencv_error))
        print(f"{name} motion: interior mean EPE ours {ours_error:.4f} px, OpenCV {opencv_error:.4f} px, "
              f"ours vs OpenCV {between:.4f} px")
        assert ours_error <= 0.15
        assert ours_error <= opencv_error + 0.01
        assert between <= 0.03


@pytest.fixture(scope="module")
def cricket_pairs(cricket_rgb_u8):
    import jax.numpy as jnp

    gray = F.to_gray(cricket_rgb_u8).astype(np.uint8)
    firsts = np.stack([gray[t] for t in DEEPMIND_PAIRS])
    seconds = np.stack([gray[t + 1] for t in DEEPMIND_PAIRS])
    ours = np.asarray(F.tvl1_pairs(jnp.asarray(firsts, jnp.float32), jnp.asarray(seconds, jnp.float32)))
    tvl1 = opencv_tvl1(F.TVL1Params())
    theirs = np.stack([tvl1.calc(a, b, None) for a, b in zip(firsts, seconds)])
    return ours, theirs


def test_consecutive_frames_match_deepmind_flow(cricket_pairs, cricket_flow_u8, record_property):
    ours, theirs = cricket_pairs
    for flow, reference, t in zip(ours, theirs, DEEPMIND_PAIRS):
        # The GIF stores flow / 20 clipped to +-0.5, plus 0.5.
        deepmind = cricket_flow_u8[t, ..., :2] / 255.0 - 0.5
        ours_correlation = correlation(np.clip(flow / 20.0, -0.5, 0.5), deepmind)
        opencv_correlation = correlation(np.clip(reference / 20.0, -0.5, 0.5), deepmind)
        record_property(f"pair{t}_correlation_deepmind_ours", ours_correlation)
        record_property(f"pair{t}_correlation_deepmind_opencv", opencv_correlation)
        print(f"frames {t}->{t + 1}: correlation with DeepMind's flow: ours {ours_correlation:.3f}, "
              f"OpenCV {opencv_correlation:.3f}")
        assert ours_correlation >= 0.8


def test_consecutive_frames_match_opencv(cricket_pairs, record_property):
    ours, theirs = cricket_pairs
    for flow, reference, t in zip(ours, theirs, DEEPMIND_PAIRS):
        agreement = correlation(flow, reference)
        difference = end_point_error(flow, reference).mean()
        magnitude = np.hypot(*np.moveaxis(reference, -1, 0)).mean()
        record_property(f"pair{t}_correlation_opencv", agreement)
        record_property(f"pair{t}_epe_vs_opencv", float(difference))
        print(f"frames {t}->{t + 1}: ours vs OpenCV correlation {agreement:.4f}, mean EPE {difference:.4f} px "
              f"(OpenCV mean |flow| {magnitude:.3f} px)")
        assert agreement >= 0.98
        assert difference <= 0.03
