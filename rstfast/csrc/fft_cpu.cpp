// CPU kernels of the FFT backend (rstfast/fft): transforms between real planes and tile-major
// spectra, and the per-bin complex products, vectorized by the compiler (no intrinsics).
//
// Tile-major spectra. A spectrum of P planes over `bins` frequency bins b = k_h * half + k_w
// (half = N_w / 2 + 1) is stored [tiles, P, 2, L]: L = 64 bytes / sizeof(T) consecutive bins
// form a tile (one cache line of real parts, one of imaginary parts per plane), bins past `bins`
// are zero padding. Every tile of every plane is one SIMD-friendly block: the products put bins
// in the vector lanes, and a tile holds all planes of those bins contiguously.
//
// Transforms (fft_to_tiles / fft_from_tiles) work on groups of L planes with the planes in the
// vector lanes: each one-dimensional DFT is a small matrix of phases (broadcast scalars) times
// the group's samples, register-blocked; the group is transposed from / to the planes' own
// layout (any strides) and from / to the tile-major spectrum in local buffers.
// Products (fft_tile_products): out[g][m, n] (+)= sum over the pairs j of group g and k of
// a_j[m, k] * b_j[k, n] per bin, the bins of a tile in the lanes, an MB x NB block of outputs in
// registers, every pair and k accumulated in one pass.
//
// Complex arithmetic: the 4-multiply product (re += ar br - ai bi, im += ar bi + ai br: 4 FMAs
// into 2 accumulators). Gauss's 3-multiply form (3 FMAs into 3 accumulators, with the operand
// sums ar + ai, bi - br, br + bi) was measured slower: with 32 vector registers it allows 8
// outputs per block instead of 12 and loads 3 planes per operand instead of 2, so the loop is
// bound by loads, not FMAs. On the 2-core Xeon (AVX-512, one core, operands in L1, 8 flops per
// complex multiply-add counted for both): 4-multiply 3 x 4 block 152 GFLOP/s, Gauss with the
// sums stored 2 x 4 block 121, with the sums formed in the loop 2 x 4 block 86-90 (operands
// streamed from L2: 4-multiply 128).

// ATen's vector helpers (at::vec) for the instruction set this file is compiled for, in an inline
// namespace of their own (not libtorch's): the transposes between the planes' layout, the
// planes-in-lanes groups and the tiles use its 16 x 16 block transposes (float32).
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define CPU_CAPABILITY_AVX2
#endif
#define CPU_CAPABILITY rstfast_fft_cpu
#include <ATen/cpu/vec/vec.h>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace rstfast {
namespace {

// Bins per tile and planes per transform group: one 64-byte cache line.
template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

// One SIMD register of the ISA the file is compiled for (rstfast/csrc/build.py picks the
// -march level at build time); a tile is processed in kLanes / kWidth parts.
#if defined(__AVX512F__)
constexpr int64_t kRegisterBytes = 64;
constexpr bool kManyRegisters = true;   // 32 vector registers
#elif defined(__AVX__)
constexpr int64_t kRegisterBytes = 32;
constexpr bool kManyRegisters = false;  // 16
#elif defined(__aarch64__)
constexpr int64_t kRegisterBytes = 16;
constexpr bool kManyRegisters = true;   // NEON: 32
#else
constexpr int64_t kRegisterBytes = 16;
constexpr bool kManyRegisters = false;
#endif
template <typename T>
constexpr int64_t kWidth = kRegisterBytes / sizeof(T);

// Register blocks (accumulators = 2 * rows * cols vectors for complex, rows * cols for real),
// chosen by measurement on the 2-core Xeon, one core, AVX-512 and -march=x86-64-v3 (AVX2)
// builds: products 3 x 4 (AVX-512; 4 x 3, 2 x 5, 2 x 6 within noise, 2 x 2 and 1 x 12 slower)
// and 2 x 4 (AVX2; 2 x 2 and 3 x 2 10-20 % slower); transforms real 4 x 4 / complex 2 x 4
// (AVX-512) and 3 x 4 / 2 x 3 (AVX2: 1.1-1.4x the 2 x 3 / 1 x 3 blocks).
constexpr int kProductRows = kManyRegisters ? 3 : 2;   // MB: rows of the output block
constexpr int kProductCols = 4;                         // NB
constexpr int kRealRows = kManyRegisters ? 4 : 3;
constexpr int kRealCols = 4;
constexpr int kComplexRows = 2;
constexpr int kComplexCols = kManyRegisters ? 4 : 3;

// Calls f(std::integral_constant<int, R>, std::integral_constant<int, C>) for the runtime block
// (rows, cols), 1 <= rows <= RMax, 1 <= cols <= CMax: the tails of a blocked loop get their own
// fully unrolled kernel.
template <int R, int CMax, typename F>
void select_cols(int cols, F&& f) {
  if constexpr (CMax >= 1) {
    if (cols == CMax) {
      f(std::integral_constant<int, R>{}, std::integral_constant<int, CMax>{});
    } else {
      select_cols<R, CMax - 1>(cols, f);
    }
  }
}

template <int RMax, int CMax, typename F>
void select_block(int rows, int cols, F&& f) {
  if constexpr (RMax >= 1) {
    if (rows == RMax) {
      select_cols<RMax, CMax>(cols, f);
    } else {
      select_block<RMax - 1, CMax>(rows, cols, f);
    }
  }
}

// ------------------------------------------------------------------------------ transforms

// dst[j * ld_dst + i] = src[i * ld_src + j] for i < rows, j < cols, in 16 x 16 blocks.
template <typename T>
void transpose(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t rows,
               int64_t cols) {
  for (int64_t i = 0; i < rows; i += 16) {
    const int m = static_cast<int>(std::min<int64_t>(16, rows - i));
    for (int64_t j = 0; j < cols; j += 16) {
      const int n = static_cast<int>(std::min<int64_t>(16, cols - j));
      const T* from = src + i * ld_src + j;
      T* to = dst + j * ld_dst + i;
      if (m == 16 && n == 16) {
        at::vec::transpose_mxn<T, 16, 16>(from, ld_src, to, ld_dst);
      } else {
        at::vec::transpose_mxn<T>(from, ld_src, to, ld_dst, m, n);
      }
    }
  }
}

// out[r][c] = sum_i m[r*mr + i*mi] * in[i*is + c*cs] for an R x C block; in and out entries are
// vectors of kLanes planes (strides in elements).
template <typename T, int R, int C>
void real_block(const T* m, int64_t mr, int64_t mi, const T* in, int64_t is, int64_t cs, T* out,
                int64_t ors, int64_t ocs, int64_t count) {
  constexpr int64_t W = kWidth<T>;
  for (int64_t part = 0; part < kLanes<T>; part += W) {
    T acc[R][C][W];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c)
#pragma omp simd
        for (int64_t l = 0; l < W; ++l) acc[r][c][l] = 0;
    for (int64_t i = 0; i < count; ++i) {
      const T* x = in + i * is + part;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const T coefficient = m[r * mr + i * mi];
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c)
#pragma omp simd
          for (int64_t l = 0; l < W; ++l) acc[r][c][l] += coefficient * x[c * cs + l];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c)
#pragma omp simd
        for (int64_t l = 0; l < W; ++l) out[r * ors + c * ocs + part + l] = acc[r][c][l];
  }
}

// The complex version: m entries are (re, im) pairs at m[r*mr + i*mi + {0, 1}]; the imaginary
// part of an in / out entry sits in_im / out_im elements after its real part.
template <typename T, int R, int C>
void complex_block(const T* m, int64_t mr, int64_t mi, const T* in, int64_t is, int64_t cs,
                   int64_t in_im, T* out, int64_t ors, int64_t ocs, int64_t out_im,
                   int64_t count) {
  constexpr int64_t W = kWidth<T>;
  for (int64_t part = 0; part < kLanes<T>; part += W) {
    T re[R][C][W], im[R][C][W];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c)
#pragma omp simd
        for (int64_t l = 0; l < W; ++l) re[r][c][l] = im[r][c][l] = 0;
    for (int64_t i = 0; i < count; ++i) {
      const T* x = in + i * is + part;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const T mre = m[r * mr + i * mi], mim = m[r * mr + i * mi + 1];
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          const T* xr = x + c * cs;
          const T* xi = xr + in_im;
#pragma omp simd
          for (int64_t l = 0; l < W; ++l) {
            re[r][c][l] += mre * xr[l];
            re[r][c][l] -= mim * xi[l];
            im[r][c][l] += mre * xi[l];
            im[r][c][l] += mim * xr[l];
          }
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) {
        T* o = out + r * ors + c * ocs + part;
#pragma omp simd
        for (int64_t l = 0; l < W; ++l) {
          o[l] = re[r][c][l];
          o[out_im + l] = im[r][c][l];
        }
      }
  }
}

// The real product out = m @ in over a rows x cols output, in register blocks.
template <typename T>
void real_matmul(const T* m, int64_t mr, int64_t mi, const T* in, int64_t is, int64_t cs, T* out,
                 int64_t ors, int64_t ocs, int64_t rows, int64_t cols, int64_t count) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRealRows) {
    const int rb = static_cast<int>(std::min<int64_t>(kRealRows, rows - r0));
    for (int64_t c0 = 0; c0 < cols; c0 += kRealCols) {
      const int cb = static_cast<int>(std::min<int64_t>(kRealCols, cols - c0));
      select_block<kRealRows, kRealCols>(rb, cb, [&](auto R, auto C) {
        real_block<T, decltype(R)::value, decltype(C)::value>(
            m + r0 * mr, mr, mi, in + c0 * cs, is, cs, out + r0 * ors + c0 * ocs, ors, ocs, count);
      });
    }
  }
}

template <typename T>
void complex_matmul(const T* m, int64_t mr, int64_t mi, const T* in, int64_t is, int64_t cs,
                    int64_t in_im, T* out, int64_t ors, int64_t ocs, int64_t out_im, int64_t rows,
                    int64_t cols, int64_t count) {
  for (int64_t r0 = 0; r0 < rows; r0 += kComplexRows) {
    const int rb = static_cast<int>(std::min<int64_t>(kComplexRows, rows - r0));
    for (int64_t c0 = 0; c0 < cols; c0 += kComplexCols) {
      const int cb = static_cast<int>(std::min<int64_t>(kComplexCols, cols - c0));
      select_block<kComplexRows, kComplexCols>(rb, cb, [&](auto R, auto C) {
        complex_block<T, decltype(R)::value, decltype(C)::value>(
            m + r0 * mr, mr, mi, in + c0 * cs, is, cs, in_im, out + r0 * ors + c0 * ocs, ors, ocs,
            out_im, count);
      });
    }
  }
}

// Real planes z[d0, d1, d2, H, W] (any strides): plane p = (i0 * d1 + i1) * d2 + i2.
struct Planes {
  int64_t sizes[3];
  int64_t strides[3];
  int64_t row_stride, col_stride, rows, cols;

  // z: real planes [D0, D1, D2, H, W], float32 or float64, any strides.
  explicit Planes(const at::Tensor& z)
      : sizes{checked(z).size(0), z.size(1), z.size(2)},
        strides{z.stride(0), z.stride(1), z.stride(2)},
        row_stride(z.stride(3)),
        col_stride(z.stride(4)),
        rows(z.size(3)),
        cols(z.size(4)) {}

  static const at::Tensor& checked(const at::Tensor& z) {
    TORCH_CHECK_VALUE(z.dim() == 5, "z: expected real planes [D0, D1, D2, H, W], got shape ",
                      z.sizes());
    TORCH_CHECK_TYPE(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
                     "z: expected float32 or float64, got ", z.scalar_type());
    return z;
  }
  int64_t count() const { return sizes[0] * sizes[1] * sizes[2]; }
  // The stride between planes first .. first + count - 1 when they are evenly spaced (and do not
  // overlap a row), else 0.
  int64_t step(int64_t first, int64_t count) const {
    if (count < 2) return cols;
    const int64_t base = offset(first), stride = offset(first + 1) - base;
    if (stride < cols && -stride < cols) return 0;
    for (int64_t v = 2; v < count; ++v) {
      if (offset(first + v) - base != v * stride) return 0;
    }
    return stride;
  }
  int64_t offset(int64_t p) const {
    const int64_t i2 = p % sizes[2], i1 = (p / sizes[2]) % sizes[1], i0 = p / (sizes[1] * sizes[2]);
    return i0 * strides[0] + i1 * strides[1] + i2 * strides[2];
  }
};

// Sizes of one transform: spectrum tiles / padded bins, frequencies, samples.
struct TransformShape {
  int64_t tiles, padded_bins, freq_rows, half, rows, cols;
};

// Per-thread work space of the transforms, kept between calls (grown, never shrunk): fresh
// buffers of a few hundred KiB would be page-faulted anew on every call.
template <typename T>
T* scratch(int64_t count) {
  thread_local std::vector<T> space;
  if (static_cast<int64_t>(space.size()) < count) space.resize(count);
  return space.data();
}

// Copies between the planes of a group (kLanes planes from p0, `count` of them) and a buffer
// [H][W][kLanes] with the planes in the lanes: whole planes at once when they are contiguous,
// else row by row; through `rows` ([kLanes][H * W], a staging buffer) unless the group's planes
// are evenly spaced.
template <typename T>
void planes_to_lanes(const T* z, const Planes& planes, int64_t p0, int64_t count, T* lanes,
                     T* rows) {
  constexpr int64_t L = kLanes<T>;
  const int64_t height = planes.rows, width = planes.cols, step = planes.step(p0, count);
  const bool whole = planes.col_stride == 1 && planes.row_stride == width;
  const int64_t span = whole ? height * width : width;     // elements per copied row
  for (int64_t h = 0; h < (whole ? 1 : height); ++h) {
    const int64_t at = h * planes.row_stride;
    if (step != 0 && planes.col_stride == 1) {
      transpose<T>(z + planes.offset(p0) + at, step, lanes + h * width * L, L, count, span);
      continue;
    }
    for (int64_t v = 0; v < count; ++v) {
      const T* from = z + planes.offset(p0 + v) + at;
      T* to = rows + v * span;
      for (int64_t w = 0; w < span; ++w) to[w] = from[w * planes.col_stride];
    }
    transpose<T>(rows, span, lanes + h * width * L, L, count, span);
  }
}

template <typename T>
void lanes_to_planes(const T* lanes, T* z, const Planes& planes, int64_t p0, int64_t count,
                     T* rows) {
  constexpr int64_t L = kLanes<T>;
  const int64_t height = planes.rows, width = planes.cols, step = planes.step(p0, count);
  const bool whole = planes.col_stride == 1 && planes.row_stride == width;
  const int64_t span = whole ? height * width : width;
  for (int64_t h = 0; h < (whole ? 1 : height); ++h) {
    const int64_t at = h * planes.row_stride;
    if (step != 0 && planes.col_stride == 1) {
      transpose<T>(lanes + h * width * L, L, z + planes.offset(p0) + at, step, span, count);
      continue;
    }
    transpose<T>(lanes + h * width * L, L, rows, span, span, count);
    for (int64_t v = 0; v < count; ++v) {
      T* to = z + planes.offset(p0 + v) + at;
      const T* from = rows + v * span;
      for (int64_t w = 0; w < span; ++w) to[w * planes.col_stride] = from[w];
    }
  }
}

// Spectra of the groups of kLanes planes [first, last) of z into the tile-major `out`.
// cols: [W, 2 * half] (column j -> frequency k, real / imaginary part at 2k / 2k + 1);
// rows: [N_h, H, 2] (the phase of row frequency k_h at sample h).
template <typename T>
void to_tiles_groups(const T* z, const Planes& planes, T* out, int64_t out_tile_stride,
                     const T* cols, const T* rows, const TransformShape& s, int64_t first,
                     int64_t last) {
  constexpr int64_t L = kLanes<T>;
  const int64_t height = s.rows, width = s.cols, half = s.half, pb = s.padded_bins;
  const int64_t plane = height * width * L, bins = s.freq_rows * half;
  T* samples = scratch<T>(2 * plane + 2 * half * height * L + 2 * pb * L);
  T* staging = samples + plane;
  T* columns = staging + plane;
  T* spectrum = columns + 2 * half * height * L;
  for (int64_t ri = 0; ri < 2; ++ri)   // the padding bins: zero
    std::fill(spectrum + (ri * pb + bins) * L, spectrum + (ri + 1) * pb * L, T(0));
  for (int64_t group = first; group < last; ++group) {
    const int64_t p0 = group * L, count = std::min<int64_t>(L, planes.count() - p0);
    if (count < L) std::fill(samples, samples + plane, T(0));
    planes_to_lanes<T>(z, planes, p0, count, samples, staging);   // samples[h][w][v]
    // columns[2k + ri][h] = sum_w cols[w][2k + ri] * samples[h][w]
    real_matmul<T>(cols, 1, 2 * half, samples, L, width * L, columns, height * L, L, 2 * half,
                   height, width);
    // spectrum[ri][k_h * half + k_w] = sum_h rows[k_h][h] * columns[2 k_w + (re, im)][h]
    complex_matmul<T>(rows, 2 * height, 2, columns, L, 2 * height * L, height * L, spectrum,
                      half * L, L, pb * L, s.freq_rows, half, height);
    for (int64_t tile = 0; tile < s.tiles; ++tile)   // out[tile][p0 + v][ri][l]
      for (int64_t ri = 0; ri < 2; ++ri)
        transpose<T>(spectrum + (ri * pb + tile * L) * L, L,
                     out + tile * out_tile_stride + (p0 * 2 + ri) * L, 2 * L, L, count);
  }
}

// Real planes of the groups [first, last) from the tile-major `spec`.
// cols: [2 * half, W] (the real inverse along the columns, weights and scale included);
// rows: [H, N_h, 2] (the phase of row frequency k_h at output row h).
template <typename T>
void from_tiles_groups(const T* spec, int64_t spec_tile_stride, T* z, const Planes& planes,
                       const T* cols, const T* rows, const TransformShape& s, int64_t first,
                       int64_t last) {
  constexpr int64_t L = kLanes<T>;
  const int64_t height = s.rows, width = s.cols, half = s.half, pb = s.padded_bins;
  const int64_t plane = height * width * L;
  T* samples = scratch<T>(2 * plane + 2 * half * height * L + 2 * pb * L);
  T* staging = samples + plane;
  T* columns = staging + plane;
  T* spectrum = columns + 2 * half * height * L;
  for (int64_t group = first; group < last; ++group) {
    const int64_t p0 = group * L, count = std::min<int64_t>(L, planes.count() - p0);
    if (count < L) std::fill(spectrum, spectrum + 2 * pb * L, T(0));
    for (int64_t tile = 0; tile < s.tiles; ++tile)   // spectrum[ri][tile * L + l][v]
      for (int64_t ri = 0; ri < 2; ++ri)
        transpose<T>(spec + tile * spec_tile_stride + (p0 * 2 + ri) * L, 2 * L,
                     spectrum + (ri * pb + tile * L) * L, L, count, L);
    // columns[2 k_w + (re, im)][h] = sum_{k_h} rows[h][k_h] * spectrum[k_h * half + k_w]
    complex_matmul<T>(rows, 2 * s.freq_rows, 2, spectrum, half * L, L, pb * L, columns, L,
                      2 * height * L, height * L, height, half, s.freq_rows);
    // samples[h][w] = sum_c cols[c][w] * columns[c][h]
    real_matmul<T>(cols, 1, width, columns, height * L, L, samples, L, width * L, width, height,
                   2 * half);
    lanes_to_planes<T>(samples, z, planes, p0, count, staging);
  }
}

void check_spectrum(const at::Tensor& spec, const char* name, int64_t planes,
                    at::ScalarType dtype) {
  const int64_t lanes = 64 / static_cast<int64_t>(c10::elementSize(dtype));
  TORCH_CHECK_VALUE(spec.dim() == 4 && spec.size(1) == planes && spec.size(2) == 2 &&
                        spec.size(3) == lanes && spec.stride(3) == 1 &&
                        spec.stride(2) == lanes && spec.stride(1) == 2 * lanes,
                    name, ": expected a tile-major spectrum [tiles, ", planes, ", 2, ", lanes,
                    "] with contiguous planes, got shape ", spec.sizes(), " strides ",
                    spec.strides());
  TORCH_CHECK_TYPE(spec.scalar_type() == dtype && spec.device().is_cpu(), name,
                   ": expected a CPU tensor of ", dtype, ", got ", spec.scalar_type(), " on ",
                   spec.device());
}

void check_table(const at::Tensor& table, const char* name, at::IntArrayRef shape,
                 at::ScalarType dtype) {
  TORCH_CHECK_VALUE(table.sizes() == shape && table.is_contiguous() &&
                        table.scalar_type() == dtype && table.device().is_cpu(),
                    name, ": expected a contiguous CPU ", dtype, " table of shape ", shape,
                    ", got ", table.sizes(), " ", table.scalar_type());
}

TransformShape transform_shape(const at::Tensor& spec, int64_t freq_rows, int64_t half,
                               int64_t rows, int64_t cols) {
  const int64_t lanes = spec.size(3), bins = freq_rows * half;
  TORCH_CHECK_VALUE(spec.size(0) == (bins + lanes - 1) / lanes, "spectrum: expected ",
                    (bins + lanes - 1) / lanes, " tiles of ", lanes, " bins for ", freq_rows,
                    " x ", half, " bins, got ", spec.size(0));
  return {spec.size(0), spec.size(0) * lanes, freq_rows, half, rows, cols};
}

// Runs body(first, last) over [0, count) in batches of `grain` that the threads take in turn
// (one atomic counter), so that a thread the OS pauses (the machine may be shared) holds up only
// the batch it is in, not a fixed half of the work. Threads: at::parallel_for (torch's
// intra-op pool); nested inside a parallel region it runs on the calling thread.
template <typename F>
void parallel_batches(int64_t count, int64_t grain, const F& body) {
  if (count <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), (count + grain - 1) / grain);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t first = next.fetch_add(grain); first < count; first = next.fetch_add(grain)) {
      body(first, std::min(count, first + grain));
    }
  });
}

// Batch of a parallel loop over `count` work items: about 8 batches per thread.
int64_t batch_size(int64_t count) {
  return std::max<int64_t>(1, count / (8 * at::get_num_threads()));
}

void fft_to_tiles(const at::Tensor& z, const at::Tensor& out, const at::Tensor& cols,
                  const at::Tensor& rows) {
  const Planes planes(z);
  check_spectrum(out, "out", planes.count(), z.scalar_type());
  TORCH_CHECK_VALUE(cols.dim() == 2 && cols.size(1) % 2 == 0 && rows.dim() == 3,
                    "cols, rows: expected [W, 2 * half] and [N_h, H, 2] tables");
  const int64_t half = cols.size(1) / 2, freq_rows = rows.size(0);
  check_table(cols, "cols", {planes.cols, 2 * half}, z.scalar_type());
  check_table(rows, "rows", {freq_rows, planes.rows, 2}, z.scalar_type());
  const TransformShape shape = transform_shape(out, freq_rows, half, planes.rows, planes.cols);
  const int64_t lanes = out.size(3), groups = (planes.count() + lanes - 1) / lanes;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fft_to_tiles", [&] {
    const scalar_t* z_data = z.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    parallel_batches(groups, batch_size(groups), [&](int64_t first, int64_t last) {
      to_tiles_groups<scalar_t>(z_data, planes, out_data, out.stride(0),
                                cols.const_data_ptr<scalar_t>(), rows.const_data_ptr<scalar_t>(),
                                shape, first, last);
    });
  });
}

void fft_from_tiles(const at::Tensor& spec, const at::Tensor& z, const at::Tensor& cols,
                    const at::Tensor& rows) {
  const Planes planes(z);
  check_spectrum(spec, "spec", planes.count(), z.scalar_type());
  TORCH_CHECK_VALUE(cols.dim() == 2 && cols.size(0) % 2 == 0 && rows.dim() == 3,
                    "cols, rows: expected [2 * half, W] and [H, N_h, 2] tables");
  const int64_t half = cols.size(0) / 2, freq_rows = rows.size(1);
  check_table(cols, "cols", {2 * half, planes.cols}, z.scalar_type());
  check_table(rows, "rows", {planes.rows, freq_rows, 2}, z.scalar_type());
  const TransformShape shape = transform_shape(spec, freq_rows, half, planes.rows, planes.cols);
  const int64_t lanes = spec.size(3), groups = (planes.count() + lanes - 1) / lanes;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fft_from_tiles", [&] {
    const scalar_t* spec_data = spec.const_data_ptr<scalar_t>();
    scalar_t* z_data = z.mutable_data_ptr<scalar_t>();
    parallel_batches(groups, batch_size(groups), [&](int64_t first, int64_t last) {
      from_tiles_groups<scalar_t>(spec_data, spec.stride(0), z_data, planes,
                                  cols.const_data_ptr<scalar_t>(),
                                  rows.const_data_ptr<scalar_t>(), shape, first, last);
    });
  });
}

// -------------------------------------------------------------------------------- products

// out[g][m, n] (+)= sum_{j in group g} sum_k a_j[m, k] * b_j[k, n], per bin. Offsets and strides
// count planes; a plane of a tile is 2 * kLanes elements (real parts, then imaginary parts).
template <typename T>
struct Products {
  const T* a;
  const T* b;
  T* out;
  int64_t a_tile, b_tile, out_tile;                    // tile strides (elements)
  const int64_t* a_offsets;
  const int64_t* b_offsets;
  const int64_t* out_offsets;
  const int64_t* group_ends;                           // pairs of group g: [ends[g-1], ends[g])
  int64_t m, n, k;
  int64_t am, ak, bk, bn, om, on;
  bool accumulate;
};

// Products up to this many k per pass: an NB-column panel of b (k_chunk x NB planes, 2 cache
// lines each) stays in L1 while every row block of a streams past it.
constexpr int64_t kChunk = 48;

// One MB x NB block of outputs at (m0, n0) of the tile pointed to by a, b, out (already offset
// to the tile, the pair and the block's first row / column), over k < count: added to the
// block's current values unless `start` (then it starts from zero).
template <typename T, int MB, int NB>
void product_block(const Products<T>& p, const T* a, const T* b, T* out, int64_t count,
                   bool start) {
  constexpr int64_t L = kLanes<T>, W = kWidth<T>, plane = 2 * L;
  const int64_t am = p.am * plane, ak = p.ak * plane, bk = p.bk * plane, bn = p.bn * plane;
  for (int64_t part = 0; part < L; part += W) {
    T re[MB][NB][W], im[MB][NB][W];
    for (int i = 0; i < MB; ++i)
      for (int j = 0; j < NB; ++j) {
        const T* o = out + (i * p.om + j * p.on) * plane + part;
#pragma omp simd
        for (int64_t l = 0; l < W; ++l) {
          re[i][j][l] = start ? T(0) : o[l];
          im[i][j][l] = start ? T(0) : o[L + l];
        }
      }
    for (int64_t k = 0; k < count; ++k) {
      const T* ak_row = a + k * ak + part;
      const T* bk_row = b + k * bk + part;
#pragma GCC unroll 8
      for (int i = 0; i < MB; ++i) {
        const T* ar = ak_row + i * am;
#pragma GCC unroll 8
        for (int j = 0; j < NB; ++j) {
          const T* br = bk_row + j * bn;
#pragma omp simd
          for (int64_t l = 0; l < W; ++l) {
            re[i][j][l] += ar[l] * br[l];
            re[i][j][l] -= ar[L + l] * br[L + l];
            im[i][j][l] += ar[l] * br[L + l];
            im[i][j][l] += ar[L + l] * br[l];
          }
        }
      }
    }
    for (int i = 0; i < MB; ++i)
      for (int j = 0; j < NB; ++j) {
        T* o = out + (i * p.om + j * p.on) * plane + part;
#pragma omp simd
        for (int64_t l = 0; l < W; ++l) {
          o[l] = re[i][j][l];
          o[L + l] = im[i][j][l];
        }
      }
  }
}

template <typename T>
void run_products(const Products<T>& p, int64_t groups, int64_t tiles) {
  constexpr int64_t plane = 2 * kLanes<T>;
  const int64_t col_blocks = (p.n + kProductCols - 1) / kProductCols;
  const int64_t items = groups * tiles * col_blocks;
  // Consecutive items share the group and tile (the same a tile): batches of consecutive items.
  parallel_batches(items, batch_size(items), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t cb_index = item % col_blocks, tile = (item / col_blocks) % tiles;
      const int64_t g = item / (col_blocks * tiles), n0 = cb_index * kProductCols;
      const int nb = static_cast<int>(std::min<int64_t>(kProductCols, p.n - n0));
      const int64_t first = g == 0 ? 0 : p.group_ends[g - 1], last = p.group_ends[g];
      T* out = p.out + tile * p.out_tile + (p.out_offsets[g] + n0 * p.on) * plane;
      bool start = !p.accumulate;
      for (int64_t pair = first; pair < last; ++pair) {
        const T* a = p.a + tile * p.a_tile + p.a_offsets[pair] * plane;
        const T* b = p.b + tile * p.b_tile + (p.b_offsets[pair] + n0 * p.bn) * plane;
        for (int64_t k0 = 0; k0 < p.k; k0 += kChunk) {
          const int64_t count = std::min<int64_t>(kChunk, p.k - k0);
          for (int64_t m0 = 0; m0 < p.m; m0 += kProductRows) {
            const int mb = static_cast<int>(std::min<int64_t>(kProductRows, p.m - m0));
            select_block<kProductRows, kProductCols>(mb, nb, [&](auto MB, auto NB) {
              product_block<T, decltype(MB)::value, decltype(NB)::value>(
                  p, a + (m0 * p.am + k0 * p.ak) * plane, b + k0 * p.bk * plane,
                  out + m0 * p.om * plane, count, start);
            });
          }
          start = false;
        }
      }
      if (start) {                  // a group without pairs: zero outputs
        for (int64_t m = 0; m < p.m; ++m)
          for (int j = 0; j < nb; ++j)
            std::fill_n(out + (m * p.om + j * p.on) * plane, plane, T(0));
      }
    }
  });
}

void fft_tile_products(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                       at::IntArrayRef a_offsets, at::IntArrayRef b_offsets,
                       at::IntArrayRef out_offsets, at::IntArrayRef group_ends,
                       at::IntArrayRef sizes, at::IntArrayRef strides, bool accumulate) {
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
                   "a: expected float32 or float64, got ", a.scalar_type());
  TORCH_CHECK_VALUE(a.dim() == 4 && b.dim() == 4 && out.dim() == 4,
                    "a, b, out: expected tile-major spectra [tiles, P, 2, L]");
  check_spectrum(a, "a", a.size(1), a.scalar_type());
  check_spectrum(b, "b", b.size(1), a.scalar_type());
  check_spectrum(out, "out", out.size(1), a.scalar_type());
  TORCH_CHECK_VALUE(b.size(0) == a.size(0) && out.size(0) == a.size(0),
                    "a, b, out: expected the same number of tiles, got ", a.size(0), ", ",
                    b.size(0), ", ", out.size(0));
  TORCH_CHECK_VALUE(sizes.size() == 3 && strides.size() == 6,
                    "sizes, strides: expected [M, N, K] and [am, ak, bk, bn, om, on]");
  const int64_t groups = static_cast<int64_t>(group_ends.size());
  TORCH_CHECK_VALUE(a_offsets.size() == b_offsets.size() &&
                        static_cast<int64_t>(out_offsets.size()) == groups &&
                        (groups == 0 || group_ends[groups - 1] ==
                                            static_cast<int64_t>(a_offsets.size())),
                    "offsets: expected one a and b offset per pair, one out offset per group "
                    "and group_ends ending at the number of pairs");
  const int64_t m = sizes[0], n = sizes[1], k = sizes[2];
  auto last_plane = [&](int64_t offset, int64_t rows, int64_t rs, int64_t cols, int64_t cs) {
    return offset + (rows - 1) * rs + (cols - 1) * cs;
  };
  for (int64_t j = 0; j < static_cast<int64_t>(a_offsets.size()); ++j) {
    TORCH_CHECK_VALUE(a_offsets[j] >= 0 && last_plane(a_offsets[j], m, strides[0], k,
                                                      strides[1]) < a.size(1) &&
                          b_offsets[j] >= 0 && last_plane(b_offsets[j], k, strides[2], n,
                                                          strides[3]) < b.size(1),
                      "a_offsets, b_offsets: pair ", j, " reads past its spectrum");
  }
  for (int64_t g = 0; g < groups; ++g) {
    TORCH_CHECK_VALUE(out_offsets[g] >= 0 && last_plane(out_offsets[g], m, strides[4], n,
                                                        strides[5]) < out.size(1) &&
                          (g == 0 ? 0 : group_ends[g - 1]) <= group_ends[g],
                      "out_offsets, group_ends: group ", g, " is out of range");
  }
  if (m == 0 || n == 0) return;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "fft_tile_products", [&] {
    const Products<scalar_t> p{a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
                               out.mutable_data_ptr<scalar_t>(), a.stride(0), b.stride(0),
                               out.stride(0), a_offsets.data(), b_offsets.data(),
                               out_offsets.data(), group_ends.data(), m, n, k, strides[0],
                               strides[1], strides[2], strides[3], strides[4], strides[5],
                               accumulate};
    run_products<scalar_t>(p, groups, a.size(0));
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rstfast_cpp, m) {
  m.def("fft_to_tiles(Tensor z, Tensor(a!) out, Tensor cols, Tensor rows) -> ()");
  m.def("fft_from_tiles(Tensor spec, Tensor(a!) z, Tensor cols, Tensor rows) -> ()");
  m.def("fft_tile_products(Tensor a, Tensor b, Tensor(a!) out, int[] a_offsets, "
        "int[] b_offsets, int[] out_offsets, int[] group_ends, int[] sizes, int[] strides, "
        "bool accumulate) -> ()");
}

TORCH_LIBRARY_IMPL(rstfast_cpp, CPU, m) {
  m.impl("fft_to_tiles", &fft_to_tiles);
  m.impl("fft_from_tiles", &fft_from_tiles);
  m.impl("fft_tile_products", &fft_tile_products);
}

}  // namespace rstfast
