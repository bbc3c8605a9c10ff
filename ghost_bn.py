"""Ghost batch norm: batch-norm statistics per group of images within one forward pass.

Large-batch training keeps BN statistics per 128 images, as on 8192 / 128 = 64 GPUs; on one
device that was 64 micro-batches run one after another (MICRO_BATCH_SIZE), small passes that on a
GPU wait on kernel launches. Here the whole batch goes through in one pass and each BN layer
normalises every group of ``ghost_size`` consecutive images with the group's own mean and
variance, as the micro-batch loop does:

    for each group g of m images:  y = (x - mean_g) / sqrt(var_g + eps) * weight + bias

with the biased variance over the group's images and pixels. The running statistics are updated
as the micro-batches would have updated them, one group after another, in closed form:

    r_G = (1 - k)^G r_0 + sum_g k (1 - k)^(G - g) s_g     (momentum k; s_g: the group's mean, or its
                                                          unbiased variance)

or, with ``momentum=None``, as the cumulative average over every group seen. Statistics are
computed in float32, as autocast does for ``batch_norm``. Outside training, or for a batch no
larger than a group, the layer is ``nn.BatchNorm2d`` itself.
"""

import torch
from torch import nn

__all__ = ["GhostBatchNorm2d", "use_ghost_batch_norm"]


class GhostBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d with training statistics per ``ghost_size`` images (None: the whole batch)."""

    ghost_size = None

    def forward(self, x):
        size = self.ghost_size
        if not self.training or size is None or x.shape[0] <= size:
            return super().forward(x)
        if x.shape[0] % size:
            raise ValueError(f"GhostBatchNorm2d: a batch of {x.shape[0]} is not a whole number of groups of {size}")
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        groups = x.to(dtype).unflatten(0, (-1, size))  # (G, m, C, H, W)
        mean = groups.mean(dim=(1, 3, 4), keepdim=True)
        var = groups.var(dim=(1, 3, 4), correction=0, keepdim=True)
        y = (groups - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.view(1, 1, -1, 1, 1) + self.bias.view(1, 1, -1, 1, 1)
        if self.track_running_stats:
            count = size * x.shape[2] * x.shape[3]
            self._update_running_stats(mean.flatten(1), var.flatten(1) * count / max(count - 1, 1))
        return y.flatten(0, 1)

    @torch.no_grad()
    def _update_running_stats(self, means, variances):
        """The running statistics after one update per group, in the groups' order."""
        groups = means.shape[0]
        if self.momentum is None:  # the cumulative average over every batch seen so far (on the device)
            seen = self.num_batches_tracked.to(means.dtype)
            total = seen + groups
            self.running_mean.mul_(seen / total).add_(means.sum(0) / total)
            self.running_var.mul_(seen / total).add_(variances.sum(0) / total)
        else:
            k = self.momentum
            weights = k * (1 - k) ** torch.arange(groups - 1, -1, -1, dtype=means.dtype, device=means.device)
            self.running_mean.mul_((1 - k) ** groups).add_(weights @ means)
            self.running_var.mul_((1 - k) ** groups).add_(weights @ variances)
        self.num_batches_tracked.add_(groups)


def use_ghost_batch_norm(model, ghost_size):
    """Make every nn.BatchNorm2d of ``model`` a GhostBatchNorm2d with groups of ``ghost_size``
    images (None: the whole batch), in place: parameters, buffers and state dicts are unchanged."""
    for module in model.modules():
        if type(module) in (nn.BatchNorm2d, GhostBatchNorm2d):
            module.__class__ = GhostBatchNorm2d
            module.ghost_size = ghost_size
    return model
