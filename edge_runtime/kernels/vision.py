"""Vision kernels: GridSample, AffineGrid, CenterCropPad, Col2Im, RoiAlign, NonMaxSuppression, LRN.

Semantics follow the ONNX specification and its reference evaluator; sampling is vectorised over
every output position, with Python loops only over the few interpolation corners or boxes.

Example:
    >>> import numpy as np
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    >>> grid = np.float32([[[[0, 0]]]])  # the centre of the image
    >>> grid_sample(np, x, grid)[0]
    array([[[[1.5]]]], dtype=float32)
"""

from __future__ import annotations

import itertools

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel

_CUBIC_A = -0.75  # Keys' cubic convolution, as GridSample and Resize use


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _reflect(xp, x, low, high):
    """Fold coordinates `x` back into [low, high] by mirroring at the nearer border."""
    span = high - low
    if span <= 0:
        return xp.full_like(x, low)
    below = x < low
    distance = xp.where(below, low - x, x - high)
    folds = xp.floor(distance / span)
    rest = distance - folds * span
    even = folds % 2 == 0
    from_low, from_high = low + rest, high - rest
    reflected = xp.where(below, xp.where(even, from_low, from_high),
                         xp.where(even, from_high, from_low))
    return xp.where((x < low) | (x > high), reflected, x)


def _cubic_weights(t):
    a = _CUBIC_A
    d0, d1, d2, d3 = t + 1, t, 1 - t, 2 - t
    return [((a * d0 - 5 * a) * d0 + 8 * a) * d0 - 4 * a,
            ((a + 2) * d1 - (a + 3)) * d1 * d1 + 1,
            ((a + 2) * d2 - (a + 3)) * d2 * d2 + 1,
            ((a * d3 - 5 * a) * d3 + 8 * a) * d3 - 4 * a]


def _pixel_index(xp, index, size, low, high, padding_mode):
    """Where integer sample `index` along one axis reads, and whether it reads (zeros padding)."""
    if padding_mode == "zeros":
        inside = (index >= 0) & (index < size)
        return xp.clip(index, 0, size - 1), inside
    if padding_mode == "reflection":
        index = _reflect(xp, index.astype(xp.float64), low, high).astype(xp.int64)
    return xp.clip(index, 0, size - 1), None


@kernel("GridSample", since=16)
def grid_sample(xp, X, grid, *, align_corners=0, mode="linear", padding_mode="zeros"):
    """Sample X [N, C, *spatial] at the normalised coordinates `grid` [N, *out, len(spatial)]
    (last axis x, y[, z], in [-1, 1]); result [N, C, *out].

    Example: see the module docstring.
    """
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(_text(mode), _text(mode))
    padding_mode = _text(padding_mode)
    if mode not in ("linear", "nearest", "cubic"):
        raise KernelError(f"GridSample: mode must be linear, nearest or cubic, got {mode!r}")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise KernelError(f"GridSample: padding_mode must be zeros, border or reflection, got "
                          f"{padding_mode!r}")
    sizes = X.shape[2:]
    if grid.ndim != X.ndim or grid.shape[0] != X.shape[0] or grid.shape[-1] != len(sizes):
        raise KernelError(f"GridSample: grid of shape {tuple(grid.shape)} does not fit X of shape "
                          f"{tuple(X.shape)}; expected (N, *out, {len(sizes)})")
    n, c = X.shape[:2]
    out_shape = grid.shape[1:-1]
    # integer images interpolate in float and truncate back, as the reference evaluator does
    work = X.dtype if X.dtype.kind == "f" else grid.dtype
    # per axis of X's spatial dims: (read indices, interpolation weights, inside mask) per corner
    axis_corners = []
    for axis, size in enumerate(sizes):
        coord = grid[..., len(sizes) - 1 - axis].astype(work, copy=False)
        if align_corners:
            coord = (coord + 1) / 2 * (size - 1)
            low, high = 0.0, size - 1.0
        else:
            coord = ((coord + 1) * size - 1) / 2
            low, high = -0.5, size - 0.5
        if mode == "nearest":
            coord = xp.rint(coord)
        if padding_mode == "border":
            coord = xp.where((coord < low) | (coord > high), xp.clip(coord, 0, size - 1), coord)
        elif padding_mode == "reflection":
            coord = _reflect(xp, coord, low, high)
        if mode == "nearest":
            offsets, weights = [0], [None]
            base = coord.astype(xp.int64)
        else:
            floor = xp.floor(coord)
            t = coord - floor
            base = floor.astype(xp.int64)
            if mode == "linear":
                offsets, weights = [0, 1], [1 - t, t]
            else:
                offsets, weights = [-1, 0, 1, 2], _cubic_weights(t)
        corners = []
        for offset, weight in zip(offsets, weights):
            index, inside = _pixel_index(xp, base + offset, size, low, high, padding_mode)
            corners.append((index, weight, inside))
        axis_corners.append(corners)

    strides = [int(np.prod(sizes[axis + 1:])) for axis in range(len(sizes))]
    images = X.reshape(n, c, -1).astype(work, copy=False)
    result = xp.zeros((n, c, int(np.prod(out_shape))), dtype=work)
    for corner in itertools.product(*axis_corners):
        flat = sum(index * stride for (index, _, _), stride in zip(corner, strides)).reshape(n, -1)
        weight = None
        for _, axis_weight, inside in corner:
            for factor in (axis_weight, inside):
                if factor is not None:
                    weight = factor if weight is None else weight * factor
        if weight is not None:
            weight = weight.astype(work, copy=False).reshape(n, 1, -1)
        # per image, a column gather reads within each channel's row: cache-friendly, no transposes
        for image in range(n):
            values = xp.take(images[image], flat[image], axis=1)
            if weight is not None:
                values *= weight[image]
            result[image] += values
    return (result.astype(X.dtype, copy=False).reshape(n, c, *out_shape),)


def _base_coordinates(xp, size, align_corners, dtype):
    """Evenly spaced positions in [-1, 1] of `size` pixels (centres when align_corners=0)."""
    if size == 1:
        return xp.zeros(1, dtype=dtype)
    steps = xp.arange(size, dtype=dtype)
    if align_corners:
        return (steps * 2 / (size - 1) - 1).astype(dtype)
    return ((steps * 2 + 1) / size - 1).astype(dtype)


@kernel("AffineGrid", since=20)
def affine_grid(xp, theta, size, *, align_corners=0):
    """The sampling grid [N, (D,) H, W, 2 or 3] that affine matrices `theta` [N, 2, 3] or
    [N, 3, 4] make of an image of `size` (N, C, (D,) H, W), for GridSample.

    Example:
        >>> import numpy as np
        >>> identity = np.float32([[[1, 0, 0], [0, 1, 0]]])
        >>> affine_grid(np, identity, np.array([1, 1, 1, 2]))[0]
        array([[[[-0.5,  0. ],
                 [ 0.5,  0. ]]]], dtype=float32)
    """
    spatial = [int(s) for s in size[2:]]
    if theta.ndim != 3 or theta.shape[1:] != (len(spatial), len(spatial) + 1):
        raise KernelError(f"AffineGrid: theta of shape {tuple(theta.shape)} does not fit size "
                          f"{[int(s) for s in size]}; expected (N, {len(spatial)}, "
                          f"{len(spatial) + 1})")
    axes = [_base_coordinates(xp, s, align_corners, theta.dtype) for s in spatial]
    mesh = xp.meshgrid(*axes, indexing="ij")  # (d,) h, w order; the grid lists x (w) first
    ones = xp.ones_like(mesh[0])
    positions = xp.stack([*mesh[::-1], ones], axis=-1).reshape(-1, len(spatial) + 1)
    grid = positions @ xp.swapaxes(theta, 1, 2)  # [N, P, len(spatial)]
    return (grid.reshape(theta.shape[0], *spatial, len(spatial)).astype(theta.dtype, copy=False),)


@kernel("CenterCropPad", since=18)
def center_crop_pad(xp, input_data, shape, *, axes=None):
    """Crop (window start rounded down) or zero-pad (extra pixel at the end) `axes` to `shape`.

    Example:
        >>> import numpy as np
        >>> center_crop_pad(np, np.arange(5), np.array([3]))[0]
        array([1, 2, 3])
    """
    rank = input_data.ndim
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    targets = [int(s) for s in shape]
    if len(targets) != len(axes):
        raise KernelError(f"CenterCropPad: shape has {len(targets)} entries for {len(axes)} axes")
    source = [slice(None)] * rank
    destination = [slice(None)] * rank
    out_shape = list(input_data.shape)
    for axis, target in zip(axes, targets):
        size = input_data.shape[axis]
        out_shape[axis] = target
        if size >= target:
            start = (size - target) // 2
            source[axis] = slice(start, start + target)
        else:
            start = (target - size) // 2
            destination[axis] = slice(start, start + size)
    result = xp.zeros(out_shape, dtype=input_data.dtype)
    result[tuple(destination)] = input_data[tuple(source)]
    return (result,)


@kernel("Col2Im", since=18)
def col2im(xp, input, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    """Sum column blocks [N, C * prod(block), L] back into an image [N, C, *image_shape]
    (PyTorch's fold, any number of spatial dims).

    Example:
        >>> import numpy as np
        >>> col2im(np, np.ones((1, 2, 2), np.float32), np.array([1, 3]), np.array([1, 2]))[0]
        array([[[[1., 2., 1.]]]], dtype=float32)
    """
    image = [int(s) for s in image_shape]
    block = [int(s) for s in block_shape]
    rank = len(image)
    dilations = list(dilations or [1] * rank)
    strides = list(strides or [1] * rank)
    pads = list(pads or [0] * (2 * rank))
    n, columns, count = input.shape
    block_size = int(np.prod(block))
    if columns % block_size:
        raise KernelError(f"Col2Im: input dim 1 ({columns}) is not a multiple of the block size "
                          f"{block_size} (block_shape {block})")
    channels = columns // block_size
    padded = [image[i] + pads[i] + pads[i + rank] for i in range(rank)]
    blocks_per_axis = [(padded[i] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1
                       for i in range(rank)]
    if int(np.prod(blocks_per_axis)) != count:
        raise KernelError(f"Col2Im: input has {count} blocks, the image shape, block shape, "
                          f"pads, strides and dilations give {int(np.prod(blocks_per_axis))}")
    values = input.reshape(n, channels, *block, *blocks_per_axis)
    result = xp.zeros((n, channels, *padded), dtype=input.dtype)
    # blocks overlap, but one block element lands on a strided grid of distinct pixels, so a loop
    # over the few block elements adds whole strided slices
    for element in itertools.product(*[range(b) for b in block]):
        target = tuple(slice(element[i] * dilations[i],
                             element[i] * dilations[i] + (blocks_per_axis[i] - 1) * strides[i] + 1,
                             strides[i]) for i in range(rank))
        result[(slice(None), slice(None), *target)] += values[(slice(None), slice(None), *element)]
    crop = tuple(slice(pads[i], pads[i] + image[i]) for i in range(rank))
    return (result[(slice(None), slice(None), *crop)],)


def _to_host(xp, array):
    return array if xp is np else xp.asnumpy(array)


def _box_extents(boxes, center_point_box):
    """(x_min, x_max, y_min, y_max, area) of boxes [M, 4]."""
    if center_point_box:
        half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
        x_min, x_max = boxes[:, 0] - half_w, boxes[:, 0] + half_w
        y_min, y_max = boxes[:, 1] - half_h, boxes[:, 1] + half_h
    else:  # [y1, x1, y2, x2], either corner first
        y_min, y_max = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
        x_min, x_max = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    return x_min, x_max, y_min, y_max, (x_max - x_min) * (y_max - y_min)


def _suppresses(first, second, iou_threshold):
    """[len(first), len(second)] booleans: IoU strictly above the threshold (boxes as extents;
    boxes without area neither suppress nor get suppressed)."""
    x_min, x_max, y_min, y_max, area = (e[:, None] for e in first)
    inter_w = np.maximum(np.minimum(x_max, second[1]) - np.maximum(x_min, second[0]), 0)
    inter_h = np.maximum(np.minimum(y_max, second[3]) - np.maximum(y_min, second[2]), 0)
    intersection = inter_w * inter_h
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 where nothing overlaps: False
        iou = intersection / (area + second[4] - intersection)
    return (iou > iou_threshold) & (intersection > 0) & (area > 0) & (second[4] > 0)


def _greedy_picks(ranked, limit, iou_threshold) -> list[int]:
    """Positions (best first) that greedy NMS keeps among boxes ranked by score.

    Candidates go in chunks: a chunk is first checked against every box already kept, then
    greedily within itself from its pairwise matrix, so no full M x M matrix is built and the
    work stops once `limit` boxes are kept."""
    picks: list[int] = []
    count, begin = len(ranked[0]), 0
    while begin < count:
        size = min(256, max(64, 2 * (limit - len(picks))))  # about what is still to be kept
        chunk = tuple(e[begin:begin + size] for e in ranked)
        alive = np.ones(len(chunk[0]), dtype=bool)
        if picks:
            kept = tuple(e[picks] for e in ranked)
            alive &= ~_suppresses(kept, chunk, iou_threshold).any(axis=0)
        pairwise = _suppresses(chunk, chunk, iou_threshold)
        for i in range(len(alive)):  # greedy by nature: each pick depends on the previous ones
            if alive[i]:
                picks.append(begin + i)
                if len(picks) == limit:
                    return picks
                alive &= ~pairwise[i]
        begin += size
    return picks


@kernel("NonMaxSuppression", since=10)
def non_max_suppression(xp, boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box=0):
    """Greedy per-class NMS of boxes [B, M, 4] by scores [B, C, M]; rows [batch, class, box].

    Example:
        >>> import numpy as np
        >>> boxes = np.float32([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3]]])
        >>> scores = np.float32([[[0.9, 0.8, 0.7]]])
        >>> non_max_suppression(np, boxes, scores, np.array([3]), np.float32([0.5]))[0]
        array([[0, 0, 0],
               [0, 0, 2]])
    """
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 \
            or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
        raise KernelError(f"NonMaxSuppression: boxes {tuple(boxes.shape)} and scores "
                          f"{tuple(scores.shape)} do not fit; expected [B, M, 4] and [B, C, M]")
    limit = 0 if max_output_boxes_per_class is None or max_output_boxes_per_class.size == 0 \
        else max(int(max_output_boxes_per_class.reshape(-1)[0]), 0)
    iou = 0.0 if iou_threshold is None or iou_threshold.size == 0 \
        else float(iou_threshold.reshape(-1)[0])
    threshold = None if score_threshold is None or score_threshold.size == 0 \
        else float(_to_host(xp, score_threshold).reshape(-1)[0])
    boxes, scores = _to_host(xp, boxes), _to_host(xp, scores)
    selected = []
    for batch in range(boxes.shape[0] if limit else 0):
        extents = _box_extents(boxes[batch], center_point_box)
        for cls in range(scores.shape[1]):
            class_scores = scores[batch, cls]
            order = np.argsort(-class_scores, kind="stable")  # ties: lower box index first
            if threshold is not None:
                order = order[class_scores[order] > threshold]
            ranked = tuple(e[order] for e in extents)
            selected += [(batch, cls, int(order[p])) for p in _greedy_picks(ranked, limit, iou)]
    return (xp.asarray(np.array(selected, dtype=np.int64).reshape(-1, 3)),)


def _roi_axis_samples(start, bin_size, grid, pooled, size, dtype):
    """Bilinear corners along one axis of the samples of every RoI: (low, high, w_low, w_high,
    used), each [RoIs, pooled, most samples per bin]. Samples beyond [-1, size] get zero weights;
    `used` is False past a RoI's own sample count."""
    most = max(int(grid.max(initial=0)), 1)
    step = np.arange(most)
    coords = (start[:, None, None] + np.arange(pooled)[None, :, None] * bin_size[:, None, None]
              + (step + 0.5) * (bin_size / np.maximum(grid, 1))[:, None, None])
    used = np.broadcast_to(step < grid[:, None, None], coords.shape)
    outside = (coords < -1.0) | (coords > size) | ~used
    coords = np.maximum(coords, 0)
    low = np.floor(coords).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    frac = np.where(at_end, 0.0, coords - low)
    w_high = np.where(outside, 0.0, frac).astype(dtype)
    w_low = np.where(outside, 0.0, 1 - frac).astype(dtype)
    return np.where(outside, 0, low), np.where(outside, 0, high), w_low, w_high, used


@kernel("RoiAlign", since=10)
def roi_align(xp, X, rois, batch_indices, *, coordinate_transformation_mode="half_pixel",
              mode="avg", output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0):
    """Average (or max) of bilinear samples in each bin of each RoI [x1, y1, x2, y2] of X
    [N, C, H, W]; result [num_rois, C, output_height, output_width].

    Example:
        >>> import numpy as np
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        >>> roi_align(np, x, np.float32([[0, 0, 4, 4]]), np.array([0]))[0]
        array([[[[7.5]]]], dtype=float32)
    """
    mode = _text(mode)
    if mode not in ("avg", "max"):
        raise KernelError(f"RoiAlign: mode must be avg or max, got {mode!r}")
    if rois.ndim != 2 or rois.shape[1] != 4 or batch_indices.shape != (rois.shape[0],):
        raise KernelError(f"RoiAlign: rois {tuple(rois.shape)} and batch_indices "
                          f"{tuple(batch_indices.shape)} do not fit; expected [R, 4] and [R]")
    half_pixel = _text(coordinate_transformation_mode) == "half_pixel"
    height, width = X.shape[2:]
    corners = _to_host(xp, rois).astype(np.float64) * spatial_scale - (0.5 if half_pixel else 0.0)
    batches = _to_host(xp, batch_indices).astype(np.int64)
    roi_w, roi_h = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
    if not half_pixel:
        roi_w, roi_h = np.maximum(roi_w, 1.0), np.maximum(roi_h, 1.0)
    bin_h, bin_w = roi_h / output_height, roi_w / output_width
    # each RoI samples its own grid per bin; all RoIs go at once, padded to the largest grid
    grid_h = np.full(len(corners), sampling_ratio) if sampling_ratio > 0 else np.ceil(bin_h)
    grid_w = np.full(len(corners), sampling_ratio) if sampling_ratio > 0 else np.ceil(bin_w)
    grid_h, grid_w = grid_h.astype(np.int64), grid_w.astype(np.int64)
    y_low, y_high, wy_low, wy_high, used_y = _roi_axis_samples(
        corners[:, 1], bin_h, grid_h, output_height, height, X.dtype)
    x_low, x_high, wx_low, wx_high, used_x = _roi_axis_samples(
        corners[:, 0], bin_w, grid_w, output_width, width, X.dtype)
    # channels last, so that one row gather fetches every channel of a sample point
    pixels = xp.ascontiguousarray(xp.moveaxis(X, 1, -1)).reshape(-1, X.shape[1])
    rows = (batches * height).reshape(-1, 1, 1, 1, 1)
    sample_shape = (*y_low.shape, *x_low.shape[1:])  # [RoIs, out_h, grid_h, out_w, grid_w]
    weighted = []
    for yi, wy in ((y_low, wy_low), (y_high, wy_high)):
        for xi, wx in ((x_low, wx_low), (x_high, wx_high)):
            weight = xp.asarray(wy[:, :, :, None, None] * wx[:, None, None, :, :])
            flat = (rows + yi[:, :, :, None, None]) * width + xi[:, None, None, :, :]
            values = xp.take(pixels, xp.asarray(flat.reshape(-1)), axis=0)
            weighted.append(values.reshape(*sample_shape, -1) * weight[..., None])
    count = np.maximum(grid_h * grid_w, 1).astype(X.dtype)
    if mode == "avg":
        pooled = sum(weighted).sum(axis=(2, 4)) / xp.asarray(count).reshape(-1, 1, 1, 1)
    else:
        used = xp.asarray(used_y[:, :, :, None, None] & used_x[:, None, None, :, :])[..., None]
        best = xp.maximum(xp.maximum(weighted[0], weighted[1]),
                          xp.maximum(weighted[2], weighted[3]))
        pooled = xp.where(used, best, -xp.inf).max(axis=(2, 4))
        pooled = xp.where(xp.isneginf(pooled), 0, pooled)  # a RoI without samples gives 0
    return (xp.moveaxis(pooled.astype(X.dtype, copy=False), -1, 1),)


@kernel("LRN", since=1)
def lrn(xp, X, *, size, alpha=0.0001, beta=0.75, bias=1.0):
    """Local response normalisation across channels: X / (bias + alpha/size * sum x^2)^beta over
    a window of `size` channels around each.

    Example:
        >>> import numpy as np
        >>> lrn(np, np.ones((1, 3, 1, 1), np.float32), size=3, alpha=3.0, beta=1.0)[0].ravel()
        array([0.33333334, 0.25      , 0.33333334], dtype=float32)
    """
    dtype = X.dtype.type
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = X * X
    pad = [(0, 0)] * X.ndim
    pad[1] = (before + 1, after)
    running = xp.cumsum(xp.pad(squares, pad), axis=1, dtype=X.dtype)
    channels = X.shape[1]
    window = running[:, size:size + channels] - running[:, :channels]
    return ((X / (dtype(bias) + dtype(alpha / size) * window) ** dtype(beta)),)
