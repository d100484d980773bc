"""The geometry of one roto-scale convolution: the only thing a kernel receives besides tensors.

A :class:`Geometry` is built once per layer. It fixes the sizes (``C``, ``O``, ``F``, ``K``), the
group (``R`` rotations, ``S`` scales, ``T = R*S`` slices, ``t = r*S + s``), the neighbourhood
(``Lr = rotation_size``, ``Ls = scale_size``, ``A = Lr*Ls`` weight offsets, ``a = i*Ls + j``),
stride, padding, the per-scale **support** (side ``n_s`` of the centred box holding every non-zero tap of
scale ``s``; :func:`basis_support` is the one function that computes it) and the layout of the
cropped filter buffer. Batch and spatial sizes come from the tensors of each call.

Index map (``docs/layers.md`` §2.3), written here once for Python: output slice ``t = r*S + s`` with
offset ``a = i*Ls + j`` reads input slice ``q = ((r + i) mod R)*S + s + j``, or nothing when
``s + j >= S`` (zero scales); the lifting layer is the case of one input plane read by every ``t``
with ``a = 0``. :meth:`Geometry.input_slice` and :meth:`Geometry.readers` give it and its inverse.

Filter buffer (flat, float32 — float64 for float64 weights): one block per scale ``s`` at element
``block_offsets[s]``, laid out ``[A, R, O, C, n_s, n_s]``; entry
``[a, r, o, c, u, v] = sum_f weight[o, c, a, f] * basis[f, r*S + s, off_s + u, off_s + v]`` with
``off_s = (K - n_s) // 2``. Each ``(a, r)`` slot is a ``conv2d`` weight ``[O, C, n_s, n_s]``.

Geometries cross ``torch.library`` op boundaries as ``int[]`` (:meth:`Geometry.encode`,
:func:`decode`): the header :data:`HEADER_FIELDS`, then the tables :data:`TABLES` (per-scale support,
crop and block offset, the read table and its inverse, the reader table), so kernels in every
language read the index map and the layout instead of re-deriving them. This module is the layout's
one Python spelling; ``csrc/geometry.h`` is its one C++ spelling (CPU and CUDA), and
``rstfast/triton/layout.py`` reads the offsets this module computes (:meth:`Geometry.table_offsets`).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ._checks import feature_map_shape, positive_int

__all__ = ["Geometry", "basis_support", "decode", "lifting_geometry", "group_geometry",
           "filter_dtype", "index_map", "out_side", "check_basis", "crop_to_support",
           "ENCODING_VERSION",
           "HEADER_FIELDS", "TABLES", "PADDING_MODES"]

# How the input is padded (PyTorch's nn.Conv2d names). Kernels only ever see "zeros": for the
# others the input is padded first (Geometry.pad_input) and the kernels get padding 0.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# Bumped whenever the int[] encoding changes (every decoder checks it: decode() and geometry.h).
ENCODING_VERSION = 2
# The encoding: these header fields, then the tables, each table one after the other.
HEADER_FIELDS = ("version", "lifting", "in_channels", "out_channels", "num_funcs", "kernel_size",
                 "num_rotations", "num_scales", "rotation_size", "scale_size", "stride", "padding")
# support[S] | crop[S] | slot_start[S*A*R] | read[T*A] | reader_start[T_in + 1] | reader[reads]:
# slot_start[(s*A + a)*R + r] = first element of slot (a, r) of scale s in the filter buffer (a
# conv2d weight [O, C, n_s, n_s]); read[t*A + a] = input slice of (t, a) or -1; the readers of
# input slice q are reader[reader_start[q] : reader_start[q + 1]], each t*A + a, in (t, a) order.
TABLES = ("support", "crop", "slot_start", "read", "reader_start", "reader")


@functools.lru_cache(maxsize=64)
def index_map(num_rotations: int, num_scales: int, rotation_size: int,
              scale_size: int) -> Tuple[Tuple[int, ...], ...]:
    """``[t][a]`` -> input slice of the group convolution (the index map, docs/layers.md §2.3):
    output ``t = r*S + s`` with offset ``a = i*Ls + j`` reads ``((r + i) mod R)*S + s + j``, or -1
    when ``s + j >= S`` (the zero scales past the top)."""
    table = []
    for t in range(num_rotations * num_scales):
        r, s = divmod(t, num_scales)
        row = []
        for a in range(rotation_size * scale_size):
            i, j = divmod(a, scale_size)
            row.append(-1 if s + j >= num_scales
                       else ((r + i) % num_rotations) * num_scales + s + j)
        table.append(tuple(row))
    return tuple(table)


def out_side(side: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output side of a convolution: ``(side + 2p - K) // stride + 1``."""
    return (side + 2 * padding - kernel_size) // stride + 1


def filter_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the filter buffer for coefficients of ``dtype``: float64 stays, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class Geometry:
    """Sizes, group, neighbourhood, support and filter layout of one lifting or group conv."""
    lifting: bool
    in_channels: int
    out_channels: int
    num_funcs: int
    kernel_size: int
    num_rotations: int
    num_scales: int
    rotation_size: int
    scale_size: int
    stride: int
    padding: int
    support: Tuple[int, ...]
    padding_mode: str = "zeros"

    def __post_init__(self):
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode: expected one of {PADDING_MODES}, got "
                             f"{self.padding_mode!r}")
        k = self.kernel_size
        if len(self.support) != self.num_scales or any(
                n < 1 or n > k or n % 2 != k % 2 for n in self.support):
            raise ValueError(f"support: expected {self.num_scales} box sides in 1..{k} with the "
                             f"parity of K = {k}, got {list(self.support)}")
        if self.lifting and (self.rotation_size, self.scale_size) != (1, 1):
            raise ValueError("rotation_size, scale_size: a lifting geometry has 1 and 1, got "
                             f"{self.rotation_size} and {self.scale_size}")
        if not 1 <= self.rotation_size <= self.num_rotations:
            raise ValueError(f"rotation_size: expected 1 .. R = {self.num_rotations}, "
                             f"got {self.rotation_size}")
        if not 1 <= self.scale_size <= self.num_scales:
            raise ValueError(f"scale_size: expected 1 .. S = {self.num_scales}, "
                             f"got {self.scale_size}")

    # ----------------------------------------------------------------- sizes
    @property
    def group_size(self) -> int:
        """``T = R*S``."""
        return self.num_rotations * self.num_scales

    @property
    def num_offsets(self) -> int:
        """``A = Lr*Ls`` (1 for the lifting layer)."""
        return self.rotation_size * self.scale_size

    @property
    def in_slices(self) -> int:
        """Slices of the input: 1 (lifting, ``[B, C, H, W]``) or ``T`` (``[B, C, T, H, W]``)."""
        return 1 if self.lifting else self.group_size

    def weight_shape(self) -> Tuple[int, ...]:
        """``[O, C, F]`` (lifting) or ``[O, C, A, F]``."""
        offsets = () if self.lifting else (self.num_offsets,)
        return (self.out_channels, self.in_channels, *offsets, self.num_funcs)

    def out_size(self, height: int, width: int) -> Tuple[int, int]:
        return (out_side(height, self.kernel_size, self.stride, self.padding),
                out_side(width, self.kernel_size, self.stride, self.padding))

    def out_shape(self, x_shape: Sequence[int]) -> Tuple[int, ...]:
        """``[B, O, T, H', W']`` for an input of shape ``x_shape``."""
        return (x_shape[0], self.out_channels, self.group_size,
                *self.out_size(x_shape[-2], x_shape[-1]))

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Rank, channels, group size and spatial size of ``x``; errors name ``name``."""
        feature_map_shape(x, name=name, ndim=4 if self.lifting else 5,
                          channels=self.in_channels, groups=0 if self.lifting else self.group_size)
        h, w = x.shape[-2:]
        if min(h, w) + 2 * self.padding < self.kernel_size:
            raise ValueError(f"{name}: spatial size {h}x{w} with padding {self.padding} is smaller "
                             f"than kernel_size {self.kernel_size}; expected H, W >= "
                             f"{self.kernel_size - 2 * self.padding}")
        if self.padding_mode == "reflect" and min(h, w) <= self.padding:
            raise ValueError(f"{name}: spatial size {h}x{w} is too small for padding "
                             f"{self.padding} with padding_mode 'reflect'; expected H, W > "
                             f"{self.padding}")

    # ------------------------------------------------------------- padding mode
    @functools.cached_property
    def kernel_geometry(self) -> "Geometry":
        """The geometry the kernels run: this one, or for a ``padding_mode`` other than
        ``"zeros"`` the same with padding 0 (the input is padded by :meth:`pad_input` first)."""
        if self.padding_mode == "zeros":
            return self
        return dataclasses.replace(self, padding=0, padding_mode="zeros")

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """x padded by ``padding`` on each side with ``padding_mode`` (each group slice on its
        own; differentiable), or x itself for ``"zeros"`` (the kernels pad with zeros)."""
        if self.padding_mode == "zeros" or self.padding == 0:
            return x
        pad = (self.padding,) * 4
        if self.lifting:
            return F.pad(x, pad, mode=self.padding_mode)
        flat = F.pad(x.flatten(1, 2), pad, mode=self.padding_mode)
        return flat.view(*x.shape[:3], *flat.shape[-2:])

    def check_call(self, x: torch.Tensor, weight: torch.Tensor, basis: Optional[torch.Tensor],
                   bias: Optional[torch.Tensor]) -> None:
        """The one validation of a convolution call: x (:meth:`check_input`), the shapes of
        weight ``[O, C, (A,) F]``, basis ``[F, T, K, K]`` and bias ``[O]`` against this geometry,
        and one device for all; errors name the argument."""
        self.check_input(x)
        expected = {"weight": self.weight_shape(),
                    "basis": (self.num_funcs, self.group_size, self.kernel_size, self.kernel_size),
                    "bias": (self.out_channels,)}
        layouts = {"weight": "(the geometry)", "basis": "([F, T, K, K])", "bias": "(out channels)"}
        for name, tensor in (("weight", weight), ("basis", basis), ("bias", bias)):
            if tensor is None:
                continue
            if tuple(tensor.shape) != tuple(expected[name]):
                raise ValueError(f"{name}: expected shape {tuple(expected[name])} "
                                 f"{layouts[name]}, got {tuple(tensor.shape)}")
            if tensor.device != x.device:
                raise ValueError(f"{name}: expected a tensor on x's device {x.device}, got one "
                                 f"on {tensor.device}")

    # ------------------------------------------------------------- index map
    @functools.cached_property
    def read_table(self) -> Tuple[Tuple[int, ...], ...]:
        """``read_table[t][a]``: the input slice output ``t`` reads through offset ``a`` (-1:
        none; lifting: the single plane 0)."""
        if self.lifting:
            return ((0,),) * self.group_size
        return index_map(self.num_rotations, self.num_scales, self.rotation_size,
                         self.scale_size)

    def input_slice(self, t: int, a: int) -> int:
        return self.read_table[t][a]

    @functools.cached_property
    def reads(self) -> Tuple[Tuple[int, int, int], ...]:
        """Every ``(t, a, q)`` with output ``t`` reading input slice ``q >= 0`` through offset
        ``a``, in ``(t, a)`` order."""
        return tuple((t, a, q) for t, row in enumerate(self.read_table)
                     for a, q in enumerate(row) if q >= 0)

    @functools.cached_property
    def reader_table(self) -> Tuple[Tuple[Tuple[int, int], ...], ...]:
        """The inverse index map: ``reader_table[q]`` lists every ``(t, a)`` whose output reads
        input slice ``q``, in ``(t, a)`` order (empty for a slice no output reads)."""
        table: List[List[Tuple[int, int]]] = [[] for _ in range(self.in_slices)]
        for t, a, q in self.reads:
            table[q].append((t, a))
        return tuple(tuple(readers) for readers in table)

    def readers(self, q: int) -> Tuple[Tuple[int, int], ...]:
        """Every ``(t, a)`` whose output reads input slice ``q``, in ``(t, a)`` order."""
        return self.reader_table[q]

    # --------------------------------------------------------- filter layout
    def block_numel(self, s: int) -> int:
        return self.num_offsets * self.num_rotations * self.slot_numel(s)

    @functools.cached_property
    def block_offsets(self) -> Tuple[int, ...]:
        """Start of each scale's block in the filter buffer."""
        offsets, total = [], 0
        for s in range(self.num_scales):
            offsets.append(total)
            total += self.block_numel(s)
        return tuple(offsets)

    @property
    def filter_numel(self) -> int:
        return self.block_offsets[-1] + self.block_numel(self.num_scales - 1)

    def slot_numel(self, s: int) -> int:
        """Elements of one ``(a, r)`` slot of scale ``s``: ``O * C * n_s * n_s``."""
        return self.out_channels * self.in_channels * self.support[s] ** 2

    def slot_start(self, s: int, a: int, r: int) -> int:
        """First element of slot ``(a, r)`` of scale ``s`` in the filter buffer."""
        return self.block_offsets[s] + (a * self.num_rotations + r) * self.slot_numel(s)

    def filter_block(self, filters: torch.Tensor, s: int) -> torch.Tensor:
        """View of scale ``s``'s block of the flat buffer: ``[A, R, O, C, n_s, n_s]``."""
        n, start = self.support[s], self.block_offsets[s]
        return filters[start:start + self.block_numel(s)].view(
            self.num_offsets, self.num_rotations, self.out_channels, self.in_channels, n, n)

    def crop(self, s: int) -> int:
        """Offset ``(K - n_s) // 2`` of scale ``s``'s box inside the ``K x K`` kernel."""
        return (self.kernel_size - self.support[s]) // 2

    # -------------------------------------------------------------- encoding
    @functools.cached_property
    def tables(self) -> Tuple[int, ...]:
        """The tables of :data:`TABLES`, concatenated (the encoding after its header)."""
        crops = tuple(self.crop(s) for s in range(self.num_scales))
        slots = tuple(self.slot_start(s, a, r) for s in range(self.num_scales)
                      for a in range(self.num_offsets) for r in range(self.num_rotations))
        read = tuple(q for row in self.read_table for q in row)
        starts, reader = [0], []
        for readers in self.reader_table:
            reader.extend(t * self.num_offsets + a for t, a in readers)
            starts.append(len(reader))
        return (*self.support, *crops, *slots, *read, *starts, *reader)

    @functools.cached_property
    def table_offsets(self) -> Dict[str, int]:
        """Start of each table of :data:`TABLES` within :attr:`tables`."""
        sizes = (self.num_scales, self.num_scales,
                 self.num_scales * self.num_offsets * self.num_rotations,
                 self.group_size * self.num_offsets, self.in_slices + 1, len(self.reads))
        starts = itertools.accumulate(sizes[:-1], initial=0)
        return dict(zip(TABLES, starts))

    @functools.cached_property
    def encoded(self) -> Tuple[int, ...]:
        """The header fields of :data:`HEADER_FIELDS`, then :attr:`tables`: everything a kernel
        reads, derived here once (the C++ side only decodes it, csrc/geometry.h). Only a zero-padding
        geometry is encoded (:attr:`kernel_geometry`)."""
        if self.padding_mode != "zeros":
            raise ValueError(f"geometry: kernels run the kernel_geometry (padding 0 after "
                             f"pad_input), not padding_mode {self.padding_mode!r}")
        header = dict(version=ENCODING_VERSION, lifting=int(self.lifting),
                      **{name: getattr(self, name) for name in HEADER_FIELDS[2:]})
        return (*(header[name] for name in HEADER_FIELDS), *self.tables)

    def encode(self) -> List[int]:
        """The ``int[]`` form passed to the ``torch.library`` ops."""
        return list(self.encoded)

    @functools.cached_property
    def key(self) -> str:
        """The encoding as one string (a constant for ``torch.compile``)."""
        return ",".join(map(str, self.encoded))


@functools.lru_cache(maxsize=256)
def _decode(encoded: Tuple[int, ...]) -> Geometry:
    header = len(HEADER_FIELDS)
    if len(encoded) < header or encoded[0] != ENCODING_VERSION:
        raise ValueError(f"geometry: expected an encoding of version {ENCODING_VERSION} "
                         f"(Geometry.encode()), got {list(encoded)}")
    fields = dict(zip(HEADER_FIELDS, encoded[:header]))
    del fields["version"]
    fields["lifting"] = bool(fields["lifting"])
    num_scales = fields["num_scales"]
    geo = Geometry(**fields, support=tuple(encoded[header:header + num_scales]))
    if geo.encoded != encoded:
        raise ValueError(f"geometry: the encoding is not that of {geo} (Geometry.encode())")
    return geo


def decode(encoded: Sequence[int]) -> Geometry:
    """Inverse of :meth:`Geometry.encode` (cached)."""
    return _decode(tuple(int(v) for v in encoded))


def check_basis(basis, num_rotations: int = 1, name: str = "basis") -> torch.Tensor:
    """``basis`` if it is a finite floating-point ``[F, R*S, K, K]`` tensor with odd ``K`` and
    ``R = num_rotations`` dividing its second dim, else a ValueError / TypeError naming ``name``."""
    if not isinstance(basis, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [F, R*S, K, K], got "
                        f"{type(basis).__name__}")
    if basis.dim() != 4 or basis.shape[2] != basis.shape[3] or basis.shape[0] < 1:
        raise ValueError(f"{name}: expected a 4-D tensor [F, R*S, K, K] (square K x K taps), got "
                         f"shape {tuple(basis.shape)}")
    if not basis.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {basis.dtype}")
    if basis.shape[2] % 2 == 0:
        raise ValueError(f"{name}: expected an odd kernel size K (the filters are centred), got "
                         f"K = {basis.shape[2]} (shape {tuple(basis.shape)})")
    positive_int("num_rotations", num_rotations)
    if basis.shape[1] % num_rotations:
        raise ValueError(f"num_rotations: expected a divisor of R*S = {name}.shape[1] = "
                         f"{basis.shape[1]}, got {num_rotations}")
    if not bool(torch.isfinite(basis).all()):
        raise ValueError(f"{name}: expected finite values, got "
                         f"{int((~torch.isfinite(basis)).sum())} NaN or infinite entries")
    return basis


def basis_support(basis: torch.Tensor, num_rotations: int,
                  tolerance: float = 0.0) -> Tuple[int, ...]:
    """Side of the smallest centred square holding every tap of each scale whose magnitude
    exceeds ``tolerance * max|basis|`` (0: every non-zero tap).

    basis ``[F, R*S, K, K]`` (odd ``K``) -> tuple of ``S`` odd ints (``K`` where the scale fills the
    kernel, 1 for an all-zero scale). The fast backends skip the taps outside this box, so they
    must be zero (:func:`crop_to_support` makes them so).
    """
    num_funcs, num_groups, k, _ = basis.shape
    if num_groups % num_rotations:
        raise ValueError(f"num_rotations: expected a divisor of T = basis.shape[1] = "
                         f"{num_groups}, got {num_rotations}")
    threshold = tolerance * basis.abs().max() if tolerance > 0 else 0
    kept = (basis.abs() > threshold).reshape(num_funcs, num_rotations,
                                             num_groups // num_rotations, k, k)
    kept = kept.any(dim=1).any(dim=0).cpu()                    # [S, K, K]
    offsets = torch.arange(k) - k // 2
    ring = torch.maximum(offsets.abs()[:, None], offsets.abs()[None, :])  # Chebyshev radius
    radii = torch.where(kept, ring, 0).flatten(1).amax(dim=1)
    return tuple(2 * int(radius) + 1 for radius in radii)


def crop_to_support(basis: torch.Tensor, num_rotations: int,
                    support: Sequence[int]) -> torch.Tensor:
    """A copy of ``basis`` with every tap outside each scale's support box set to zero."""
    num_funcs, num_groups, k, _ = basis.shape
    per_scale = basis.clone().view(num_funcs, num_rotations, num_groups // num_rotations, k, k)
    offsets = (torch.arange(k) - k // 2).abs()
    ring = torch.maximum(offsets[:, None], offsets[None, :]).to(basis.device)
    for s, n in enumerate(support):
        per_scale[:, :, s][..., ring > n // 2] = 0
    return per_scale.view(basis.shape)


def _check_ints(**values) -> None:
    for key, value in values.items():
        positive_int(key, value, minimum=0 if key == "padding" else 1)


def lifting_geometry(in_channels: int, out_channels: int, basis: torch.Tensor,
                     num_rotations: int, stride: int = 1, padding: int = 0,
                     support: Optional[Sequence[int]] = None,
                     padding_mode: str = "zeros") -> Geometry:
    """Geometry of a lifting conv with basis ``[F, R*S, K, K]`` (support measured when None)."""
    _check_ints(stride=stride, padding=padding, num_rotations=num_rotations)
    num_funcs, num_groups, k, _ = basis.shape
    support = basis_support(basis, num_rotations) if support is None else tuple(support)
    return Geometry(True, in_channels, out_channels, num_funcs, k, num_rotations,
                    num_groups // num_rotations, 1, 1, stride, padding,
                    tuple(int(n) for n in support), padding_mode)


def group_geometry(in_channels: int, out_channels: int, basis: torch.Tensor,
                   num_rotations: int, rotation_size: int = 1, scale_size: int = 1,
                   stride: int = 1, padding: int = 0,
                   support: Optional[Sequence[int]] = None,
                   padding_mode: str = "zeros") -> Geometry:
    """Geometry of a group conv with basis ``[F, R*S, K, K]`` (support measured when None)."""
    _check_ints(stride=stride, padding=padding, num_rotations=num_rotations,
                rotation_size=rotation_size, scale_size=scale_size)
    num_funcs, num_groups, k, _ = basis.shape
    support = basis_support(basis, num_rotations) if support is None else tuple(support)
    return Geometry(False, in_channels, out_channels, num_funcs, k, num_rotations,
                    num_groups // num_rotations, rotation_size, scale_size, stride, padding,
                    tuple(int(n) for n in support), padding_mode)
