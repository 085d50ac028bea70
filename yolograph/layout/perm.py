"""Permutation algebra for layouts.

A tensor's *logical* value is what the original (NCHW) model computes; its *stored* value is
`np.transpose(logical, layout)`. So stored axis i holds logical axis `layout[i]`: NHWC for a 4-D
NCHW tensor is (0, 2, 3, 1), and the identity layout is the original one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Perm = tuple[int, ...]

NCHW_TO_NHWC: Perm = (0, 2, 3, 1)
NHWC_TO_NCHW: Perm = (0, 3, 1, 2)


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def is_identity(perm: Sequence[int]) -> bool:
    return all(axis == index for index, axis in enumerate(perm))


def invert(perm: Sequence[int]) -> Perm:
    inverse = [0] * len(perm)
    for index, axis in enumerate(perm):
        inverse[axis] = index
    return tuple(inverse)


def conversion(source: Perm, target: Perm) -> Perm:
    """The Transpose perm that turns a tensor stored in layout `source` into layout `target`."""
    source_inverse = invert(source)
    return tuple(source_inverse[axis] for axis in target)


def after_transpose(layout: Perm, transpose_perm: Sequence[int]) -> Perm:
    """Layout of `Transpose(x, perm)`'s output when its stored data is x's stored data unchanged.

    A logical Transpose of a tensor held in `layout` costs nothing: the output is the same bytes,
    seen in layout q with q[i] = perm^-1[layout[i]].
    """
    inverse = invert(transpose_perm)
    return tuple(inverse[axis] for axis in layout)


def stored_axis(layout: Perm, logical_axis: int) -> int:
    """Where logical axis `logical_axis` (negative allowed) lies in the stored tensor."""
    return invert(layout)[logical_axis % len(layout)]


def stored_shape(logical_shape: Sequence[int], layout: Perm) -> tuple[int, ...]:
    return tuple(int(logical_shape[axis]) for axis in layout)


def permute_constant(value: np.ndarray, layout: Perm) -> np.ndarray:
    """A broadcastable constant in a layout: left-pad to the layout's rank, then transpose."""
    array = np.asarray(value)
    if array.ndim == 0 or array.size == 1 and array.ndim <= len(layout):
        return array
    padded = array.reshape((1,) * (len(layout) - array.ndim) + array.shape)
    return np.ascontiguousarray(np.transpose(padded, layout))


def moves_only_unit_axes(perm: Sequence[int], shape: Sequence[int]) -> bool:
    """True when transposing `shape` by `perm` keeps the order of every axis longer than 1.

    Such a Transpose moves no data: it is a Reshape.
    """
    kept = [axis for axis in perm if shape[axis] != 1]
    return kept == sorted(kept)


def reshape_layout(in_shape: Sequence[int], out_shape: Sequence[int], layout: Perm) -> Perm | None:
    """Layout of a Reshape's output when the Reshape is applied to the stored input directly.

    A Reshape splits and merges runs of adjacent axes. If every run of input axes that merges or
    splits sits contiguously and in order in the stored layout, reshaping the stored tensor to the
    correspondingly permuted shape gives the output in a layout we can name; else None.
    Axes of length 1 carry no data and may go anywhere.
    """
    in_axes = [axis for axis, size in enumerate(in_shape) if size != 1]
    out_axes = [axis for axis, size in enumerate(out_shape) if size != 1]
    groups = _reshape_groups([in_shape[a] for a in in_axes], [out_shape[a] for a in out_axes])
    if groups is None:
        return None
    # Map each input group (indices into in_axes) to its output group.
    stored_order = [axis for axis in layout if in_shape[axis] != 1]
    position = {axis: index for index, axis in enumerate(stored_order)}
    ordered_groups = []
    for in_group, out_group in groups:
        logical = [in_axes[i] for i in in_group]
        places = [position[axis] for axis in logical]
        if places != list(range(places[0], places[0] + len(places))):
            return None
        ordered_groups.append((places[0], [out_axes[j] for j in out_group]))
    stored_out = [axis for _, group in sorted(ordered_groups) for axis in group]
    # Unit output axes: put each right after its logical predecessor, keeping the result close to identity.
    for axis, size in enumerate(out_shape):
        if size == 1:
            predecessor = axis - 1
            index = stored_out.index(predecessor) + 1 if predecessor in stored_out else 0
            stored_out.insert(index, axis)
    return tuple(stored_out)


def _reshape_groups(in_sizes: list[int], out_sizes: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair minimal runs of input and output axes with equal products (sizes all > 1)."""
    groups, i, j = [], 0, 0
    while i < len(in_sizes) and j < len(out_sizes):
        in_group, out_group = [i], [j]
        in_product, out_product = in_sizes[i], out_sizes[j]
        while in_product != out_product:
            if in_product < out_product:
                i += 1
                if i >= len(in_sizes):
                    return None
                in_group.append(i)
                in_product *= in_sizes[i]
            else:
                j += 1
                if j >= len(out_sizes):
                    return None
                out_group.append(j)
                out_product *= out_sizes[j]
        groups.append((in_group, out_group))
        i, j = i + 1, j + 1
    if i != len(in_sizes) or j != len(out_sizes):
        return None
    return groups
