"""How much the data can say about the learnable headroom in `rank` (issue 18, nineteenth round (d); tuning worlds only).

    python -m benchmarks.rank_signal_probe [--worlds 3100,3101,3102] [--users 2000] [--eps 0.1,0.2]

The learners explore around a constant and must read, from paired outcomes, which way to move. This probe
measures that signal directly, with no learning, for two directions around headroom_rank's constant c:

* "state-dependent": toward headroom_rank's observed rule r(s) (+5.2 % over c on its evaluation seeds; the
  learnable headroom): w(s) = c + α·(r(s) − c);
* "state-independent": the constant's own watch/comment trade, c with its comment weight × (1 − 0.4·α) (α = 1:
  the comment weight × 0.6, the pair `rank_probe --eval-noise` uses) — the direction the learners do follow.

For each direction and step ε it plays +ε and −ε on the same users with common random numbers
(`compare_policies`, as an antithetic pair of the learners' exploration does) and reports the paired lift, its
95 % CI, and the users a paired comparison needs to tell the sign at 2 standard errors:
n₂ = N · (half-width / (Z95 · |lift|))² · 4 (Z95 = 1.96; N users measured). Compared with the learners' data: a
40 × 64 × 32 run sees 81 920 requests, `requests_per_user_day` of which make one user-day (printed).

Read it as an upper bound on what a learner can extract per user: the rule's direction is KNOWN here, a learner
must also find it among its actor's parameters, and it reads per-episode (not 3-day) outcomes. Also printed: the
RMS weight change of each ε step, to compare with the learners' exploration (σ ≈ 0.1 in weight units).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from benchmarks import headroom_rank as hr

Z95 = 1.96
COMMENT = 4
"""Index of the comment weight in a stage's six weights (watch_time, click, like, follow, comment, share)."""


def state_dependent(alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """w(s) = c + α·(r(s) − c), clipped to the box [0, 1]; the same block at every stage."""
    rule = hr.observed_rule()
    constant = np.tile(np.asarray(hr.REFERENCE_CONSTANT, np.float32), 3)

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.clip(constant + alpha * (rule(obs) - constant), 0.0, 1.0)

    return policy


def state_independent(alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """The constant with its comment weight × (1 − 0.4·α) at every stage."""
    block = np.asarray(hr.REFERENCE_CONSTANT, np.float32).copy()
    block[COMMENT] *= 1.0 - 0.4 * alpha
    weights = np.tile(block, 3)

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.tile(weights, (np.asarray(obs).shape[0], 1))

    return policy


def rms_step(direction: Callable[[float], Callable[[np.ndarray], np.ndarray]], eps: float, world: int) -> float:
    """RMS over a sample of observed states of w₊(s) − w₀(s): how far one ε step moves the weights."""
    from training.envs import make_batched

    sim = make_batched("rank", 256, world, max_users=256, days=1, common_random_numbers=True)
    obs = sim.reset(None)
    diffs = []
    for _ in range(20):
        diffs.append(direction(eps)(obs) - direction(0.0)(obs))
        obs, _, _, _ = sim.step(direction(0.0)(obs))
    return float(np.sqrt(np.mean(np.square(np.concatenate(diffs)))))


def main(argv: list[str] | None = None) -> None:
    from training.envs.evaluate import compare_policies

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", default="3100,3101,3102", help="tuning worlds only (never 1000–1004)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--eps", default="0.1,0.2")
    a = p.parse_args(argv)
    worlds = [int(w) for w in a.worlds.split(",")]
    if any(1000 <= w <= 1004 for w in worlds):
        raise ValueError(f"--worlds: tuning worlds only, the reported worlds 1000–1004 are refused, got {worlds}")
    steps = [float(e) for e in a.eps.split(",")]
    directions = {"state-dependent": state_dependent, "state-independent": state_independent}
    for world in worlds:
        t0 = time.time()
        anchor = compare_policies(
            "rank", {"rule": state_dependent(1.0), "constant": state_dependent(0.0)}, "constant", a.users, 3, world
        )
        full, constant_comment = anchor["rule"], anchor["constant"].per_decision["comment"]
        requests_per_user_day = full.mean / full.per_decision["watch_time"]
        print(
            f"world {world}: rule vs constant {100 * full.lift:+.2f}% [{100 * full.ci_low:+.2f}, "
            f"{100 * full.ci_high:+.2f}] ({full.mean:.0f} vs {full.baseline_mean:.0f} s/user-day, comment "
            f"{full.per_decision['comment']:.3f} vs {constant_comment:.3f}); requests_per_user_day "
            f"{requests_per_user_day:.1f}",
            flush=True,
        )
        for name, direction in directions.items():
            for eps in steps:
                both = compare_policies(
                    "rank", {"plus": direction(eps), "minus": direction(-eps)}, "minus", a.users, 3, world
                )
                pair, comments = (
                    both["plus"],
                    (both["plus"].per_decision["comment"], both["minus"].per_decision["comment"]),
                )
                half = (pair.ci_high - pair.ci_low) / 2
                needed = a.users * 4 * (half / (Z95 * abs(pair.lift))) ** 2 if pair.lift else float("inf")
                print(
                    f"   {name:17s} ε {eps:.2f} (RMS weight step {rms_step(direction, eps, world):.3f}): +ε vs −ε "
                    f"{100 * pair.lift:+.2f}% ±{100 * half:.2f} (t {pair.lift / (half / Z95):+.1f} on {a.users} "
                    f"users); users for 2 s.e.: {needed:,.0f}; comment {comments[0]:.3f} vs {comments[1]:.3f}",
                    flush=True,
                )
        print(f"   [{time.time() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
