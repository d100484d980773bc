// CPU roto-scale convolutions on the cropped filter buffer: one convolution per (input slice,
// scale) job.
//
// A job is one input slice q with every reader (output slice t, offset a) of scale s (the
// geometry's reader table: lifting: q = 0 and all rotations of scale s; group: q read by
// t = r*S + s through a). The job's filter stacks the pairs' slots (a, r) of scale s (each a
// conv2d weight [O, C, n_s, n_s]) as one conv2d weight [O * pairs, C, n_s, n_s] (output channel
// o * pairs + k), so one convolution of x[:, :, q] (ATen/oneDNN, threads =
// torch.get_num_threads()) yields [B, O, pairs, H'*W'] in y's layout with t -> t_k: written with
// one index_copy_ (bias folded in) when every slice has one writer (lifting), else index_add_.
// Each input slice is convolved once per scale; only the n_s x n_s taps are computed; where the
// box starts inside the zero padding the slice is cropped (a view), never padded. The backward is
// the same per job: grad x[:, :, q] and the slots' gradients from the convolution backward.
#include "rs_conv.h"

#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <map>
#include <utility>

namespace rstfast {

namespace {

struct Job {
  int64_t in_slice;                 // input slice q
  int64_t scale;                    // scale s of every pair
  std::vector<int64_t> out_slices;  // t_k
  std::vector<int64_t> slots;       // the pair's slot (a_k, r_k): its start in the buffer
};

// Per input slice q (in order), its readers grouped by scale (scales in order).
std::vector<Job> make_jobs(const Geometry& g) {
  const TableView view = g.view();
  std::vector<Job> jobs;
  for (int64_t q = 0; q < g.in_slices(); ++q) {
    std::map<int64_t, Job> by_scale;
    for (int64_t k = view.reader_begin(q); k < view.reader_end(q); ++k) {
      const int64_t t = view.reader(k) / g.offsets(), a = view.reader(k) % g.offsets();
      const int64_t s = g.scale_of(t);
      Job& job = by_scale.try_emplace(s, Job{q, s, {}, {}}).first->second;
      job.out_slices.push_back(t);
      job.slots.push_back(view.slot_start(s, a, g.rotation_of(t)));
    }
    for (auto& entry : by_scale) jobs.push_back(std::move(entry.second));
  }
  return jobs;
}

at::Tensor index_tensor(const std::vector<int64_t>& values) {
  return at::tensor(values, at::TensorOptions().dtype(at::kLong));
}

// The slot starting at `start` of scale s as [O, C*n*n] (a view).
at::Tensor slot(const at::Tensor& filters, const Geometry& g, int64_t s, int64_t start) {
  return filters.narrow(0, start, g.slot_numel(s)).view({g.out_channels, -1});
}

// The job's conv2d weight [O * pairs, C, n, n] (output channel o * pairs + k): each pair's slot
// [O, C*n*n] copied once into its place.
at::Tensor job_filter(const at::Tensor& filters, const Geometry& g, const Job& job) {
  const int64_t n = g.view().support(job.scale), pairs = job.slots.size();
  at::Tensor filter = at::empty({g.out_channels, pairs, g.in_channels * n * n}, filters.options());
  for (int64_t k = 0; k < pairs; ++k) {
    filter.select(1, k).copy_(slot(filters, g, job.scale, job.slots[k]));
  }
  return filter.view({g.out_channels * pairs, g.in_channels, n, n});
}

// Zero the slots (a, r) no output reads through (s + j >= S): the kernels write all others.
void zero_unread_slots(at::Tensor& grad_filters, const Geometry& g) {
  const TableView view = g.view();
  for (int64_t t = 0; t < g.group_size(); ++t) {
    for (int64_t a = 0; a < g.offsets(); ++a) {
      if (view.input_slice(t, a) >= 0) continue;
      const int64_t s = g.scale_of(t);
      slot(grad_filters, g, s, view.slot_start(s, a, g.rotation_of(t))).zero_();
    }
  }
}

// True when every output slice is produced by exactly one pair of one job (the lifting layer):
// the jobs then write y directly instead of accumulating into zeros.
bool single_writer(const std::vector<Job>& jobs, int64_t num_slices) {
  int64_t pairs = 0;
  for (const Job& job : jobs) pairs += job.out_slices.size();
  return pairs == num_slices;
}

// Input slice q of the job, cropped where the box starts inside the padding: the view
// [B, C, H - 2d, W - 2d] (d = max(0, shift)) and the padding left for the convolution.
std::pair<at::Tensor, int64_t> job_input(const at::Tensor& x5, const Geometry& g, const Job& job) {
  const int64_t shift = g.shift(job.scale), height = x5.size(3), width = x5.size(4);
  at::Tensor slice = x5.select(2, job.in_slice);
  if (shift <= 0) return {slice, -shift};
  return {slice.narrow(2, shift, height - 2 * shift).narrow(3, shift, width - 2 * shift), 0};
}

// The ATen calls below run in the dtype of x even inside torch.autocast (rstfast.ops decides
// the compute dtype once, for the whole op).
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

void check_cpu(const at::Tensor& x, const at::Tensor& filters) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "x: the C++ CPU kernels need a CPU tensor, got one on ",
                    x.device());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "x: the C++ CPU kernels support float32 and float64, got ", x.scalar_type());
  TORCH_CHECK_TYPE(filters.scalar_type() == x.scalar_type(),
                   "filters: expected the dtype of x (", x.scalar_type(), "), got ",
                   filters.scalar_type());
}

}  // namespace

at::Tensor conv_forward_cpu(const at::Tensor& x, const at::Tensor& filters,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef geometry) {
  const Geometry g = decode_geometry(geometry);
  check_conv_args(x, filters, bias, g);
  check_cpu(x, filters);
  const NoAutocast no_autocast;
  const at::Tensor x5 = g.lifting ? x.unsqueeze(2) : x;
  const std::vector<Job> jobs = make_jobs(g);
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor bias_x = has_bias ? bias->to(x.scalar_type()) : at::Tensor();
  const bool direct = single_writer(jobs, g.group_size());
  const int64_t batch = x.size(0), out_h = g.out_side(x.size(-2)), out_w = g.out_side(x.size(-1));
  // Allocated in its final 5-D shape and returned as is: an op output must not be a view.
  const std::vector<int64_t> shape{batch, g.out_channels, g.group_size(), out_h, out_w};
  at::Tensor y5 = direct ? at::empty(shape, x.options()) : at::zeros(shape, x.options());
  at::Tensor y = y5.view({batch, g.out_channels, g.group_size(), out_h * out_w});
  for (const Job& job : jobs) {
    const int64_t pairs = job.out_slices.size();
    const at::Tensor job_bias = direct && has_bias ? bias_x.repeat_interleave(pairs) : at::Tensor();
    const auto [input, pad] = job_input(x5, g, job);
    const at::Tensor out = at::conv2d(input.contiguous(), job_filter(filters, g, job), job_bias,
                                      g.stride, pad)
                               .view({batch, g.out_channels, pairs, out_h * out_w});
    const at::Tensor out_index = index_tensor(job.out_slices);
    if (direct) {
      y.index_copy_(2, out_index, out);
    } else {
      y.index_add_(2, out_index, out);
    }
  }
  if (has_bias && !direct) y.add_(bias_x.view({1, -1, 1, 1}));
  return y5;
}

std::tuple<at::Tensor, at::Tensor> conv_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x,
                                                     const at::Tensor& filters,
                                                     at::IntArrayRef geometry,
                                                     std::array<bool, 2> output_mask) {
  const Geometry g = decode_geometry(geometry);
  check_conv_args(x, filters, std::nullopt, g);
  check_cpu(x, filters);
  const NoAutocast no_autocast;
  const bool need_x = output_mask[0], need_filters = output_mask[1];
  const at::Tensor x5 = g.lifting ? x.unsqueeze(2) : x;
  at::Tensor grad_x = need_x ? at::zeros(x5.sizes(), x.options()) : at::empty({0}, x.options());
  at::Tensor grad_filters = need_filters ? at::empty_like(filters) : at::empty({0}, x.options());
  if (need_filters) zero_unread_slots(grad_filters, g);
  const int64_t batch = x.size(0), out_h = grad_y.size(3), out_w = grad_y.size(4);
  const at::Tensor gy = grad_y.to(x.scalar_type()).contiguous();
  for (const Job& job : make_jobs(g)) {
    const int64_t pairs = job.out_slices.size();
    const at::Tensor gy_job = gy.index_select(2, index_tensor(job.out_slices))
                                  .view({batch, g.out_channels * pairs, out_h, out_w});
    const auto [input, pad] = job_input(x5, g, job);
    auto [grad_input, grad_filter, unused_bias] = at::convolution_backward(
        gy_job, input.contiguous(), job_filter(filters, g, job), std::nullopt,
        {g.stride, g.stride}, {pad, pad}, {1, 1}, false, {0, 0}, 1, {need_x, need_filters, false});
    if (need_x) job_input(grad_x, g, job).first.add_(grad_input);
    if (need_filters) {
      const at::Tensor per_pair = grad_filter.view({g.out_channels, pairs, -1});
      for (int64_t k = 0; k < pairs; ++k) {
        slot(grad_filters, g, job.scale, job.slots[k]).copy_(per_pair.select(1, k));
      }
    }
  }
  // An op output must not be a view: the lifting gradient is copied out of its 5-D buffer.
  return {need_x && g.lifting ? grad_x.squeeze(2).clone() : grad_x, grad_filters};
}

}  // namespace rstfast
