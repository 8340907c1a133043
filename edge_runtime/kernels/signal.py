"""Signal kernels: DFT, STFT, MelWeightMatrix and the Hann, Hamming and Blackman windows.

Complex tensors follow ONNX: a trailing dim of 2 holds (real, imaginary); a trailing dim of 1
is a real signal. Transforms run in the input's precision (numpy 2 and cupy keep float32 as
complex64).

Example:
    >>> import numpy as np
    >>> dft(np, np.float32([[1], [0], [0], [0]]), axis=np.array(0))[0]
    array([[1., 0.],
           [1., 0.],
           [1., 0.],
           [1., 0.]], dtype=float32)
"""

from __future__ import annotations

import math

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.elementwise import numpy_dtype
from modelkit.edge_runtime.kernels.registry import kernel


def _scalar(value) -> int:
    return int(value.reshape(-1)[0])


def _as_complex(op, x):
    """The complex signal of a [..., 1] (real) or [..., 2] (real, imaginary) tensor."""
    if x.shape[-1] == 1:
        return x[..., 0]
    if x.shape[-1] == 2:
        return x[..., 0] + 1j * x[..., 1]
    raise KernelError(f"{op}: the last dim of the input must be 1 (real) or 2 (complex), got "
                      f"shape {tuple(x.shape)}")


def _as_pairs(xp, z, dtype):
    return xp.stack([z.real, z.imag], axis=-1).astype(dtype, copy=False)


def _dft(xp, input, dft_length, axis, inverse, onesided):
    rank = input.ndim
    if not -rank <= axis < rank or axis % rank == rank - 1:
        raise KernelError(f"DFT: axis {axis} is out of range for input of rank {rank}; expected "
                          f"a signal dim in [{-rank}, {rank - 2}] (the last holds real/imaginary)")
    axis %= rank
    signal = _as_complex("DFT", input)
    if dft_length is None:
        length = 2 * (input.shape[axis] - 1) if inverse and onesided else input.shape[axis]
    else:
        length = _scalar(dft_length)
    if inverse and onesided:
        return (xp.fft.irfft(signal, n=length, axis=axis)[..., None].astype(input.dtype),)
    if inverse:
        return (_as_pairs(xp, xp.fft.ifft(signal, n=length, axis=axis), input.dtype),)
    spectrum = xp.fft.fft(signal, n=length, axis=axis)
    if onesided:
        kept = [slice(None)] * spectrum.ndim
        kept[axis] = slice(0, length // 2 + 1)
        spectrum = spectrum[tuple(kept)]
    return (_as_pairs(xp, spectrum, input.dtype),)


@kernel("DFT", since=17)
def dft_17(xp, input, dft_length=None, *, axis=1, inverse=0, onesided=0):
    """DFT along the `axis` attribute (opset 17 to 19); see `dft`.

    Example:
        >>> import numpy as np
        >>> dft_17(np, np.float32([[[1], [1]]]))[0]
        array([[[2., 0.],
                [0., 0.]]], dtype=float32)
    """
    return _dft(xp, input, dft_length, axis, inverse, onesided)


@kernel("DFT", since=20)
def dft(xp, input, dft_length=None, axis=None, *, inverse=0, onesided=0):
    """(Inverse) discrete Fourier transform along `axis` (an input, default -2) of a [..., 1]
    real or [..., 2] complex tensor, zero-padded or cut to `dft_length`; `onesided` keeps
    the n//2 + 1 non-redundant bins (or, inverse, takes them and returns a real signal).

    Example: see the module docstring.
    """
    return _dft(xp, input, dft_length, -2 if axis is None else _scalar(axis), inverse, onesided)


@kernel("STFT", since=17)
def stft(xp, signal, frame_step, window=None, frame_length=None, *, onesided=1):
    """Short-time Fourier transform of signal [batch, length, 1 or 2]: the DFT of each windowed
    frame, result [batch, frames, bins, 2].

    Example:
        >>> import numpy as np
        >>> stft(np, np.float32([[[1], [2], [3], [4]]]), np.array(2), frame_length=np.array(2))[0]
        array([[[[ 3.,  0.],
                 [-1.,  0.]],
        <BLANKLINE>
                [[ 7.,  0.],
                 [-1.,  0.]]]], dtype=float32)
    """
    length = signal.shape[1]
    if frame_length is not None:
        frame = _scalar(frame_length)
    else:
        frame = window.shape[0] if window is not None else length
    if window is not None and window.shape[0] != frame:
        raise KernelError(f"STFT: window of length {window.shape[0]} and frame_length {frame} "
                          f"differ")
    step = _scalar(frame_step)
    frames = (length - frame) // step + 1
    starts = xp.arange(frames).reshape(-1, 1) * step
    framed = _as_complex("STFT", signal)[:, starts + xp.arange(frame)]  # [B, frames, frame]
    if window is not None:
        framed = framed * window.astype(signal.dtype, copy=False)
    spectrum = xp.fft.fft(framed, axis=-1)
    if onesided:
        spectrum = spectrum[..., :frame // 2 + 1]
    return (_as_pairs(xp, spectrum, signal.dtype),)


@kernel("MelWeightMatrix", since=17)
def mel_weight_matrix(xp, num_mel_bins, dft_length, sample_rate, lower_edge_hertz,
                      upper_edge_hertz, *, output_datatype=1):
    """[dft_length // 2 + 1, num_mel_bins] triangular filters, evenly spaced on the mel scale
    mel(f) = 2595 log10(1 + f / 700), each peaking at 1.

    Example:
        >>> import numpy as np
        >>> mel_weight_matrix(np, np.array(1), np.array(8), np.array(8000), np.float32(0),
        ...                   np.float32(4000))[0].ravel()
        array([1. , 0.5, 0. , 0. , 0. ], dtype=float32)
    """
    host = [v if xp is np else xp.asnumpy(v) for v in
            (num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz)]
    bins = _scalar(np.asarray(host[0]))
    length, rate = np.asarray(host[1]).reshape(()), np.asarray(host[2]).reshape(())
    low, high = np.asarray(host[3]), np.asarray(host[4])
    # the same operations, in the same dtypes, as the spec's reference: edges are floored to
    # spectrogram bins, so a different rounding path moves whole filters
    low_mel = 2595 * np.log1p(low / 700) / math.log(10)
    high_mel = 2595 * np.log1p(high / 700) / math.log(10)
    edges = np.arange(bins + 2) * ((high_mel - low_mel) / (bins + 2)) + low_mel
    edges = 700 * np.expm1(edges / 2595 * math.log(10))
    edges = (((length + 1) * edges) // rate).astype(np.int64)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(int(length) // 2 + 1).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((left <= j) & (j <= centre),
                          (j - left) / np.maximum(centre - left, 1), 0.0)
        falling = (right - j) / (right - centre)
    rising = np.where((centre == left) & (j == centre), 1.0, rising)
    weights = np.where((centre <= j) & (j < right) & (right > centre), falling, rising)
    return (xp.asarray(weights.astype(numpy_dtype(output_datatype))),)


def _window(xp, size, periodic, output_datatype, cosine_terms):
    """sum_k a_k cos(2 pi k n / N') for n < size, N' = size if periodic else size - 1."""
    length = _scalar(size if xp is np else xp.asnumpy(size))
    period = length if periodic else length - 1
    phase = 2 * np.pi * np.arange(length) / max(period, 1)
    values = sum(a * np.cos(k * phase) for k, a in enumerate(cosine_terms))
    return (xp.asarray(values.astype(numpy_dtype(output_datatype))),)


@kernel("HannWindow", since=17)
def hann_window(xp, size, *, output_datatype=1, periodic=1):
    """The Hann window 0.5 - 0.5 cos(2 pi n / N) (N = size if periodic, else size - 1).

    Example:
        >>> import numpy as np
        >>> hann_window(np, np.array(4))[0]
        array([0. , 0.5, 1. , 0.5], dtype=float32)
    """
    return _window(xp, size, periodic, output_datatype, (0.5, -0.5))


@kernel("HammingWindow", since=17)
def hamming_window(xp, size, *, output_datatype=1, periodic=1):
    """The Hamming window 25/46 - 21/46 cos(2 pi n / N) (N as in HannWindow).

    Example:
        >>> import numpy as np
        >>> hamming_window(np, np.array(2))[0]
        array([0.08695652, 1.        ], dtype=float32)
    """
    return _window(xp, size, periodic, output_datatype, (25 / 46, -21 / 46))


@kernel("BlackmanWindow", since=17)
def blackman_window(xp, size, *, output_datatype=1, periodic=1):
    """The Blackman window 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N) (N as in HannWindow).

    Example:
        >>> import numpy as np
        >>> window = blackman_window(np, np.array(4))[0]
        >>> window.dtype, round(float(window[2]), 6)  # the peak, at the centre
        (dtype('float32'), 1.0)
    """
    return _window(xp, size, periodic, output_datatype, (0.42, -0.5, 0.08))
