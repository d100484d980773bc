// CPU roto-scale convolutions: per-(input slice, support box) jobs on cropped filters.
//
// A job is one input slice q read through one support box n, with every (output slice t, weight
// offset a) pair that reads q through that box: in the lifting layer q = 0 and the pairs are all
// slices t with box n (a = 0); in the group layer output t = r*S + s reads q = ((r + i) mod R)*S
// + s + j with offset a = i*Ls + j (s + j < S; the zero scales past S are never read) through the
// box of t. Per job the filter is expanded once, cropped to the box,
//   Kf[(k, o), c, u, v] = sum_f weight[o, c, a_k, f] * basis[f, t_k, off + u, off + v],
// and one convolution of x[:, :, q] with all pairs' filters stacked (O * pairs output channels,
// ATen/oneDNN, threads = torch.get_num_threads()) gives y[:, :, t_k] += out[:, (o, k)] in one
// index_add_ (index_copy_ with the bias folded in when each slice has one writer, as in lifting). Each input
// slice is convolved once per box however many outputs read it; only the n x n taps are computed;
// where the box starts inside the zero padding the slice is cropped (a view), never padded.
// The backward is the same per job: grad x[:, :, q] and grad Kf from the convolution backward,
// grad weight = grad Kf contracted with the basis box.
#include "rs_conv.h"

#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <map>
#include <utility>

namespace rstfast {

namespace {

struct Job {
  int64_t in_slice;                 // input slice q
  int64_t box;                      // side n of the support box
  std::vector<int64_t> out_slices;  // t_k: output slice of pair k
  std::vector<int64_t> offsets;     // a_k: weight offset of pair k
};

std::vector<Job> lift_jobs(int64_t num_slices, at::IntArrayRef support) {
  std::map<int64_t, Job> by_box;
  for (int64_t t = 0; t < num_slices; ++t) {
    const int64_t box = support[t % support.size()];
    Job& job = by_box.try_emplace(box, Job{0, box, {}, {}}).first->second;
    job.out_slices.push_back(t);
    job.offsets.push_back(0);
  }
  std::vector<Job> jobs;
  for (auto& entry : by_box) jobs.push_back(std::move(entry.second));
  return jobs;
}

std::vector<Job> group_jobs(int64_t num_rotations, int64_t num_scales, int64_t rotation_size,
                            int64_t scale_size, at::IntArrayRef support) {
  std::map<std::pair<int64_t, int64_t>, Job> by_slice_and_box;
  for (int64_t r = 0; r < num_rotations; ++r) {
    for (int64_t s = 0; s < num_scales; ++s) {
      const int64_t t = r * num_scales + s, box = support[t % support.size()];
      for (int64_t i = 0; i < rotation_size; ++i) {
        for (int64_t j = 0; j < scale_size && s + j < num_scales; ++j) {
          const int64_t q = ((r + i) % num_rotations) * num_scales + s + j;
          Job& job = by_slice_and_box.try_emplace({q, box}, Job{q, box, {}, {}}).first->second;
          job.out_slices.push_back(t);
          job.offsets.push_back(i * scale_size + j);
        }
      }
    }
  }
  std::vector<Job> jobs;
  for (auto& entry : by_slice_and_box) jobs.push_back(std::move(entry.second));
  return jobs;
}

at::Tensor index_tensor(const std::vector<int64_t>& values) {
  return at::tensor(values, at::TensorOptions().dtype(at::kLong));
}

// Basis slices t_k of the job cropped to its box: [pairs, F, n * n].
at::Tensor basis_box(const at::Tensor& basis, const Job& job) {
  const int64_t off = (basis.size(2) - job.box) / 2;
  return basis.index_select(1, index_tensor(job.out_slices))
      .narrow(2, off, job.box).narrow(3, off, job.box)
      .permute({1, 0, 2, 3}).reshape({static_cast<int64_t>(job.out_slices.size()), basis.size(0), -1});
}

// Coefficients of the job's pairs: weight4 [O, C, A, F] -> [pairs, O * C, F].
at::Tensor job_coefficients(const at::Tensor& weight4, const Job& job) {
  return weight4.index_select(2, index_tensor(job.offsets)).permute({2, 0, 1, 3})
      .reshape({static_cast<int64_t>(job.offsets.size()), weight4.size(0) * weight4.size(1), -1});
}

// Expanded filter of the job as a conv2d weight [O * pairs, C, n, n], output channel o * pairs + k,
// so that the convolution's output [B, O, pairs, H'*W'] has the layout of y with t -> k.
at::Tensor job_filter(const at::Tensor& weight4, const at::Tensor& box, const Job& job) {
  const int64_t pairs = job.out_slices.size(), out = weight4.size(0), in = weight4.size(1);
  return job_coefficients(weight4, job).bmm(box).view({pairs, out, in * job.box * job.box})
      .transpose(0, 1).reshape({out * pairs, in, job.box, job.box});
}

// True when every output slice is produced by exactly one pair of one job (the lifting layer):
// the jobs then write y directly instead of accumulating into zeros.
bool single_writer(const std::vector<Job>& jobs, int64_t num_slices) {
  int64_t pairs = 0;
  for (const Job& job : jobs) pairs += job.out_slices.size();
  return pairs == num_slices;
}

// Input slice q of the job, cropped where the box starts inside the padding: returns the view
// [B, C, H - 2d, W - 2d] (d = max(0, off - p)) and the padding left for the convolution.
std::pair<at::Tensor, int64_t> job_input(const at::Tensor& x, const Geometry& g, const Job& job) {
  const int64_t shift = (g.kernel - job.box) / 2 - g.padding;   // input row = h'*st + u + shift
  at::Tensor slice = x.select(2, job.in_slice);
  if (shift <= 0) return {slice, -shift};
  return {slice.narrow(2, shift, g.height - 2 * shift).narrow(3, shift, g.width - 2 * shift), 0};
}

// The ATen calls below run in the dtype of x even inside torch.autocast (the Python wrapper
// decides the compute dtype once, for the whole op).
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

// y [B, O, T, H', W'] from x [B, C, T_in, H, W] and weight4 [O, C, A, F].
at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& weight4, const at::Tensor& basis,
                       const std::optional<at::Tensor>& bias, const Geometry& g,
                       const std::vector<Job>& jobs) {
  const NoAutocast no_autocast;
  const bool has_bias = check_bias(bias, x, g.out_channels);
  const bool direct = single_writer(jobs, g.out_slices);
  // Allocated in its final 5-D shape and returned as is: an op output must not be a view.
  const std::vector<int64_t> shape{g.batch, g.out_channels, g.out_slices, g.out_height, g.out_width};
  at::Tensor y5 = direct ? at::empty(shape, x.options()) : at::zeros(shape, x.options());
  at::Tensor y = y5.view({g.batch, g.out_channels, g.out_slices, g.out_plane()});
  for (const Job& job : jobs) {
    const int64_t pairs = job.out_slices.size();
    const at::Tensor filter = job_filter(weight4, basis_box(basis, job), job);
    const at::Tensor job_bias = direct && has_bias ? bias->repeat_interleave(pairs) : at::Tensor();
    const auto [input, pad] = job_input(x, g, job);
    const at::Tensor out = at::conv2d(input.contiguous(), filter, job_bias, g.stride, pad)
                               .view({g.batch, g.out_channels, pairs, g.out_plane()});
    const at::Tensor out_index = index_tensor(job.out_slices);
    if (direct) {
      y.index_copy_(2, out_index, out);
    } else {
      y.index_add_(2, out_index, out);
    }
  }
  if (has_bias && !direct) y.add_(bias->view({1, -1, 1, 1}));
  return y5;
}

// (grad_x [B, C, T_in, H, W] or empty, grad_weight4 [O, C, A, F] or empty).
std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_y, const at::Tensor& x,
                                                const at::Tensor& weight4, const at::Tensor& basis,
                                                const Geometry& g, const std::vector<Job>& jobs,
                                                std::array<bool, 2> output_mask) {
  const NoAutocast no_autocast;
  const bool need_x = output_mask[0], need_w = output_mask[1];
  at::Tensor grad_x = need_x ? at::zeros_like(x) : at::empty({0}, x.options());
  at::Tensor grad_w = need_w ? at::zeros_like(weight4) : at::empty({0}, x.options());
  const at::Tensor gy = grad_y.contiguous().view({g.batch, g.out_channels, g.out_slices, -1});
  for (const Job& job : jobs) {
    const int64_t pairs = job.out_slices.size();
    const at::Tensor box = basis_box(basis, job);
    const at::Tensor filter = job_filter(weight4, box, job);
    const at::Tensor gy_job = gy.index_select(2, index_tensor(job.out_slices))
                                  .view({g.batch, g.out_channels * pairs, g.out_height, g.out_width});
    const auto [input, pad] = job_input(x, g, job);
    auto [grad_input, grad_filter, unused_bias] = at::convolution_backward(
        gy_job, input.contiguous(), filter, std::nullopt, {g.stride, g.stride}, {pad, pad}, {1, 1},
        false, {0, 0}, 1, {need_x, need_w, false});
    if (need_x) job_input(grad_x, g, job).first.add_(grad_input);
    if (need_w) {
      const at::Tensor per_pair = grad_filter.view({g.out_channels, pairs, -1}).transpose(0, 1)
                                      .reshape({pairs, g.out_channels * g.in_channels, -1})
                                      .bmm(box.transpose(1, 2))   // [pairs, O*C, F]
                                      .view({pairs, g.out_channels, g.in_channels, g.num_funcs});
      grad_w.index_add_(2, index_tensor(job.offsets), per_pair.permute({1, 2, 0, 3}));
    }
  }
  return {grad_x, grad_w};
}

void check_cpu(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "x: the C++ CPU kernels need a CPU tensor, got one on ",
                    x.device());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "x: the C++ CPU kernels support float32 and float64, got ", x.scalar_type());
}

}  // namespace

at::Tensor lift_conv_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& basis, const std::optional<at::Tensor>& bias,
                                 int64_t stride, int64_t padding, at::IntArrayRef support) {
  check_cpu(x);
  const Geometry g = lift_geometry(x, weight, basis, stride, padding, support);
  return forward_cpu(x.unsqueeze(2), weight.unsqueeze(2), basis, bias, g,
                     lift_jobs(g.out_slices, support));
}

std::tuple<at::Tensor, at::Tensor> lift_conv_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& basis, int64_t stride, int64_t padding, at::IntArrayRef support,
    std::array<bool, 2> output_mask) {
  check_cpu(x);
  const Geometry g = lift_geometry(x, weight, basis, stride, padding, support);
  auto [grad_x, grad_w] = backward_cpu(grad_y, x.unsqueeze(2), weight.unsqueeze(2), basis, g,
                                       lift_jobs(g.out_slices, support), output_mask);
  // Copies, not views: op outputs must not be views (autograd may update them in place).
  return {output_mask[0] ? grad_x.squeeze(2).clone() : grad_x,
          output_mask[1] ? grad_w.squeeze(2).clone() : grad_w};
}

at::Tensor group_conv_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& basis, const std::optional<at::Tensor>& bias,
                                  int64_t num_rotations, int64_t rotation_size,
                                  int64_t scale_size, int64_t stride, int64_t padding,
                                  at::IntArrayRef support) {
  check_cpu(x);
  const Geometry g = group_geometry(x, weight, basis, num_rotations, rotation_size, scale_size,
                                    stride, padding, support);
  return forward_cpu(x, weight, basis, bias, g,
                     group_jobs(num_rotations, g.out_slices / num_rotations, rotation_size,
                                scale_size, support));
}

std::tuple<at::Tensor, at::Tensor> group_conv_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& basis, int64_t num_rotations, int64_t rotation_size, int64_t scale_size,
    int64_t stride, int64_t padding, at::IntArrayRef support, std::array<bool, 2> output_mask) {
  check_cpu(x);
  const Geometry g = group_geometry(x, weight, basis, num_rotations, rotation_size, scale_size,
                                    stride, padding, support);
  return backward_cpu(grad_y, x, weight, basis, g,
                      group_jobs(num_rotations, g.out_slices / num_rotations, rotation_size,
                                 scale_size, support),
                      output_mask);
}

}  // namespace rstfast
