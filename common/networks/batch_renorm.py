"""Batch renormalization (Ioffe 2017) for 2D feature maps, the normalization of Table 1's model 8.

Neither MONAI nor PyTorch has batch renormalization, so this is a small layer following Algorithm 1 of S. Ioffe,
*Batch Renormalization: Towards Reducing Minibatch Dependence in Batch-Normalized Models* (NeurIPS 2017,
arXiv:1702.03275), reference 26 of Cai et al., *Fully Automated Segmentation of Head CT Neuroanatomy Using Deep
Learning* (Radiology: Artificial Intelligence 2020), which compares it with layer and batch normalization (Table 1).
"""

from __future__ import annotations

import torch

__all__ = ["BatchRenorm2d"]


class BatchRenorm2d(torch.nn.Module):
    """Batch renormalization over ``[B, C, H, W]``: per-channel statistics over the batch and both spatial axes.

    Training (Ioffe 2017, Algorithm 1), per channel, with the minibatch values ``x`` of that channel::

        mu_B    = mean(x)
        sigma_B = sqrt(mean((x - mu_B) ** 2) + eps)                      # biased variance, as batchnorm
        r       = stop_gradient(clip(sigma_B / sigma, 1 / r_max, r_max))
        d       = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))
        y       = gamma * ((x - mu_B) / sigma_B * r + d) + beta
        mu     += momentum * (mu_B - mu);   sigma += momentum * (sigma_B - sigma)

    where ``mu`` and ``sigma`` are the moving mean and moving *standard deviation* (``running_mean``,
    ``running_std``; the paper averages sigma, not the variance). ``r`` and ``d`` use the moving statistics before
    this step's update; gradients flow through ``mu_B`` and ``sigma_B`` (as in batchnorm) but not through ``r``
    and ``d``. Inference uses the moving statistics: ``y = gamma * (x - mu) / sigma + beta``, which is what ``r``
    and ``d`` make training output equal to whenever they are not clipped.

    Clipping schedule (Ioffe 2017, section 4): "r_max = 1, d_max = 0 (i.e. simply batchnorm) for the first 5000
    training steps, after which these were gradually relaxed to reach r_max = 3 at 40k steps, and d_max = 5 at 25k
    steps". "Gradually" is taken as linear in the step count::

        r_max(t) = 1 + (r_max - 1) * clamp((t - warmup_steps) / (r_max_steps - warmup_steps), 0, 1)
        d_max(t) =      d_max      * clamp((t - warmup_steps) / (d_max_steps - warmup_steps), 0, 1)

    ``t`` is the number of earlier training-mode forward passes, kept in the ``num_batches_tracked`` buffer
    (incremented once per training forward), so it travels with the ``state_dict`` and a resumed run continues the
    schedule. The step counts are constructor arguments: a run much shorter than 40k steps (the head CT model
    stopped on its validation Dice) can scale them down.

    Defaults: ``eps = 1e-3`` and ``momentum = 0.01`` are those of Keras's ``BatchNormalization`` (``epsilon=1e-3``,
    ``momentum=0.99`` for the kept share), the framework of the paper (Keras 2.2.4 on TensorFlow 1.12) and of the
    authors' code (GitHub ``jasonccai/HeadCTSegmentation``, ``z_unet.py``, which publishes only the layer-norm
    model); ``gamma`` starts at 1 and ``beta`` at 0. Half-precision inputs are normalized in the buffers' dtype
    (float32) and cast back.

    Args:
        num_features: number of channels ``C``.
        eps: added to the minibatch variance before the square root.
        momentum: moving-average update rate (``alpha``; 0.01 keeps 99% of the old value).
        r_max: final bound on ``r`` (reached at ``r_max_steps``).
        d_max: final bound on ``|d|`` (reached at ``d_max_steps``).
        warmup_steps: training steps with ``r = 1, d = 0`` (plain batchnorm) before the bounds are relaxed.
        r_max_steps: step at which ``r_max`` reaches its final value.
        d_max_steps: step at which ``d_max`` reaches its final value.
        affine: whether to learn ``gamma`` and ``beta`` (``weight`` and ``bias``).

    Raises:
        ValueError: for a non-positive ``num_features`` or ``eps``, a ``momentum`` outside (0, 1], ``r_max < 1``,
            ``d_max < 0``, a negative ``warmup_steps``, or a relaxation step not after the warm-up.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-3,
        momentum: float = 0.01,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 5000,
        r_max_steps: int = 40000,
        d_max_steps: int = 25000,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}.")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}.")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}.")
        if r_max < 1 or d_max < 0:
            raise ValueError(f"r_max must be >= 1 and d_max >= 0, got {r_max} and {d_max}.")
        if warmup_steps < 0 or r_max_steps <= warmup_steps or d_max_steps <= warmup_steps:
            raise ValueError(
                "need 0 <= warmup_steps < r_max_steps and warmup_steps < d_max_steps, got "
                f"warmup_steps={warmup_steps}, r_max_steps={r_max_steps}, d_max_steps={d_max_steps}."
            )
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.r_max = float(r_max)
        self.d_max = float(d_max)
        self.warmup_steps = int(warmup_steps)
        self.r_max_steps = int(r_max_steps)
        self.d_max_steps = int(d_max_steps)
        self.affine = bool(affine)
        if self.affine:
            self.weight = torch.nn.Parameter(torch.ones(num_features))
            self.bias = torch.nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, r_max={self.r_max}, d_max={self.d_max}, "
            f"warmup_steps={self.warmup_steps}, r_max_steps={self.r_max_steps}, d_max_steps={self.d_max_steps}, "
            f"affine={self.affine}"
        )

    def clip_limits(self, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounds ``(r_max, d_max)`` of the clipping schedule at training step ``step``.

        Args:
            step: number of earlier training steps (a scalar tensor, e.g. ``num_batches_tracked``).

        Returns:
            ``(r_max(step), d_max(step))`` as scalar tensors of the buffers' dtype.
        """
        t = step.to(self.running_std.dtype)
        r_frac = ((t - self.warmup_steps) / float(self.r_max_steps - self.warmup_steps)).clamp(0.0, 1.0)
        d_frac = ((t - self.warmup_steps) / float(self.d_max_steps - self.warmup_steps)).clamp(0.0, 1.0)
        return 1.0 + (self.r_max - 1.0) * r_frac, self.d_max * d_frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x``; in training mode also update the moving statistics and the step counter.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            the normalized tensor, same shape and dtype as ``x``.

        Raises:
            ValueError: when ``x`` is not 4-D with ``num_features`` channels.
        """
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                "BatchRenorm2d expects [B, " + str(self.num_features) + ", H, W], got " + str(list(x.shape)) + "."
            )
        stats_dtype = self.running_std.dtype
        xc = x if x.dtype == stats_dtype else x.to(stats_dtype)
        shape = [1, self.num_features, 1, 1]
        if self.training:
            mean_b = xc.mean(dim=(0, 2, 3))
            std_b = torch.sqrt(xc.var(dim=(0, 2, 3), unbiased=False) + self.eps)
            with torch.no_grad():
                r_lim, d_lim = self.clip_limits(self.num_batches_tracked)
                r = torch.minimum(torch.maximum(std_b / self.running_std, 1.0 / r_lim), r_lim)
                d = torch.minimum(torch.maximum((mean_b - self.running_mean) / self.running_std, -d_lim), d_lim)
                self.running_mean.add_(self.momentum * (mean_b - self.running_mean))
                self.running_std.add_(self.momentum * (std_b - self.running_std))
                self.num_batches_tracked.add_(1)
            y = (xc - mean_b.view(shape)) / std_b.view(shape) * r.detach().view(shape) + d.detach().view(shape)
        else:
            y = (xc - self.running_mean.view(shape)) / self.running_std.view(shape)
        weight, bias = self.weight, self.bias
        if weight is not None and bias is not None:
            y = y * weight.view(shape) + bias.view(shape)
        return y.to(x.dtype)
