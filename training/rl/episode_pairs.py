"""Antithetic episode-pair advantages (`LossConfig.advantage = "episode_pairs"`; ours, a DEPARTURE).

Environment rows come in common-random-number pairs (rows 2k, 2k+1 simulate the same user with
the same randomness) that play the episode offsets +σz and −σz (`AntitheticNoise`). Every step
of an episode gets, per signal, half the difference between its episode's outcome and the
partner episode's. Outcome per signal: the main signal's undiscounted episode return (the
finite-horizon objective), every other signal's per-decision mean (what constraints bound).
Why: on `rank` a fusion weight's effect on watch time per user-day is long-run and weak against
the between-user noise per-step GAE advantages of a γ = 0.99 return carry; the paired
difference cancels the user and the simulator's randomness (12× smaller spread on `rank`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.rl.data import Rollout, TransitionBatch


def episode_pair_advantages(outcomes: Tensor, rows: Tensor) -> Tensor:
    """Antithetic advantages of ended episode pairs: (V_self − V_partner) / 2 per signal.

    outcomes (E, m): one outcome per signal of each of E episodes; rows (E,): the env row each was
    played in, where rows 2k and 2k+1 are partners and the partner of outcome e is the outcome with
    row `rows[e] ^ 1` in the same position of the other half — callers pass the episodes of complete
    pairs as [e_0, e_0', e_1, e_1', …] (partners adjacent). Returns (E, m); each pair sums to zero.
    """
    if outcomes.shape[0] % 2 or outcomes.shape[0] != rows.shape[0]:
        raise ValueError(
            f"episode_pair_advantages: need partners adjacent, got {tuple(outcomes.shape)} / {tuple(rows.shape)}"
        )
    if not bool(((rows[0::2] ^ 1) == rows[1::2]).all()):
        raise ValueError("episode_pair_advantages: every even position's partner (row ^ 1) must follow it")
    half = (outcomes[0::2] - outcomes[1::2]) / 2.0
    return torch.stack([half, -half], dim=1).reshape(outcomes.shape)


class EpisodePairBuffer:
    """Online transitions of paired rows (`LearnerConfig.advantage = "episode_pairs"`), kept until both
    episodes of their pair have ended; episodes of rows 2k and 2k+1 pair by their index within the row.

    `add(rollout, targets)` appends a time-major rollout (T, N); `pop_ready()` returns the transitions
    of every complete pair with their advantages (`episode_pair_advantages`) and stored critic targets.
    """

    _KEY = 1 << 32

    def __init__(self, n_envs: int) -> None:
        if n_envs % 2:
            raise ValueError(f"episode_pairs: needs an even number of environment rows (pairs), got {n_envs}")
        self.n_envs = n_envs
        self.episode = torch.zeros(n_envs, dtype=torch.long)
        self.store: dict[str, Tensor] = {}

    def add(self, rollout: Rollout, targets: Tensor) -> None:
        t, n = rollout.obs.shape[:2]
        if n != self.n_envs:
            raise ValueError(f"EpisodePairBuffer: built for {self.n_envs} rows, got a rollout of {n}")
        ends = rollout.ends.cpu() > 0
        # Episode index of every step: the row's current one plus the episodes that ended before it.
        before = torch.cumsum(ends.long(), 0) - ends.long()
        episode = self.episode[None, :] + before
        self.episode += ends.long().sum(0)
        rows = torch.arange(n).expand(t, n)
        new = {
            "obs": rollout.obs.reshape(t * n, -1),
            "action": rollout.action.reshape(t * n, -1),
            "rewards": rollout.rewards.reshape(t * n, -1),
            "next_obs": rollout.next_obs.reshape(t * n, -1),
            "done": rollout.terminated.reshape(-1),
            "logp": rollout.behaviour_log_prob.reshape(-1),
            "targets": targets.reshape(t * n, -1),
            "key": (rows * self._KEY + episode).reshape(-1),
            "end": ends.reshape(-1),
        }
        dev = new["obs"].device
        new = {k: v.to(dev) for k, v in new.items()}
        self.store = new if not self.store else {k: torch.cat([self.store[k], v]) for k, v in new.items()}

    def pop_ready(self) -> tuple[TransitionBatch, Tensor, Tensor] | None:
        """(transitions, advantages (B, m), critic targets (B, m)) of every complete pair, or None."""
        if not self.store:
            return None
        key = self.store["key"]
        uniq, inverse = torch.unique(key, return_inverse=True)
        ended = torch.zeros(len(uniq), dtype=torch.bool, device=key.device)
        ended[inverse[self.store["end"]]] = True
        row, ep = uniq // self._KEY, uniq % self._KEY
        partner = (row ^ 1) * self._KEY + ep
        pos = torch.searchsorted(uniq, partner).clamp_max(len(uniq) - 1)
        has_partner = uniq[pos] == partner
        ready = ended & has_partner & ended[pos]
        if not bool(ready.any()):
            return None
        # Outcome per episode: main signal's sum, the others' per-decision mean.
        m = self.store["rewards"].shape[1]
        totals = torch.zeros(len(uniq), m, device=key.device).index_add_(0, inverse, self.store["rewards"])
        steps = torch.zeros(len(uniq), device=key.device).index_add_(
            0, inverse, torch.ones_like(key, dtype=torch.float32)
        )
        outcome = totals.clone()
        others = [i for i in range(m) if i != 0]
        outcome[:, others] = totals[:, others] / steps[:, None].clamp_min(1.0)
        # Complete pairs, partners adjacent: even rows first, their partners next.
        first = torch.nonzero(ready & (row % 2 == 0)).flatten()
        order = torch.stack([first, pos[first]], dim=1).reshape(-1)
        adv_episode = torch.zeros(len(uniq), m, device=key.device)
        adv_episode[order] = episode_pair_advantages(outcome[order], row[order])
        take = ready[inverse]
        keep = ~take
        out = {k: v[take] for k, v in self.store.items()}
        self.store = {k: v[keep] for k, v in self.store.items()}
        batch = TransitionBatch(out["obs"], out["action"], out["rewards"], out["next_obs"], out["done"], out["logp"])
        return batch, adv_episode[inverse[take]], out["targets"]
