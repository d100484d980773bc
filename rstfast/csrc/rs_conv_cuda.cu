// CUDA roto-scale convolutions on the cropped filter buffer, forward and backward, float32
// accumulation, float32 / float16 / bfloat16 activations (filters always float32).
//
// forward:      grid (output tiles of 16x16, T * ceil(O / 8), B). Per offset a (input slice
//               q = input_slice(t, a), skipped when -1) and input channel c the block stages the
//               input tile and the 8 filters of (o-block, c) from slot (a, r) of scale s in shared
//               memory; each thread accumulates 8 output channels of one pixel.
// grad input:   grid (input tiles of 16x16, T_in * ceil(C / 8), B). For every reader (t, a) of
//               input slice q (the geometry's reader table) and every o, the block stages the
//               grad_y tile and the 8 filters of (o, c-block); each thread gathers 8 input
//               channels of one pixel.
// grad filters: grid (C * A, O, T). The block accumulates the n*n tap gradients of (t, a, o, c)
//               over batch and pixels and writes them to their place in the buffer (each element
//               has one writer: no atomics).
#include "rs_conv_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace rstfast {
namespace cuda {
namespace {

constexpr int kTile = 16;                  // output (forward) / input (grad input) tile side
constexpr int kThreads = kTile * kTile;
constexpr int kChannelBlock = 8;           // output channels (forward) / input channels per block
constexpr int kTapsPerThread = (kMaxKernel * kMaxKernel + kThreads - 1) / kThreads;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

__device__ __forceinline__ int floor_div(int a, int b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// filters_tile[cb, u, v] (n x n, cb < kChannelBlock) of channels first .. first+7 along the output
// channel (channel_is_out) or the input channel, for slot (a, r) of scale s.
__device__ void stage_filters(float* filters_tile, const float* filters, const KernelGeometry& g,
                              int s, int a, int r, int o_first, int c_first, bool channel_is_out) {
  const int n = g.support(s), taps = n * n;
  for (int idx = threadIdx.x; idx < kChannelBlock * taps; idx += blockDim.x) {
    const int cb = idx / taps, tap = idx % taps;
    const int o = channel_is_out ? o_first + cb : o_first;
    const int c = channel_is_out ? c_first : c_first + cb;
    filters_tile[idx] = (o < g.out_channels && c < g.in_channels)
                            ? filters[g.filter_at(s, a, r, o, c) + tap] : 0.f;
  }
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ x, const float* __restrict__ filters,
                               const float* __restrict__ bias, T* __restrict__ y,
                               KernelGeometry g) {
  extern __shared__ float shared[];
  const int span_max = (kTile - 1) * g.stride + g.kernel;
  float* in_tile = shared;
  float* filters_tile = shared + span_max * span_max;

  const int tiles_w = (g.out_width + kTile - 1) / kTile;
  const int h0 = (blockIdx.x / tiles_w) * kTile, w0 = (blockIdx.x % tiles_w) * kTile;
  const int o_blocks = (g.out_channels + kChannelBlock - 1) / kChannelBlock;
  const int t = blockIdx.y / o_blocks, o0 = (blockIdx.y % o_blocks) * kChannelBlock;
  const int b = blockIdx.z;
  const int s = t % g.num_scales, r = t / g.num_scales;
  const int n = g.support(s), shift = g.crop(s) - g.padding;
  const int span = (kTile - 1) * g.stride + n;
  const int ty = threadIdx.x / kTile, tx = threadIdx.x % kTile;
  const int ho = h0 + ty, wo = w0 + tx;

  float acc[kChannelBlock] = {};
  for (int a = 0; a < g.offsets; ++a) {
    const int q = g.input_slice(t, a);
    if (q < 0) continue;                                 // uniform over the block
    for (int c = 0; c < g.in_channels; ++c) {
      const T* plane = x + ((static_cast<long long>(b) * g.in_channels + c) * g.in_slices + q) *
                               g.height * g.width;
      for (int idx = threadIdx.x; idx < span * span; idx += blockDim.x) {
        const int ih = h0 * g.stride + shift + idx / span, iw = w0 * g.stride + shift + idx % span;
        const bool inside = ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
        in_tile[idx] = inside ? to_float(plane[static_cast<long long>(ih) * g.width + iw]) : 0.f;
      }
      stage_filters(filters_tile, filters, g, s, a, r, o0, c, true);
      __syncthreads();
      if (ho < g.out_height && wo < g.out_width) {
        for (int u = 0; u < n; ++u) {
          for (int v = 0; v < n; ++v) {
            const float xv = in_tile[(ty * g.stride + u) * span + tx * g.stride + v];
#pragma unroll
            for (int ob = 0; ob < kChannelBlock; ++ob) {
              acc[ob] += xv * filters_tile[(ob * n + u) * n + v];
            }
          }
        }
      }
      __syncthreads();
    }
  }
  if (ho >= g.out_height || wo >= g.out_width) return;
  for (int ob = 0; ob < kChannelBlock && o0 + ob < g.out_channels; ++ob) {
    const int o = o0 + ob;
    const float value = acc[ob] + (bias != nullptr ? bias[o] : 0.f);
    y[(((static_cast<long long>(b) * g.out_channels + o) * g.out_slices + t) * g.out_height + ho) *
          g.out_width + wo] = from_float<T>(value);
  }
}

template <typename T>
__global__ void grad_input_kernel(const T* __restrict__ grad_y, const float* __restrict__ filters,
                                  T* __restrict__ grad_x, KernelGeometry g) {
  extern __shared__ float shared[];
  // Side of the grad_y tile that covers every output read by this input tile (any n <= K).
  const int grad_span = (kTile + g.kernel - 2) / g.stride + 2;
  float* grad_tile = shared;
  float* filters_tile = shared + grad_span * grad_span;

  const int tiles_w = (g.width + kTile - 1) / kTile;
  const int h0 = (blockIdx.x / tiles_w) * kTile, w0 = (blockIdx.x % tiles_w) * kTile;
  const int c_blocks = (g.in_channels + kChannelBlock - 1) / kChannelBlock;
  const int q = blockIdx.y / c_blocks, c0 = (blockIdx.y % c_blocks) * kChannelBlock;
  const int b = blockIdx.z;
  const int ty = threadIdx.x / kTile, tx = threadIdx.x % kTile;
  const int hi = h0 + ty, wi = w0 + tx;

  float acc[kChannelBlock] = {};
  // The readers (t, a) of input slice q: uniform over the block.
  for (int64_t k = g.tables.reader_begin(q); k < g.tables.reader_end(q); ++k) {
    const int t = static_cast<int>(g.tables.reader(k) / g.offsets);
    const int a = static_cast<int>(g.tables.reader(k) % g.offsets);
    const int s = t % g.num_scales, r = t / g.num_scales;
    const int n = g.support(s), shift = g.crop(s) - g.padding;
    // Outputs ho with ho*stride + u + shift inside this input tile, for some tap u < n.
    const int ho_lo = floor_div(h0 - (n - 1) - shift, g.stride);
    const int wo_lo = floor_div(w0 - (n - 1) - shift, g.stride);
    for (int o = 0; o < g.out_channels; ++o) {
      const T* plane = grad_y + ((static_cast<long long>(b) * g.out_channels + o) * g.out_slices +
                                 t) * g.out_height * g.out_width;
      for (int idx = threadIdx.x; idx < grad_span * grad_span; idx += blockDim.x) {
        const int gh = ho_lo + idx / grad_span, gw = wo_lo + idx % grad_span;
        const bool inside = gh >= 0 && gh < g.out_height && gw >= 0 && gw < g.out_width;
        grad_tile[idx] = inside ? to_float(plane[static_cast<long long>(gh) * g.out_width + gw])
                                : 0.f;
      }
      stage_filters(filters_tile, filters, g, s, a, r, o, c0, false);
      __syncthreads();
      if (hi < g.height && wi < g.width) {
        for (int u = 0; u < n; ++u) {
          const int hh = hi - u - shift;
          if (((hh % g.stride) + g.stride) % g.stride != 0) continue;
          const int row = hh / g.stride - ho_lo;
          for (int v = 0; v < n; ++v) {
            const int ww = wi - v - shift;
            if (((ww % g.stride) + g.stride) % g.stride != 0) continue;
            const float gv = grad_tile[row * grad_span + ww / g.stride - wo_lo];
#pragma unroll
            for (int cb = 0; cb < kChannelBlock; ++cb) {
              acc[cb] += gv * filters_tile[(cb * n + u) * n + v];
            }
          }
        }
      }
      __syncthreads();
    }
  }
  if (hi >= g.height || wi >= g.width) return;
  for (int cb = 0; cb < kChannelBlock && c0 + cb < g.in_channels; ++cb) {
    grad_x[(((static_cast<long long>(b) * g.in_channels + c0 + cb) * g.in_slices + q) * g.height +
            hi) * g.width + wi] = from_float<T>(acc[cb]);
  }
}

template <typename T>
__global__ void grad_filters_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                                    float* __restrict__ grad_filters, KernelGeometry g) {
  __shared__ float grad_chunk[kThreads];
  const int c = blockIdx.x / g.offsets, a = blockIdx.x % g.offsets;
  const int o = blockIdx.y, t = blockIdx.z;
  const int q = g.input_slice(t, a);
  if (q < 0) return;                                   // uniform; the slot stays zero
  const int s = t % g.num_scales, r = t / g.num_scales;
  const int n = g.support(s), taps = n * n, shift = g.crop(s) - g.padding;
  const int pixels = g.out_height * g.out_width;

  float acc[kTapsPerThread] = {};
  for (int b = 0; b < g.batch; ++b) {
    const T* grad_plane = grad_y + ((static_cast<long long>(b) * g.out_channels + o) * g.out_slices +
                                    t) * pixels;
    const T* plane = x + ((static_cast<long long>(b) * g.in_channels + c) * g.in_slices + q) *
                             g.height * g.width;
    for (int p0 = 0; p0 < pixels; p0 += kThreads) {
      const int chunk = min(kThreads, pixels - p0);
      if (threadIdx.x < chunk) grad_chunk[threadIdx.x] = to_float(grad_plane[p0 + threadIdx.x]);
      __syncthreads();
#pragma unroll
      for (int k = 0; k < kTapsPerThread; ++k) {
        const int tap = threadIdx.x + k * kThreads;
        if (tap >= taps) break;
        const int u = tap / n, v = tap % n;
        float sum = 0.f;
        for (int p = 0; p < chunk; ++p) {
          const int ho = (p0 + p) / g.out_width, wo = (p0 + p) % g.out_width;
          const int ih = ho * g.stride + u + shift, iw = wo * g.stride + v + shift;
          if (ih >= 0 && ih < g.height && iw >= 0 && iw < g.width)
            sum += grad_chunk[p] * to_float(plane[static_cast<long long>(ih) * g.width + iw]);
        }
        acc[k] += sum;
      }
      __syncthreads();
    }
  }
  float* slot = grad_filters + g.filter_at(s, a, r, o, c);
#pragma unroll
  for (int k = 0; k < kTapsPerThread; ++k) {
    const int tap = threadIdx.x + k * kThreads;
    if (tap < taps) slot[tap] = acc[k];
  }
}

template <typename T>
cudaError_t forward_typed(const void* x, const float* filters, const float* bias, void* y,
                          const KernelGeometry& g, cudaStream_t stream) {
  const int span_max = (kTile - 1) * g.stride + g.kernel;
  const size_t shared = sizeof(float) * (span_max * span_max + kChannelBlock * g.kernel * g.kernel);
  const dim3 grid(((g.out_height + kTile - 1) / kTile) * ((g.out_width + kTile - 1) / kTile),
                  g.out_slices * ((g.out_channels + kChannelBlock - 1) / kChannelBlock), g.batch);
  if (shared > 48 * 1024) {
    const cudaError_t status = cudaFuncSetAttribute(
        forward_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (status != cudaSuccess) return status;
  }
  forward_kernel<T><<<grid, kThreads, shared, stream>>>(static_cast<const T*>(x), filters, bias,
                                                        static_cast<T*>(y), g);
  return cudaGetLastError();
}

template <typename T>
cudaError_t grad_input_typed(const void* grad_y, const float* filters, void* grad_x,
                             const KernelGeometry& g, cudaStream_t stream) {
  const int grad_span_max = (kTile + g.kernel - 2) / g.stride + 2;
  const size_t shared =
      sizeof(float) * (grad_span_max * grad_span_max + kChannelBlock * g.kernel * g.kernel);
  const dim3 grid(((g.height + kTile - 1) / kTile) * ((g.width + kTile - 1) / kTile),
                  g.in_slices * ((g.in_channels + kChannelBlock - 1) / kChannelBlock), g.batch);
  grad_input_kernel<T><<<grid, kThreads, shared, stream>>>(static_cast<const T*>(grad_y), filters,
                                                           static_cast<T*>(grad_x), g);
  return cudaGetLastError();
}

template <typename T>
cudaError_t grad_filters_typed(const void* grad_y, const void* x, float* grad_filters,
                               const KernelGeometry& g, cudaStream_t stream) {
  const dim3 grid(g.in_channels * g.offsets, g.out_channels, g.out_slices);
  grad_filters_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(grad_y), static_cast<const T*>(x), grad_filters, g);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_forward(DType dtype, const void* x, const float* filters, const float* bias_f32,
                           void* y, const KernelGeometry& g, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return forward_typed<__half>(x, filters, bias_f32, y, g, stream);
    case DType::kBFloat16:
      return forward_typed<__nv_bfloat16>(x, filters, bias_f32, y, g, stream);
    default: return forward_typed<float>(x, filters, bias_f32, y, g, stream);
  }
}

cudaError_t launch_grad_input(DType dtype, const void* grad_y, const float* filters, void* grad_x,
                              const KernelGeometry& g, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return grad_input_typed<__half>(grad_y, filters, grad_x, g, stream);
    case DType::kBFloat16:
      return grad_input_typed<__nv_bfloat16>(grad_y, filters, grad_x, g, stream);
    default: return grad_input_typed<float>(grad_y, filters, grad_x, g, stream);
  }
}

cudaError_t launch_grad_filters(DType dtype, const void* grad_y, const void* x, float* grad_filters,
                                const KernelGeometry& g, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return grad_filters_typed<__half>(grad_y, x, grad_filters, g, stream);
    case DType::kBFloat16:
      return grad_filters_typed<__nv_bfloat16>(grad_y, x, grad_filters, g, stream);
    default: return grad_filters_typed<float>(grad_y, x, grad_filters, g, stream);
  }
}

}  // namespace cuda
}  // namespace rstfast
