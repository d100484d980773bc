// CUDA roto-scale convolutions, forward and backward, float32 accumulation, fp32/fp16/bf16 storage.
//
// forward:     grid (output tiles of 16x16, T * ceil(O / 8), B). Per input channel c and offset a
//              the block stages the input tile and the 8 filters of (o-block, c, a, t), cropped to
//              the box of t and produced from weight and basis, in shared memory; each thread
//              accumulates 8 output channels of one pixel.
// grad input:  grid (input tiles of 16x16, T_in * ceil(C / 8), B). For every (t, a) pair that
//              reads slice q and every o, the block stages the grad_y tile and the 8 filters of
//              (o, c-block, a, t); each thread gathers 8 input channels of one pixel (no atomics).
// grad weight: grid (C * A, O, T). The block stages grad_y chunks in shared memory, accumulates
//              the K*K tap gradients of (t, o, c, a), contracts them with the basis of t and adds
//              the F results to a float32 buffer (atomicAdd, contention T per element).
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

// Input slice read by output slice t with weight offset a, or -1 when it is a zero scale (s+j >= S).
__device__ __forceinline__ int input_slice(const ConvShape& s, int t, int a) {
  if (s.lifting) return 0;
  const int r = t / s.num_scales, sc = t % s.num_scales;
  const int i = a / s.scale_size, j = a % s.scale_size;
  if (sc + j >= s.num_scales) return -1;
  return ((r + i) % s.num_rotations) * s.num_scales + sc + j;
}

// Number of (t, a) pairs that read input slice q, and the k-th of them.
__device__ __forceinline__ int pair_count(const ConvShape& s) {
  return s.lifting ? s.out_slices : s.rotation_size * s.scale_size;
}
__device__ __forceinline__ bool pair_of(const ConvShape& s, int q, int k, int& t, int& a) {
  if (s.lifting) {
    t = k;
    a = 0;
    return true;
  }
  const int i = k / s.scale_size, j = k % s.scale_size;
  const int rq = q / s.num_scales, sq = q % s.num_scales;
  if (sq - j < 0) return false;
  t = ((rq - i + s.num_rotations) % s.num_rotations) * s.num_scales + (sq - j);
  a = k;
  return true;
}

// filters[cb, u, v] (n x n, cb < count) of channels first .. first+count-1 along `channel_is_out`.
template <typename T>
__device__ void stage_filters(float* filters, const T* weight, const T* basis, const ConvShape& s,
                              int t, int a, int n, int o_first, int c_first, bool channel_is_out) {
  const int off = (s.kernel - n) / 2, taps = n * n;
  for (int idx = threadIdx.x; idx < kChannelBlock * taps; idx += blockDim.x) {
    const int cb = idx / taps, u = (idx % taps) / n, v = idx % n;
    const int o = channel_is_out ? o_first + cb : o_first;
    const int c = channel_is_out ? c_first : c_first + cb;
    float value = 0.f;
    if (o < s.out_channels && c < s.in_channels) {
      const T* coeffs = weight + ((static_cast<long long>(o) * s.in_channels + c) * s.offsets + a) *
                                     s.num_funcs;
      const T* tap = basis + (static_cast<long long>(t) * s.kernel + off + u) * s.kernel + off + v;
      const long long func_stride = static_cast<long long>(s.out_slices) * s.kernel * s.kernel;
      for (int f = 0; f < s.num_funcs; ++f) value += to_float(coeffs[f]) * to_float(tap[f * func_stride]);
    }
    filters[idx] = value;
  }
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ weight,
                               const T* __restrict__ basis, const T* __restrict__ bias,
                               T* __restrict__ y, ConvShape s) {
  extern __shared__ float shared[];
  const int span_max = (kTile - 1) * s.stride + s.kernel;
  float* in_tile = shared;
  float* filters = shared + span_max * span_max;

  const int tiles_w = (s.out_width + kTile - 1) / kTile;
  const int h0 = (blockIdx.x / tiles_w) * kTile, w0 = (blockIdx.x % tiles_w) * kTile;
  const int o_blocks = (s.out_channels + kChannelBlock - 1) / kChannelBlock;
  const int t = blockIdx.y / o_blocks, o0 = (blockIdx.y % o_blocks) * kChannelBlock;
  const int b = blockIdx.z;
  const int n = s.box[t], shift = (s.kernel - n) / 2 - s.padding;
  const int span = (kTile - 1) * s.stride + n;
  const int ty = threadIdx.x / kTile, tx = threadIdx.x % kTile;
  const int ho = h0 + ty, wo = w0 + tx;

  float acc[kChannelBlock] = {};
  for (int c = 0; c < s.in_channels; ++c) {
    for (int a = 0; a < s.offsets; ++a) {
      const int q = input_slice(s, t, a);
      if (q < 0) continue;
      const T* plane = x + ((static_cast<long long>(b) * s.in_channels + c) * s.in_slices + q) *
                               s.height * s.width;
      for (int idx = threadIdx.x; idx < span * span; idx += blockDim.x) {
        const int ih = h0 * s.stride + shift + idx / span, iw = w0 * s.stride + shift + idx % span;
        const bool inside = ih >= 0 && ih < s.height && iw >= 0 && iw < s.width;
        in_tile[idx] = inside ? to_float(plane[static_cast<long long>(ih) * s.width + iw]) : 0.f;
      }
      stage_filters(filters, weight, basis, s, t, a, n, o0, c, true);
      __syncthreads();
      if (ho < s.out_height && wo < s.out_width) {
        for (int u = 0; u < n; ++u) {
          for (int v = 0; v < n; ++v) {
            const float xv = in_tile[(ty * s.stride + u) * span + tx * s.stride + v];
#pragma unroll
            for (int ob = 0; ob < kChannelBlock; ++ob) acc[ob] += xv * filters[(ob * n + u) * n + v];
          }
        }
      }
      __syncthreads();
    }
  }
  if (ho >= s.out_height || wo >= s.out_width) return;
  for (int ob = 0; ob < kChannelBlock && o0 + ob < s.out_channels; ++ob) {
    const int o = o0 + ob;
    const float value = acc[ob] + (bias != nullptr ? to_float(bias[o]) : 0.f);
    y[(((static_cast<long long>(b) * s.out_channels + o) * s.out_slices + t) * s.out_height + ho) *
          s.out_width + wo] = from_float<T>(value);
  }
}

template <typename T>
__global__ void grad_input_kernel(const T* __restrict__ grad_y, const T* __restrict__ weight,
                                  const T* __restrict__ basis, T* __restrict__ grad_x,
                                  ConvShape s) {
  extern __shared__ float shared[];
  // Side of the grad_y tile that covers every output read by this input tile (any n <= K).
  const int grad_span = (kTile + s.kernel - 2) / s.stride + 2;
  float* grad_tile = shared;
  float* filters = shared + grad_span * grad_span;

  const int tiles_w = (s.width + kTile - 1) / kTile;
  const int h0 = (blockIdx.x / tiles_w) * kTile, w0 = (blockIdx.x % tiles_w) * kTile;
  const int c_blocks = (s.in_channels + kChannelBlock - 1) / kChannelBlock;
  const int q = blockIdx.y / c_blocks, c0 = (blockIdx.y % c_blocks) * kChannelBlock;
  const int b = blockIdx.z;
  const int ty = threadIdx.x / kTile, tx = threadIdx.x % kTile;
  const int hi = h0 + ty, wi = w0 + tx;

  float acc[kChannelBlock] = {};
  for (int k = 0; k < pair_count(s); ++k) {
    int t, a;
    if (!pair_of(s, q, k, t, a)) continue;
    const int n = s.box[t], shift = (s.kernel - n) / 2 - s.padding;
    // Outputs ho with ho*stride + u + shift inside this input tile, for some tap u < n.
    const int ho_lo = floor_div(h0 - (n - 1) - shift, s.stride);
    const int wo_lo = floor_div(w0 - (n - 1) - shift, s.stride);
    for (int o = 0; o < s.out_channels; ++o) {
      const T* plane = grad_y + ((static_cast<long long>(b) * s.out_channels + o) * s.out_slices + t) *
                                    s.out_height * s.out_width;
      for (int idx = threadIdx.x; idx < grad_span * grad_span; idx += blockDim.x) {
        const int gh = ho_lo + idx / grad_span, gw = wo_lo + idx % grad_span;
        const bool inside = gh >= 0 && gh < s.out_height && gw >= 0 && gw < s.out_width;
        grad_tile[idx] = inside ? to_float(plane[static_cast<long long>(gh) * s.out_width + gw]) : 0.f;
      }
      stage_filters(filters, weight, basis, s, t, a, n, o, c0, false);
      __syncthreads();
      if (hi < s.height && wi < s.width) {
        for (int u = 0; u < n; ++u) {
          const int hh = hi - u - shift;
          if (((hh % s.stride) + s.stride) % s.stride != 0) continue;
          const int row = hh / s.stride - ho_lo;
          for (int v = 0; v < n; ++v) {
            const int ww = wi - v - shift;
            if (((ww % s.stride) + s.stride) % s.stride != 0) continue;
            const float g = grad_tile[row * grad_span + ww / s.stride - wo_lo];
#pragma unroll
            for (int cb = 0; cb < kChannelBlock; ++cb) acc[cb] += g * filters[(cb * n + u) * n + v];
          }
        }
      }
      __syncthreads();
    }
  }
  if (hi >= s.height || wi >= s.width) return;
  for (int cb = 0; cb < kChannelBlock && c0 + cb < s.in_channels; ++cb) {
    grad_x[(((static_cast<long long>(b) * s.in_channels + c0 + cb) * s.in_slices + q) * s.height + hi) *
               s.width + wi] = from_float<T>(acc[cb]);
  }
}

template <typename T>
__global__ void grad_weight_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                                   const T* __restrict__ basis, float* __restrict__ grad_weight,
                                   ConvShape s) {
  __shared__ float grad_chunk[kThreads];
  __shared__ float tap_grad[kMaxKernel * kMaxKernel];
  const int c = blockIdx.x / s.offsets, a = blockIdx.x % s.offsets;
  const int o = blockIdx.y, t = blockIdx.z;
  const int q = input_slice(s, t, a);
  if (q < 0) return;                                   // uniform over the block
  const int n = s.box[t], taps = n * n, shift = (s.kernel - n) / 2 - s.padding;
  const int pixels = s.out_height * s.out_width;

  float acc[kTapsPerThread] = {};
  for (int b = 0; b < s.batch; ++b) {
    const T* grad_plane = grad_y + ((static_cast<long long>(b) * s.out_channels + o) * s.out_slices + t) *
                                       pixels;
    const T* plane = x + ((static_cast<long long>(b) * s.in_channels + c) * s.in_slices + q) *
                             s.height * s.width;
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
          const int ho = (p0 + p) / s.out_width, wo = (p0 + p) % s.out_width;
          const int ih = ho * s.stride + u + shift, iw = wo * s.stride + v + shift;
          if (ih >= 0 && ih < s.height && iw >= 0 && iw < s.width)
            sum += grad_chunk[p] * to_float(plane[static_cast<long long>(ih) * s.width + iw]);
        }
        acc[k] += sum;
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int k = 0; k < kTapsPerThread; ++k) {
    const int tap = threadIdx.x + k * kThreads;
    if (tap < taps) tap_grad[tap] = acc[k];
  }
  __syncthreads();
  const int off = (s.kernel - n) / 2;
  for (int f = threadIdx.x; f < s.num_funcs; f += blockDim.x) {
    const T* slice = basis + (static_cast<long long>(f) * s.out_slices + t) * s.kernel * s.kernel;
    float sum = 0.f;
    for (int tap = 0; tap < taps; ++tap)
      sum += tap_grad[tap] * to_float(slice[(off + tap / n) * s.kernel + off + tap % n]);
    atomicAdd(grad_weight + ((static_cast<long long>(o) * s.in_channels + c) * s.offsets + a) *
                                s.num_funcs + f, sum);
  }
}

template <typename T>
cudaError_t forward_typed(const void* x, const void* weight, const void* basis, const void* bias,
                          void* y, const ConvShape& s, cudaStream_t stream) {
  const int span_max = (kTile - 1) * s.stride + s.kernel;
  const size_t shared = sizeof(float) * (span_max * span_max + kChannelBlock * s.kernel * s.kernel);
  const dim3 grid(((s.out_height + kTile - 1) / kTile) * ((s.out_width + kTile - 1) / kTile),
                  s.out_slices * ((s.out_channels + kChannelBlock - 1) / kChannelBlock), s.batch);
  if (shared > 48 * 1024) {
    const cudaError_t status = cudaFuncSetAttribute(
        forward_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (status != cudaSuccess) return status;
  }
  forward_kernel<T><<<grid, kThreads, shared, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(basis),
      static_cast<const T*>(bias), static_cast<T*>(y), s);
  return cudaGetLastError();
}

template <typename T>
cudaError_t grad_input_typed(const void* grad_y, const void* weight, const void* basis,
                             void* grad_x, const ConvShape& s, cudaStream_t stream) {
  const int grad_span_max = (kTile + s.kernel - 2) / s.stride + 2;
  const size_t shared =
      sizeof(float) * (grad_span_max * grad_span_max + kChannelBlock * s.kernel * s.kernel);
  const dim3 grid(((s.height + kTile - 1) / kTile) * ((s.width + kTile - 1) / kTile),
                  s.in_slices * ((s.in_channels + kChannelBlock - 1) / kChannelBlock), s.batch);
  grad_input_kernel<T><<<grid, kThreads, shared, stream>>>(
      static_cast<const T*>(grad_y), static_cast<const T*>(weight), static_cast<const T*>(basis),
      static_cast<T*>(grad_x), s);
  return cudaGetLastError();
}

template <typename T>
cudaError_t grad_weight_typed(const void* grad_y, const void* x, const void* basis,
                              float* grad_weight, const ConvShape& s, cudaStream_t stream) {
  const dim3 grid(s.in_channels * s.offsets, s.out_channels, s.out_slices);
  grad_weight_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(grad_y), static_cast<const T*>(x), static_cast<const T*>(basis),
      grad_weight, s);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_forward(DType dtype, const void* x, const void* weight, const void* basis,
                           const void* bias, void* y, const ConvShape& shape, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return forward_typed<__half>(x, weight, basis, bias, y, shape, stream);
    case DType::kBFloat16:
      return forward_typed<__nv_bfloat16>(x, weight, basis, bias, y, shape, stream);
    default: return forward_typed<float>(x, weight, basis, bias, y, shape, stream);
  }
}

cudaError_t launch_grad_input(DType dtype, const void* grad_y, const void* weight,
                              const void* basis, void* grad_x, const ConvShape& shape,
                              cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16:
      return grad_input_typed<__half>(grad_y, weight, basis, grad_x, shape, stream);
    case DType::kBFloat16:
      return grad_input_typed<__nv_bfloat16>(grad_y, weight, basis, grad_x, shape, stream);
    default: return grad_input_typed<float>(grad_y, weight, basis, grad_x, shape, stream);
  }
}

cudaError_t launch_grad_weight(DType dtype, const void* grad_y, const void* x, const void* basis,
                               float* grad_weight_f32, const ConvShape& shape,
                               cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16:
      return grad_weight_typed<__half>(grad_y, x, basis, grad_weight_f32, shape, stream);
    case DType::kBFloat16:
      return grad_weight_typed<__nv_bfloat16>(grad_y, x, basis, grad_weight_f32, shape, stream);
    default: return grad_weight_typed<float>(grad_y, x, basis, grad_weight_f32, shape, stream);
  }
}

}  // namespace cuda
}  // namespace rstfast
