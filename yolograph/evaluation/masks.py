"""Instance masks: mask coefficients x prototypes, warped to the original image, cropped, thresholded; IoU.

As Ultralytics ``process_mask``: each detection's mask logits are its coefficients times the prototype
maps (``[nm] @ [nm, mh, mw]``), zero outside its box, and the mask is where the logit is ``> 0``
(sigmoid ``> 0.5``). The logits are resampled straight from prototype space to the original image
(bilinear, through the letterbox), instead of upsampling to the network input first and then undoing
the letterbox: the same sampling in one step. `scale` < 1 renders them smaller (evaluation does, to
bound memory); polygons of labels are drawn at the same scale.
"""

from __future__ import annotations

import cv2
import numpy as np

from yolograph.evaluation.preprocess import LetterboxGeometry


def mask_shape(original_shape: tuple[int, int], scale: float = 1.0) -> tuple[int, int]:
    """The (height, width) masks of an image of `original_shape` get at `scale`."""
    height, width = original_shape
    return max(1, round(height * scale)), max(1, round(width * scale))


def masks_from_prototypes(coefficients: np.ndarray, prototypes: np.ndarray, boxes: np.ndarray,
                          geometry: LetterboxGeometry, scale: float = 1.0) -> np.ndarray:
    """``[N, H, W]`` bool masks in the original image (at `scale`) from ``[N, nm]`` coefficients,
    ``[nm, mh, mw]`` prototypes and ``[N, 4]`` xyxy boxes in original-image pixels."""
    out_h, out_w = mask_shape(geometry.original_shape, scale)
    if len(coefficients) == 0:
        return np.zeros((0, out_h, out_w), dtype=bool)
    num_masks, proto_h, proto_w = prototypes.shape
    logits = (coefficients.astype(np.float32) @ prototypes.reshape(num_masks, -1).astype(np.float32))
    logits = logits.reshape(-1, proto_h, proto_w)
    matrix = _output_to_prototype(geometry, (proto_h, proto_w), (out_h, out_w))
    masks = np.empty((len(logits), out_h, out_w), dtype=bool)
    rows = (np.arange(out_h, dtype=np.float32) + 0.5)[:, None] * (geometry.original_shape[0] / out_h)
    cols = (np.arange(out_w, dtype=np.float32) + 0.5)[None, :] * (geometry.original_shape[1] / out_w)
    for i, logit in enumerate(logits):
        warped = cv2.warpAffine(logit, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
        x1, y1, x2, y2 = boxes[i]
        inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
        masks[i] = (warped > 0) & inside
    return masks


def _output_to_prototype(geometry: LetterboxGeometry, proto_shape: tuple[int, int],
                         out_shape: tuple[int, int]) -> np.ndarray:
    """The affine map from output-mask pixel indices to prototype pixel indices (pixel centres aligned)."""
    (proto_h, proto_w), (out_h, out_w) = proto_shape, out_shape
    in_h, in_w = geometry.input_shape
    original_h, original_w = geometry.original_shape
    # output index u -> original x = (u + .5) * ow / out_w -> input x = x * r + pad -> proto x * pw / iw - .5
    gain_x = original_w / out_w * geometry.ratio * proto_w / in_w
    gain_y = original_h / out_h * geometry.ratio * proto_h / in_h
    shift_x = 0.5 * gain_x + geometry.pad_left * proto_w / in_w - 0.5
    shift_y = 0.5 * gain_y + geometry.pad_top * proto_h / in_h - 0.5
    return np.array([[gain_x, 0.0, shift_x], [0.0, gain_y, shift_y]], dtype=np.float64)


def polygons_to_masks(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """``[N, H, W]`` bool masks of polygons given as ``[P, 2]`` pixel points in an image of `shape`."""
    masks = np.zeros((len(polygons), *shape), dtype=np.uint8)
    for mask, polygon in zip(masks, polygons):
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32).reshape(-1, 1, 2)], 1)
    return masks.astype(bool)


def mask_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of ``[N, H, W]`` and ``[M, H, W]`` bool masks (0 where both are empty)."""
    if len(first) == 0 or len(second) == 0:
        return np.zeros((len(first), len(second)))
    a = first.reshape(len(first), -1).astype(np.float32)
    b = second.reshape(len(second), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0).astype(np.float64)
