// The geometry of one roto-scale convolution, decoded from the int[] that Python's
// rstfast.geometry.Geometry.encode() produces. Shared by the CPU (.cpp) and CUDA (.cu) sources;
// header-only and free of torch headers so nvcc compiles it bare.
//
// Everything derived (per-scale support n_s, crop (K - n_s) / 2, filter block offsets, and the
// index map read[t * A + a] = input slice read by output t through offset a, -1 for none) is
// computed once in Python and only read here. Index order: group maps [B, C, T, H, W],
// t = r * S + s; filter buffer: per scale s a block [A, R, O, C, n_s, n_s] at block_offset[s].
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace rstfast {

constexpr int64_t kGeometryEncodingVersion = 1;
constexpr int64_t kGeometryHeader = 12;

struct Geometry {
  bool lifting = false;
  int64_t in_channels = 0, out_channels = 0, num_funcs = 0, kernel = 0;
  int64_t num_rotations = 0, num_scales = 0, rotation_size = 0, scale_size = 0;
  int64_t stride = 1, padding = 0;
  std::vector<int64_t> support, crop, block_offset, read;

  int64_t group_size() const { return num_rotations * num_scales; }
  int64_t offsets() const { return rotation_size * scale_size; }
  int64_t in_slices() const { return lifting ? 1 : group_size(); }
  int64_t scale_of(int64_t t) const { return t % num_scales; }
  int64_t rotation_of(int64_t t) const { return t / num_scales; }
  int64_t input_slice(int64_t t, int64_t a) const { return read[t * offsets() + a]; }
  // Elements of one (a, r) slot of scale s: O * C * n_s * n_s.
  int64_t slot_numel(int64_t s) const { return out_channels * in_channels * support[s] * support[s]; }
  int64_t filter_numel() const {
    return block_offset.back() + offsets() * num_rotations * slot_numel(num_scales - 1);
  }
  // Input row of output row h and tap u of scale s: h * stride + u + shift(s).
  int64_t shift(int64_t s) const { return crop[s] - padding; }
  int64_t out_side(int64_t side) const { return (side + 2 * padding - kernel) / stride + 1; }

  template <typename Ints>
  static Geometry decode(const Ints& code) {
    const int64_t size = static_cast<int64_t>(code.size());
    if (size < kGeometryHeader || code[0] != kGeometryEncodingVersion) {
      throw std::invalid_argument("geometry: expected the encoding of version " +
                                  std::to_string(kGeometryEncodingVersion) +
                                  " (rstfast.geometry.Geometry.encode())");
    }
    Geometry g;
    g.lifting = code[1] != 0;
    g.in_channels = code[2];
    g.out_channels = code[3];
    g.num_funcs = code[4];
    g.kernel = code[5];
    g.num_rotations = code[6];
    g.num_scales = code[7];
    g.rotation_size = code[8];
    g.scale_size = code[9];
    g.stride = code[10];
    g.padding = code[11];
    const int64_t s = g.num_scales, table = g.group_size() * g.offsets();
    if (size != kGeometryHeader + 3 * s + table) {
      throw std::invalid_argument("geometry: the encoding has " + std::to_string(size) +
                                  " entries, expected " +
                                  std::to_string(kGeometryHeader + 3 * s + table));
    }
    auto take = [&](int64_t start, int64_t count) {
      return std::vector<int64_t>(code.begin() + start, code.begin() + start + count);
    };
    g.support = take(kGeometryHeader, s);
    g.crop = take(kGeometryHeader + s, s);
    g.block_offset = take(kGeometryHeader + 2 * s, s);
    g.read = take(kGeometryHeader + 3 * s, table);
    return g;
  }
};

}  // namespace rstfast
