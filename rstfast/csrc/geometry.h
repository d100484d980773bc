// The geometry of one roto-scale convolution, decoded from the int[] that Python's
// rstfast.geometry.Geometry.encode() produces: the layout's one C++ spelling, included by the CPU
// (.cpp) and CUDA (.cu) sources. Header-only and free of torch headers so nvcc compiles it bare.
//
// Encoding: the 12 header fields of rstfast.geometry.HEADER_FIELDS, then the tables of
// rstfast.geometry.TABLES, one after the other:
//   support[S] | crop[S] | slot_start[S*A*R] | read[T*A] | reader_start[T_in + 1] | reader[...]
// support n_s, crop (K - n_s) / 2, slot_start[(s*A + a)*R + r] = first element of slot (a, r) of
// scale s in the filter buffer (each slot a conv2d weight [O, C, n_s, n_s]), read[t*A + a] = input
// slice read by output t through offset a (-1: none), and the inverse map: the readers of input
// slice q are reader[reader_start[q] .. reader_start[q + 1]), each t*A + a, in (t, a) order.
// Everything is derived once in Python; this header only reads it. Index order: group maps
// [B, C, T, H, W], t = r*S + s.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef __CUDACC__
#define RSTFAST_HOST_DEVICE __host__ __device__
#else
#define RSTFAST_HOST_DEVICE
#endif

namespace rstfast {

constexpr int64_t kGeometryEncodingVersion = 2;
constexpr int64_t kGeometryHeader = 12;  // len(rstfast.geometry.HEADER_FIELDS)

// The tables of one geometry (host or device memory), read through named accessors.
struct TableView {
  const int64_t* tables = nullptr;  // the encoding after its header
  int64_t num_rotations = 0, num_scales = 0, offsets = 0, group_size = 0, in_slices = 0;

  RSTFAST_HOST_DEVICE int64_t crop_at() const { return num_scales; }
  RSTFAST_HOST_DEVICE int64_t slot_at() const { return 2 * num_scales; }
  RSTFAST_HOST_DEVICE int64_t read_at() const {
    return slot_at() + num_scales * offsets * num_rotations;
  }
  RSTFAST_HOST_DEVICE int64_t reader_start_at() const { return read_at() + group_size * offsets; }
  RSTFAST_HOST_DEVICE int64_t reader_at() const { return reader_start_at() + in_slices + 1; }
  // Entries of the whole table tail for the given number of reads.
  RSTFAST_HOST_DEVICE int64_t size(int64_t reads) const { return reader_at() + reads; }

  RSTFAST_HOST_DEVICE int64_t support(int64_t s) const { return tables[s]; }
  RSTFAST_HOST_DEVICE int64_t crop(int64_t s) const { return tables[crop_at() + s]; }
  RSTFAST_HOST_DEVICE int64_t slot_start(int64_t s, int64_t a, int64_t r) const {
    return tables[slot_at() + (s * offsets + a) * num_rotations + r];
  }
  RSTFAST_HOST_DEVICE int64_t input_slice(int64_t t, int64_t a) const {
    return tables[read_at() + t * offsets + a];
  }
  RSTFAST_HOST_DEVICE int64_t reader_begin(int64_t q) const {
    return tables[reader_start_at() + q];
  }
  RSTFAST_HOST_DEVICE int64_t reader_end(int64_t q) const {
    return tables[reader_start_at() + q + 1];
  }
  // The k-th reader entry t*A + a.
  RSTFAST_HOST_DEVICE int64_t reader(int64_t k) const { return tables[reader_at() + k]; }
};

struct Geometry {
  bool lifting = false;
  int64_t in_channels = 0, out_channels = 0, num_funcs = 0, kernel = 0;
  int64_t num_rotations = 0, num_scales = 0, rotation_size = 0, scale_size = 0;
  int64_t stride = 1, padding = 0;
  std::vector<int64_t> tables;  // the encoding after its header (read through view())

  int64_t group_size() const { return num_rotations * num_scales; }
  int64_t offsets() const { return rotation_size * scale_size; }
  int64_t in_slices() const { return lifting ? 1 : group_size(); }
  int64_t scale_of(int64_t t) const { return t % num_scales; }
  int64_t rotation_of(int64_t t) const { return t / num_scales; }
  // Elements of one (a, r) slot of scale s: O * C * n_s * n_s.
  int64_t slot_numel(int64_t s) const {
    const int64_t n = view().support(s);
    return out_channels * in_channels * n * n;
  }
  int64_t filter_numel() const {
    const int64_t s = num_scales - 1;
    return view().slot_start(s, offsets() - 1, num_rotations - 1) + slot_numel(s);
  }
  // Input row of output row h and tap u of scale s: h * stride + u + shift(s).
  int64_t shift(int64_t s) const { return view().crop(s) - padding; }
  int64_t out_side(int64_t side) const { return (side + 2 * padding - kernel) / stride + 1; }

  TableView view(const int64_t* data = nullptr) const {
    return TableView{data != nullptr ? data : tables.data(), num_rotations, num_scales, offsets(),
                     group_size(), in_slices()};
  }

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
    g.tables.assign(code.begin() + kGeometryHeader, code.end());
    const TableView view = g.view();
    const int64_t tail = size - kGeometryHeader;
    if (tail < view.reader_at() ||
        tail != view.size(g.tables[view.reader_start_at() + g.in_slices()])) {
      throw std::invalid_argument("geometry: the encoding has " + std::to_string(size) +
                                  " entries, which does not match its header");
    }
    return g;
  }
};

}  // namespace rstfast
