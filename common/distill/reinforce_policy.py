"""RepFusion's timestep policy: REINFORCE over diffusion timesteps.

A small CNN looks at the image and gives a categorical distribution over actions (every timestep,
or ``num_bins`` coarse bins whose centre timestep is used). The reward of a sampled timestep is
minus the cross-entropy of a task head that is trained jointly on the pooled teacher features at
that timestep; an entropy bonus (decayed to zero by :class:`EntropyDecayHook`) keeps the policy
exploring.

The reference implementation uses the raw reward (no baseline). ``baseline='ema'`` subtracts a
moving average of the reward, which lowers the variance of the gradient without biasing it.
"""
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from .timestep_samplers import TimestepSampler


@MODELS.register_module()
class TimestepPolicyCNN(nn.Module):
    """LeNet-style policy: conv5-pool-conv5-pool, then 120-84-``num_actions`` (any input size)."""

    def __init__(self, num_actions, in_channels=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(5))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 25, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_actions))

    def forward(self, images):
        return self.classifier(self.features(images))


def mlp(in_features, hidden, out_features):
    layers, width = [], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out_features))


@MODELS.register_module()
class ReinforceTimestepPolicy(TimestepSampler):
    """REINFORCE timestep selection with a jointly trained task head.

    Args:
        num_classes (int): classes of the task head that defines the reward.
        teacher_channels (int): channels of the pooled teacher feature fed to the task head.
        num_timesteps (int): the teacher's training timesteps.
        num_bins (int | None): coarse action space; None = one action per timestep (reference).
        policy_net (dict | None): config of the policy network; default TimestepPolicyCNN.
        task_head_hidden (tuple): hidden widths of the task head MLP (reference: 256, 256).
        task_head_input_norm (bool): standardise the pooled teacher feature before the task head
            (``BatchNorm1d`` without affine). False follows the reference. Pooled diffusion
            features can be a large constant offset plus a small image-dependent part (on the
            digits demo 2% of the mean square); the raw head then learns slowly, its
            cross-entropy stays near chance and the reward carries little information.
        entropy_weight (float): initial entropy-bonus weight (decayed by EntropyDecayHook).
        baseline (str | None): None (reference: raw reward) or 'ema' (moving-average baseline).
        baseline_momentum (float): momentum of the 'ema' baseline.
    """

    learns = True

    def __init__(self,
                 num_classes,
                 teacher_channels,
                 num_timesteps=1000,
                 num_bins=None,
                 policy_net=None,
                 task_head_hidden=(256, 256),
                 task_head_input_norm=False,
                 entropy_weight=0.1,
                 baseline=None,
                 baseline_momentum=0.9):
        super().__init__(num_timesteps)
        if baseline not in (None, 'ema'):
            raise ValueError(f"baseline must be None or 'ema', got {baseline!r}")
        if num_bins is not None and not 1 <= int(num_bins) <= self.num_timesteps:
            raise ValueError(f'num_bins must be in 1..{self.num_timesteps}, got {num_bins}')
        self.num_actions = int(num_bins) if num_bins else self.num_timesteps
        net_cfg = dict(type='TimestepPolicyCNN') if policy_net is None else dict(policy_net)
        net_cfg.setdefault('num_actions', self.num_actions)
        self.policy_net = MODELS.build(net_cfg)
        self.task_head = mlp(teacher_channels, task_head_hidden, num_classes)
        if task_head_input_norm:
            self.task_head = nn.Sequential(
                nn.BatchNorm1d(teacher_channels, affine=False), *self.task_head)
        self.entropy_weight = float(entropy_weight)
        self.baseline = baseline
        self.baseline_momentum = float(baseline_momentum)
        self.register_buffer('reward_baseline', torch.zeros(()))
        self.register_buffer('baseline_initialised', torch.zeros((), dtype=torch.bool))
        self._pending = None

    def action_to_timestep(self, actions):
        """Action index → timestep (bin centres for a coarse action space)."""
        if self.num_actions == self.num_timesteps:
            return actions
        width = self.num_timesteps / self.num_actions
        return ((actions.float() + 0.5) * width).long().clamp_(0, self.num_timesteps - 1)

    def distribution(self, images):
        return torch.distributions.Categorical(logits=self.policy_net(images))

    def _draw(self, batch, device):
        raise RuntimeError('ReinforceTimestepPolicy samples from images: call sample(images)')

    def sample(self, images):
        dist = self.distribution(images)
        actions = dist.sample()
        self._pending = (dist, actions)
        t = self.action_to_timestep(actions)
        self.last_timesteps = t.detach().cpu()
        return t

    def losses(self, teacher_pooled, labels):
        """Task-head CE, the REINFORCE loss and the entropy bonus for the last ``sample``."""
        if self._pending is None:
            raise RuntimeError('losses() called before sample()')
        dist, actions = self._pending
        self._pending = None
        ce = F.cross_entropy(self.task_head(teacher_pooled.detach()), labels, reduction='none')
        reward = -ce.detach()
        advantage = reward - self._update_baseline(reward)
        entropy = dist.entropy()
        return dict(
            loss_task_head=ce.mean(),
            loss_policy=-(dist.log_prob(actions) * advantage).mean(),
            loss_entropy=-self.entropy_weight * entropy.mean(),
            policy_entropy=entropy.mean().detach(),
            reward=reward.mean())

    def _update_baseline(self, reward):
        if self.baseline is None:
            return torch.zeros((), device=reward.device)
        current = self.reward_baseline.clone()
        if not self.training:
            return current
        mean = reward.mean().detach()
        if not bool(self.baseline_initialised):
            current = mean
            self.reward_baseline.copy_(mean)
            self.baseline_initialised.fill_(True)
        else:
            m = self.baseline_momentum
            self.reward_baseline.mul_(m).add_((1 - m) * mean)
        return current
