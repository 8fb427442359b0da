"""Quality of the `rank` policies against the simulator's ground truth (issue 5).

For each seed (≥ 5): TSCAC, the multi-agent cascade, main-only and RCPO train
online in the batched rank simulator, MA-RDPG (and its no-message ablation) in
its sequential view; behaviour cloning trains on logs of the simulator's
behaviour policy; the fixed-fusion baseline is the best constant weight vector
of a grid refined by coordinate sweeps (`fixed_fusion_search`).

One world per seed (ours, `--worlds one`, the default since the eleventh round, issue 18): a team has one
catalog; it searches its rule on its own traffic, trains on its own traffic and A/B tests on fresh users of
the same catalog. So for reported seed s, with world W = 1000 + s (the simulator's constructor seed draws the
catalog and the creators, the reset seed draws the users and their luck; `seed_plan`):
  * the fixed-fusion constant is searched IN world W on `--search-users` (default 1 000) users drawn from
    user seed 20 000 + s, used for nothing else; cached under runs/rank_quality_search/ per (world, user
    seed, users, days, margin), so reruns are cheap (delete the folder after changing the search or the world);
    since the twelfth round with a safety margin (`--search-margin`, default 0.03; ours): every constraint
    must clear its threshold × 1.03 on the search users, so that the rule stays feasible on fresh users of
    the world (`fixed_fusion_search` says why 0.03); the table's judging rule is unchanged;
  * every learner warm-starts at that constant and trains on W's catalog with the users of seed s
    (`BatchedSimPool(world_seed=W)`); BC learns from behaviour logs of W (users of seed s) too;
  * every policy, the constant included, is judged on W's own users (seed W; common random numbers).
The three user seeds s, W and 20 000 + s are disjoint for every s < 1 000 (tests/unit/test_rank_quality_plan.py).
Why: the tenth round (NOTES) found that with three worlds per seed the lift follows the judged world's comment
slack at a constant searched elsewhere (its comment rate 1.061–1.261 on evaluation worlds, threshold 1.1),
and that the constant itself violates on some judged worlds, so the lift was not like for like.
`--worlds split` keeps the previous layout (learners train in world s, are judged on world 1000 + s, and one
constant is searched on 200 users of world 10 000, margin 0), so the tenth round's table can be reproduced;
`--worlds one --search-margin 0` gives the eleventh round's.

Warm start at the incumbent (ours, `--start incumbent`, the default): every
online learner starts exactly at the fixed-fusion search's constant
(`start_action`: the actor plays it in every state at step zero) instead of the
production default weights, and learns state-dependent deviations from it — as
a team would never ship below the rule it already runs. The constant is never searched on the judged users.
Every learner is evaluated on
what ships (`training.rl.losses.shipped_policy`, the export path's accessor: TSCAC's, the MA cascade's
and RCPO's best feasible iterate, MA-RDPG's `shipped_actors()`; the last iterate for main-only and BC),
deterministically (the Gaussian mean, as serving acts) with
`evaluate_policy` on fresh users over `days` days (next-day returns
included). Reported per algorithm: watch time per user-day (mean over seeds,
95% t-interval across seeds) and every constraint's per-decision value
against its threshold.

Goal (issue 5): TSCAC and the MA cascade beat BC and the best fixed fusion on
watch time by ≥ 3% with every constraint satisfied; main-only violates ≥ 1.
Written honestly whether met or not.

    python -m benchmarks.rank_quality [--seeds 5] [--worlds one|split] [--iterations N] [--rdpg-iterations M]
        [--n-envs 64] [--users 1000] [--search-users 1000 (one) | 200 (split)] [--search-margin 0.03 (one) | 0 (split)]
        [--start incumbent|default] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.common import RESULTS_DIR, Metric, write_result
from models.problems import RANK

# What was tried to reach the goal (appended to the .md so it travels with every rerun).
NOTES = """## What was tried (training only; simulator, thresholds and evaluator unchanged)

Quick single-seed probes (seed 0, ground truth on 1 000 users, lift vs the default weights on the same users):

* Constant weights already show the headroom: on 3 000 users, (1, 1, 0, 0, 0, 0) at every stage gives
  6 063 s/user-day vs 5 329 for the default (+14 %) with every constraint met — clicks track affinity and
  completion, which lengthen sessions and bring users back. Per request it *loses* watch time
  (344 vs 357 s), so the gain is purely long-run; the grid search of `fixed_fusion` ranks by watch time
  per request and so keeps the default.
* Why the learners miss it: regressing the γ = 0.99 return-to-go on per-request Gaussian exploration
  noise (512 users × 60 steps) gives t ≈ 1 for every click weight, while the immediate per-request
  effect (t ≈ −16 for the re-rank click weight) says "lower it". Holding one noise draw per user-episode
  makes the long-run effect visible (click weights positive at every stage). Hence two training
  changes: `LossConfig.discounts` (main γ 0.99 instead of the spec's 0.95, via configs/rank/*.yaml)
  and `LossConfig.exploration` (per-episode exploration offsets; a marked departure).
* main-only with both (σ 0.2, 128 envs): +2.8 %, constraints met (it moves toward the feasible
  click-heavy optimum, so it no longer *has* to violate anything to gain watch time).
* TSCAC (all γ 0.99 + episode noise): λ 0.02 with σ 0.1 and actor lr 1e-3 −0.8 % (met, shipped); with
  σ 0.2, lr 3e-3: λ 0.02 −6.6 %, λ 0.05 −1.5 %, λ 0.2 −4.8 %, λ 1.0 −1.9 % (large λ: the stage-one
  actors pull toward all-high interaction weights; small λ: large state-dependent jumps);
  A₁ standardised per minibatch −2.3 % (λ 0.1) / −4.3 % (λ 0.02) / −10.7 % (λ 0.05), reverted;
  actor lr 5e-4 with λ 0.05 −4.5 % (violates). Stage two's exp(A₁/Σλ) weighting on noisy long-horizon
  advantages is the bottleneck: it selects noisy samples rather than averaging them.
* MA cascade: the centralised Q(o, a) advantage drove pre-rank and rank to all-ones weights
  (−15 %); with GAE advantages (`centralised_advantage: false`), λ 0.02, σ 0.1: +4.1 % but comment
  and share below threshold at the deterministic mean (the stochastic training policy met them:
  clipping noisy weights at 0 raises the interaction weights it actually plays).
* More iterations were not affordable inside the ~10 min budget on 2 shared cores
  (20 iterations × 128 envs × 32 steps per online algorithm per seed; the 5-seed run of 2026-11-21
  took 1 044 s with other jobs on the machine).
* Before these changes (20 iterations × 64 envs, γ 0.95, per-step noise): TSCAC −1.8 %, MA cascade
  −15.8 %, main-only −3.4 % (no violation). After (the 2026-11-21 table, 300 users): TSCAC −2.9 %, MA cascade −2.6 %,
  main-only +0.1 % (no violation) — within the between-seed noise of 300 users × 3 days except the MA
  cascade's recovery. Not met: no variant found lifts TSCAC or the MA cascade by 3 %, and with the
  long-horizon objective the watch-time-greedy baseline finds feasible gains instead of violating.

Second round (2026-11-22; probes: seeds 0 / 1 / 2, 20 iterations × 128 envs × 32 steps, ground truth on
1 000 users, lift vs the default weights on the same users; "viol." = a constraint missed):

* Fixed fusion now ranks its grid by watch time per user-day incl. next-day returns (the metric reported
  here; `FixedFusionConfig.objective`) instead of per decision. On its grid (one shared value for all
  interaction weights) the default (1, 0.3, …) still wins: 5 356 s/user-day on the 1 000 held-out users
  vs 5 083 for (0.5, 0.2) and 4 924 for (1, 0.5); (1, 0.2) and (1, 0.1) fall below the click threshold and
  have less watch time per user-day anyway (5 032, 4 785) although more per decision (368, 374 s vs 356 s).
  So the baseline did not change. That grid cannot express (1, 1, 0, 0, 0, 0); a grid with its own
  click weight would raise this baseline by ~14 %.
* Users per seed 300 → 1 000: the same trained policy measured +1.3 % on 300 users and +5.8 % on 1 000.
* The probes' seed-to-seed spread (±5 points) exceeds every setting's mean effect:
  TSCAC as shipped −1.1 / −1.2 / +5.1 % (viol.), at 60 iterations −0.9 / +3.8 / −1.7 % (viol.);
  stage two with A₁ standardised per minibatch at temperature β (Σλ → β·std A₁) β 1: +5.8 / −0.9 %
  (60 iterations +3.2 / −3.9 %), β 2: −3.3 / −1.2 %; the whole exponent log π*/μ standardised, β 1:
  −1.1 / −7.7 / +1.0 %, with λ 0.005 −6.2 % (viol.) / −4.2 %; GAE λ 1.0: −6.5 % (viol.) / −6.3 /
  −2.2 % (viol.); λ_click 0.3 with the other λ 0.02: −7.7 % (viol.) / −6.2 %; 512 envs × 8 steps (more
  exploration offsets per iteration, shorter GAE window): −0.9 % (viol.) / −4.3 / +1.2 %.
  main-only: +0.6 / −1.4 / +2.5 %; with 512 envs × 8 steps −5.7 % (viol.) / −2.9 / −0.7 %.
  None was kept: stage two is the paper's form again.
* Why standardising did not help: the stage-one terms (λ_i/Σλ)·log(π_θi/μ) are tens of nats for
  18-dimensional Gaussians with σ 0.1 whose means drift 0.3–0.6 from μ, so once A₁ is standardised they
  dominate the exponent and stage two imitates the mean of the stage-one actors — which wander (the
  follow actor put 0.91 on the like weight), so every interaction weight rises and watch time falls.
  Unstandardised (the paper's form, small λ), A₁/Σλ dominates and a few noisy samples carry each
  minibatch. Either way the update follows noise: the long-run effect of a weight is too weak in
  ~80 k transitions with ~128 independent exploration offsets per iteration.
* main-only does ignore the constraints (its actor loss reads the main advantage only,
  training/algorithms/main_only.py). It violates none at the deterministic mean because the direction
  that raises long-run watch time here (a higher click weight) raises interactions too; in the probes it
  violated click, comment and share in one run of six (512 envs × 8 steps, seed 0).
* This table (shipped configs, fixed-fusion fix, 1 000 users; 716 s): TSCAC −0.5 % [−4.3, +3.3],
  MA cascade −2.7 % [−8.9, +3.4], main-only +0.3 % (no violation); the best fixed fusion is the default
  weights. Not met, for the reasons above.

Third round (2026-11-22): antithetic, common-random-number episode pairs (`LossConfig.advantage:
episode_pairs`, now on in configs/rank/{tscac,ma_cascade,main_only,rcpo}.yaml; ours, marked in
training/rl/episode_pairs.py and training/algorithms/tscac.py). Simulator rows 2k and 2k+1 simulate the same user
with the same randomness per episode and request index (`RankConfig.paired_rows`, opt-in, training only;
the evaluator is unchanged) and play exploration offsets +σz / −σz; every step of an episode gets half the
difference of the pair's outcomes (main: undiscounted episode watch time; other signals: per-decision
mean), standardised per signal. On 512 rows with ±0.1 along the (1, 1, 0, 0, 0, 0) direction the spread of
paired episode differences fell from 19 100 s (independent users) to 1 520 s (t 9.0 vs −1.1).
Probes (seeds 0 / 1 / 2, lift vs the default weights on 1 000 users; in brackets the same policies on 5 000
other users, which moved single-seed lifts by up to 11 points), 20 iterations, every constraint met:

* TSCAC (λ 0.02, σ 0.1, lr 1e-3): +1.4 / +4.6 / +6.5 % [+6.7 / +1.7 / −0.8]; λ 0.005: +3.0 / −2.0 / +10.5 %;
  λ 0.01: +3.5 / +0.6 / +4.6 %; λ 0.05: −3.1 / +0.5 / +0.5 % (interactions far above threshold);
  σ 0.2: +3.6 / +4.1 / +5.1 %; σ 0.2 λ 0.01: [+3.0 / +4.0 / +2.6]; σ 0.2 λ 0.005: [+0.4 / +5.4 / +1.9];
  lr 3e-3: [−0.9 / +5.8 / −0.1]; stage-two weight clip 2 instead of 10: [+4.1 / +5.0 / +0.2];
  + σ 0.2: [+8.1 / +2.9 / +3.4]; + σ 0.2, lr 3e-3: [+3.1 / +4.5 / +3.6]; 8 epochs, clip 2:
  [+7.1 / +2.4 / −1.6]; stage-one actors restarted from the shipped actor every batch, λ 0.1:
  [+5.5 / +5.1 / +2.5] (not kept: no clear gain over the noise). 40 iterations: +7.2 / +5.2 / +8.3 %
  [+7.8 / +5.9 / +0.9]; with clip 2 [+4.4 / +4.2 / −2.5].
* MA cascade: +6.6 / +4.3 / +3.4 % [+8.7 / +3.9 / +1.4]; 40 iterations [+10.1 / +6.9 / +1.8].
* main-only: +8.4 / +6.1 / +12.2 % [+10.3 / +12.7 / +7.7] — the shipped main-only (σ 0.2, lr 3e-3, PPO
  surrogate) moves the weights further (re-rank click 0.58, other interaction weights 0.08–0.2) than
  TSCAC, whose stage two imitates the winners of the pairs (exp(A₁/Σλ) with Σλ 0.1 on standardised A₁)
  and moved re-rank's click weight only 0.3 → 0.43 in 20 iterations.
* RCPO: [+3.2 / +8.0 / +0.5] vs [−1.6 / +3.2 / −2.5] with per-step GAE.
* Full table at 20 iterations (358 s): TSCAC +3.2 % [+0.0, +6.4], MA cascade +3.2 % [+0.7, +5.8],
  main-only +8.7 % [+5.2, +12.2], RCPO +4.3 % [+0.5, +8.0], every constraint met by all.
  This table: 40 iterations (the default since this round; 577 s — the shorter runs made it affordable).
  TSCAC and the MA cascade now clear +3 % with every constraint met. The goal stays not met because
  main-only violates nothing: with the long-run objective the watch-time-greedy direction (higher click
  weights) raises every interaction too, so ignoring the constraints costs nothing here — and it is
  the best learner on watch time.

Fourth round (2026-11-22): a stronger fixed-fusion baseline. The grid ties every interaction weight to one
value, so its best point was the production default, while (1, 1, 0, 0, 0, 0) had shown +14 % per
user-day in the first round. `FixedFusionConfig.refine_sweeps` (ours) adds coordinate sweeps over the six
per-signal weights (the same at every stage) after the grid; with two sweeps (~80 evaluations, under a
minute) the search on the held-out users picked (1, 1, 0, 0.2, 0.2, 0.3), which on the five evaluation
seeds gave +5.7 to +12.8 % (mean ≈ +10 %) over the default weights with every constraint met. Against
that baseline the table above is the honest one (40 iterations, 590 s): fixed fusion 6 095 s/user-day
(+10.6 % over BC), TSCAC −3.7 % [−6.5, −0.9], MA cascade −3.7 % [−9.2, +1.8], RCPO −2.9 %, main-only
+0.5 % [−7.7, +8.6] — the learned policies of the third round (+4.9 % over the old baseline) do not beat
the best constant weights. What would: state-dependent weights that the constant cannot express must be
worth more than the learners' remaining distance to the constant optimum; with ~160 k transitions per run
TSCAC's stage two (which imitates the better episode of each pair) moves the weights only part of the way
(re-rank click weight 0.3 → 0.43 in 20 iterations, where the constant optimum has 1.0).

Fifth round (2026-11-22): is there anything for a learned policy to find? A policy beats the best constant
weights only where different contexts want different weights. `benchmarks/rank_headroom.py` (the old
world's check, since replaced by `benchmarks/headroom_rank.py` on simulators 2.0) looked for
such contexts without any learning: per context, a table of weights (one row per context value) starts
at the best constant and is improved by two coordinate sweeps with the fixed-fusion rule on the search
users, then is compared with the constant on this table's five evaluation seeds
(benchmarks/results/rank_headroom.json):

* per activity group (low / medium / high): no change to any row improved the search objective at all
  (193 tables); the best table is the constant, lift 0.0 %.
* per session depth (requests 0–2, 3–7, 8+): one change (like weight 0.2 → 0.5 at depth 3–7) gained
  +0.3 % on the search users and −2.9 % [−6.4, +0.6] on the evaluation seeds — search noise.
* per recent interaction rate (terciles; the simulator's per-user sociability, which shifts every
  interaction probability of the user, as the policy sees it): no change improved anything; lift 0.0 %.
* one constant per cascade stage (not a context; the fixed-fusion search ties the stages, the learners
  do not): the sweeps over (stage, signal) found +2.2 % on the search users (pre-rank like 0.1 and
  follow 0.7, re-rank comment and share 0) and +0.5 % [−3.5, +4.6] on the evaluation seeds.
* Every row matters: a click weight of 0.5 instead of 1.0 in any single row costs 7–9 % on the search
  users (activity group 5 557–5 617, depth 5 637–5 859, interaction rate 5 519–5 667 vs 6 039 s/user-day),
  so the tables were not flat by construction.

So in this simulator the best constant weights are, to the resolution of this search, the best weights in
every context the policy can see, and separate weights per stage add nothing measurable. Users differ in
activity, patience, return rate, topic interests and sociability, but the same trade-off between a shown
item's watch time and its interactions is best for all of them, and their interests reach the policy
already through the predicted signals it weights. A learned policy can approach the constant optimum but
not beat it by 3 %: the goal is out of reach here without a different user model in the simulator
(issue 3) or different constraint thresholds (the problem spec), neither of which this issue changes.
Against the production default instead of the tuned constant, the learners' lifts are the third round's
(TSCAC +4.9 %, MA cascade +4.9 %).

Sixth round (2026-12-04, issue 18; simulators 2.0 — the rounds above were on the old world and its old
thresholds): MA-RDPG (training/algorithms/ma_rdpg.py) and its no-communication ablation join the table.

* The new world's thresholds (click ≥ 3, like ≥ 1.6, follow ≥ 0.3, comment ≥ 1.1, share ≥ 0.45 per
  request) are violated by the production default (click 2.46, comment 0.46 on 1 000 users) and by BC; the
  fixed-fusion search finds feasible constants with high interaction weights at a watch-time cost.
* Budget: the host ran at load 18–21 on 2 cores (nice 10: a process got ~5–10 % of a core), so the
  earlier 40-iteration table (5 373 s on 2026-12-04 04:51 with four learners) could not fit the issue's
  ≤ 25 min. Its table trained the on-policy learners for 5–8 iterations × 64 envs × 32 steps (they barely
  leave the default weights and violate like it), MA-RDPG for 20–30 iterations × 64 rows × 32 requests
  (~4× cheaper per iteration: a 0.6 s CPU iteration at 128 rows vs 2.65 s for TSCAC), 200 users × 3 days
  per seed, (algorithm, seed) runs in 3 processes. Unequal budgets: read the on-policy rows as "untrained
  in this budget", not as the algorithms' quality.
* First run (on-policy 5 it., MA-RDPG 20 it., margin 0.03; 1 087 s): MA-RDPG +5.5 % [−6.1, +17.0] over
  fixed fusion but comment 1.077 < 1.1 at the deterministic policy (the multipliers read the noisy
  training policy); vs the MA cascade +10.2 % [−0.9, +21.3]; vs no message +14.1 % [−11.1, +39.4].
  Hence `margin: 0.1` in configs/rank/ma_rdpg.yaml for its table.
* Its table (on-policy 8 it., MA-RDPG 30 it., margin 0.1; 1 414 s): MA-RDPG meets every constraint
  on the mean over seeds (comment 1.104; per seed 1.073 / 1.231 / 1.068 / 1.083 / 1.064 — four seeds
  just below, as the fixed fusion's seed 0 at 1.095) at −0.9 % [−13.2, +11.5] against fixed fusion, the
  only feasible baseline; the seed-to-seed spread of MA-RDPG (3 146–3 752 s/user-day) is the DDPG
  learner's, not the users' (common random numbers). vs the MA cascade +0.2 % [−10.6, +11.0], vs the
  no-message ablation +3.9 % [−8.5, +16.3]. Goal not met: no learner reaches +3 % with every constraint
  met; what remains is budget (iterations the host could not give) and variance across seeds.
* Single-seed probes (1 000 users, seed 1000, 40 it. × 128 rows): MA-RDPG 3 888 s/user-day vs 3 174 for
  the default weights, click 3.39, comment 0.92 (the comment multiplier still rising at the end).
* The MA cascade trains in the sequential view too: the on-policy collector asks a multi-agent pool
  to act in turn (`BatchedSimPool.act_in_turn`, training/rl/data.py), each stage observing the pool the
  upstream stages really kept.
* The relay test (tests/unit/test_ma_rdpg.py) shows the message carrying what only the first stage saw
  (main reward 0.98 vs 0.84 for any policy without it); on rank the no-message ablation's CI is too wide
  to say what the message is worth there.

Seventh round (2026-12-05, issue 18): warm start at the incumbent (ours; `start_action` in
training/rl/losses.py and training/algorithms/ma_rdpg.py, `--start incumbent`, the default). Every online
learner starts exactly at the fixed-fusion search's constant — the actor's last layer zeroed, its bias at
atanh of the box position, so the deterministic policy plays the constant in every state at step zero
(a weight on a bound: 1 % of the half-width inside; tests/unit/test_rank_warm_start.py) — and learns
state-dependent deviations from it. The constant is searched on the held-out users (seed 10 000), as before.

* Budget: on a lightly loaded host an iteration at 64 envs × 32 steps costs ~0.4 s (TSCAC, main-only,
  RCPO) and ~0.8 s (MA cascade, MA-RDPG), an evaluation of 200 users × 3 days ~1 s; 40 iterations for
  every learner (the defaults now) and `--jobs 2` fit the 5-seed run in about 20 min.
* Probes (not the reported seeds: training seeds 100–103, ground truth on 2 000 users of seeds 3100–3103
  — 1 000 for the first two runs — lift vs the same constant on the same users, 40 iterations × 64 envs,
  "comment" = the learner's comment rate relative to the constant's on those users):
  - The incumbent sits on the comment threshold: its rate is 1.152 / 1.097 / 1.062 / 1.262 on the four
    probe worlds (the threshold 1.1) and 1.107 ± 0.013 for its exploring version on training seed 103's
    rows. Worlds differ by ±7 %, so whether a policy near the constant meets the constraint on five
    evaluation worlds is largely the worlds' draw.
  - Warm start alone (TSCAC, 2 iterations): +0.04 %, every rate within 1 % of the constant's.
  - TSCAC as shipped (PID λ, margin 0): +1.5 / +3.2 / +3.2 / +2.5 % (seeds 100–103), comment −1.1 /
    −3.3 / −5.5 / −1.3 %. Margin 0.05: +3.0 / +2.2 % (101, 102), comment −8.2 / −2.8 % — the PID reads
    a per-batch comment rate of 64 users that swings 0.95–1.46 between batches. 128 envs: −0.0 / −0.8 %,
    comment +0.0 / +2.5 %; 60 iterations: +2.9 / −2.3 %, comment −3.6 / +2.0 %.
  - MA cascade as shipped (fixed λ 0.02): +3.2 / +1.7 / +3.4 / −2.1 %, comment −3.3 / −2.8 / −1.7 /
    +2.2 %; PID λ with margin 0.05: +2.5 / −6.9 % (101, 102); 60 iterations −0.6 % (101).
  - main-only: +7.2 / +7.7 / +7.7 % (100–102), comment −16 / −20 / −12 %: it violates (as it should).
    RCPO: +5.2 % (101), comment −12 %.
  - Read together: TSCAC and the cascade trade comments for watch time at about main-only's rate
    (~0.5 % of watch time per 1 % of comments); their gains are the slack the incumbent had on a world,
    spent, not weights that depend on the state. With twice the pairs per batch (128 envs) TSCAC stays
    at the constant.
  - MA-RDPG with the actors learning from step 0 (margin 0.1): +5.3 / −4.4 % (100, 101), comment
    −14 / −3 %; σ 0.1 with margin 0.15: +7.2 / −2.9 % (101, 102), comment −12 / −7.5 %; actor lr 1e-4:
    −10.2 / +5.6 / +3.4 % (101–103), comment +4.6 / −16 / −9 %. An untrained critic's ∂Q/∂a moves the
    warm-started actors far either way. Hence `actor_starts: 320` (ours; configs/rank/ma_rdpg.yaml): the
    actors wait a quarter of the run while the critic learns. Then +0.2 / +0.1 / +0.3 % with every rate
    within 0.3 % of the constant's: once the actors move, the training policy's watch time per request
    jumps (137 → 197 s on seed 103) and its comment rate falls to 0.91 while the multiplier climbs 0.5 → 4.5,
    so the best-feasible tracker ships an iterate from before they moved (iteration 2 on seed 103); with
    actor lr 3e-5 −0.3 / +0.5 %.
* The table above (40 iterations each, `--jobs 2`; 836 s at host load 4–5, the reported command run once):
  the fixed-fusion search found the same constant as in the sixth round (3 505 s/user-day, comment 1.181).
  TSCAC +2.5 % [−2.6, +7.5] and the MA cascade +1.2 % [−1.9, +4.4] with every constraint met on the mean
  (comment 1.124 and 1.156; per seed TSCAC 1.033 / 1.140 / 1.201 / 1.097 / 1.150 — as in the probes they
  spend the incumbent's comment slack, seed 0's world has little); was −2.2 % and −3.3 %, both infeasible.
  RCPO +0.2 % (met). main-only +7.6 % [+5.1, +10.1] and violates comment (0.953), so that part of the goal
  now holds. MA-RDPG −2.2 % [−8.3, +3.8], comment 1.046 (NO): on seeds 0 and 4 the tracker shipped
  iteration 10, just after the actors started (its window, iterations 8–10, was measured mostly on the
  incumbent's play, but the state it keeps is the one after 66 actor steps), and that policy fell to
  comment 0.754 / 1.023 on the evaluation users; the no-message ablation −8.7 % [−26.7, +9.3] (seeds 2 and 3: 2 497 and
  2 874 s/user-day). MA-RDPG vs the MA cascade −3.4 % [−9.0, +2.3], vs no message +9.3 % [−12.5, +31.0].
  Goal not met: no learner reaches +3 % with every constraint met. The warm start made the on-policy
  learners feasible from step one and turned their lifts positive; what they gain is mostly the
  incumbent's slack, and the state-dependent part that `benchmarks/headroom_rank.py` finds (+5.2 % with
  a rule on observed features, searched on far more users) is not learned in 40 iterations × 64 envs.

Eighth round (2026-12-05, issue 18): three defects of the seventh round fixed, the table rerun once. Training is
unchanged for every learner but MA-RDPG; the runs are deterministic (main-only, BC and fixed fusion reproduce
the seventh round's per-seed numbers exactly), so the on-policy rows differ only in which policy is scored.

* What is scored: `evaluate` read `learner.actor`, the *last* iterate, while TSCAC, the MA cascade and
  RCPO ship their best feasible iterate. Now every learner is scored through `shipped_policy(learner)`
  (training/rl/losses.py: `LossModule.shipped_actor()`, which the constrained losses override) — the one
  accessor `troupe train --export` and pipelines/jobs/{train,export}.py now use too (the CLI export also
  wrote the last iterate online; offline both are the same actor). MA-RDPG already used `shipped_actors()`.
* MA-RDPG's tracker kept the actors' state at the *end* of the judged window, which had played none of
  it. It now keeps the snapshot taken before the actor updates of the window's newest iteration — the
  state that started playing it (that iteration must meet every constraint on its own as well as the
  window's mean). The window's middle iteration's snapshot was tried first and rejected: on the relay
  test (multiplier swinging the actors across the threshold) it missed the constraint the window met.
  The relay test's shipped policy now scores main 0.87 (> 0.84, the best without the message; the last
  iterate scored > 0.9), so its bound is that 0.84 (tests/unit/test_ma_rdpg.py).
* `actor_starts` ≥ the run's length (iterations × rollout_steps requests) is refused, naming the field and
  the length (it silently meant no actor training).
* The table above (the reported command run once, 619 s at host load 2.5–2.8, `--jobs 2`), row by row
  against the seventh round:
  - TSCAC −0.4 % [−4.1, +3.3], comment 1.162, met (was +2.5 %, 1.124: the last iterate). Per seed
    3 582 / 3 520 / 3 435 / 3 581 / 3 332 s/user-day (was 3 800 / 3 760 / 3 435 / 3 511 / 3 451); the
    tracker kept iterations 29 / 25 / – / 24 / 20 (seed 2 found no feasible window and ships its last
    iterate, as before). The shipped iterates are earlier and keep more comment slack (seed 0: 1.122 vs
    1.033) and less watch time: the seventh round's +2.5 % was the last iterate's, which does not ship.
  - MA cascade +0.9 % [−4.9, +6.7], comment 1.150, met (was +1.2 %, 1.156); kept 28 / 34 / 23 / 21 / 35.
  - RCPO −1.2 % [−10.0, +7.6], met (was +0.2 %; seed 4 found no feasible window).
  - MA-RDPG −5.2 % [−17.6, +7.3], comment 1.163, every constraint met on the mean (was −2.2 %, comment
    1.046, NO). Seeds 0 and 4 now ship the state that started iteration 10 — two actor steps from the
    incumbent — and score 3 648 / 3 341 (fixed fusion 3 639 / 3 327; comment 1.098 / 1.200, was 0.754 /
    1.023). Seed 2 fell 3 359 → 2 790: its first feasible windows (ending at iterations 19 and 20; the
    exploring incumbent measured comment 0.84–1.11 there, and no later window beat them) came while the comment multiplier
    (≈ 2.2) had pushed the training policy to 85–95 s of watch time per request (iterations 15–20; 150 s
    at the incumbent, 200 s when it swings back), and the kept state (start of iteration 20) is one of
    those; the state after iteration 20 (the same kept window: training and the tracker's measurements
    are unchanged) that shipped before had already swung back. Seeds 1 and 3:
    3 306 / 3 510 (were 3 301 / 3 465). The no-message ablation −7.2 % [−26.1, +11.6] (met); seeds 0 and 4
    ship the same near-incumbent state as MA-RDPG. MA-RDPG vs the MA cascade −6.0 % [−17.6, +5.5], vs no
    message +3.1 % [−5.7, +11.8].
  - main-only +7.6 % and violates comment (0.953), BC and fixed fusion: unchanged.
* Verdict: goal not met, and further from it than the seventh round read. Scoring what ships removed
  the on-policy learners' gains (TSCAC +2.5 → −0.4 %, the cascade +1.2 → +0.9 %): the best-feasible
  tracker, judging on 64 noisy training users per batch, keeps an earlier, over-satisfied iterate. MA-RDPG
  now ships policies that met the constraint when they played and is feasible on the mean, but its PID
  multiplier swings the actors between over- and under-satisfying comments, so a feasible window is often
  an over-corrected one (seed 2). No learner reaches +3 % with every constraint met; only main-only,
  which ignores the constraints, clears it.

Ninth round (2026-12-05, issue 18): MA-RDPG's multiplier dynamics and its actors' reach; 1 000 evaluation
users. Probes on the tuning seeds only (training seeds 100–103, ground truth on 1 000 users of worlds
3100–3103, lift vs the same incumbent constant on the same users, 40 iterations × 64 rows; "comment" is
the rate relative to the constant's on those users; `python -m benchmarks.rank_probe '<JSON overrides>'`):

* Diagnosis, MA-RDPG as shipped (margin 0.1): it ships +0.1 / +0.1 / +0.3 / +0.2 % — the tracker keeps
  iteration 2 or 5, before the actors move. (1) The multiplier's set point sat above the incumbent: with
  exploration the incumbent's rates move by < 1.3 % (comment < 0.5 %) on the four training worlds, whose
  deterministic comment rates are 1.118 / 1.196 / 1.101 / 1.114, so a 10 % margin (aim 1.21) asked for more
  comments than the incumbent gives and the comment multiplier wound up 0 → 3.4–4.8 over every run.
  (2) The comment value entered Q_mix at a tenth of the watch-time value's scale (γ 0.9 vs 0.99: a
  discounted sum over ~10 vs ~100 requests), so when the actors start (iteration 10) they trade comments
  for watch time at once — the training comment rate fell 1.17 → 0.44 within one iteration (seed 101,
  margin 0) — and the integral needs ~20 iterations to catch up; margin 0: +0.1 / +0.1 / −10.0 % (seed 102
  ships an over-corrected state); margin 0.03 with a smoothed P term (α 0.2, K_P 1): −1.3 % on average.
* `per_request_mix` (ours): Q̃_i·(1 − γ_i)/(1 − γ_main) in Q_mix, so a multiplier of 1 trades a relative
  1 % of a constrained rate for 1 % of the main rate. With margin 0.03 the comment multiplier settles at
  0.2–1 and the training comment rate at 1.1–1.2 after the first dip. It still ships +0.1 / +0.1 / +0.3 /
  +0.2 %: the actors now swing between extremes at a held comment rate (per-request watch time 83–218 s
  against the incumbent's ~145 s), and their last iterate loses 14–17 % of watch time per user-day on
  every seed (also at actor lr 1e-4: −15 / −17 / −16 %, shipped −3.3 % on average) — the actors leave the
  ±0.1 region the exploration covers and follow the critic's extrapolation.
* `deviation_bound` (ours): each stage's actor acts within the incumbent ± the bound (its tanh squashes onto
  that box; exploration and clipping use the full box). ± 0.2: +2.5 / +1.9 / +0.1 / +3.8 % (mean +2.1),
  comment −4.6 / −6.0 / −0.1 / −7.7 %, last iterates −25.7 / +1.9 / −13.9 / −21.4 %; ± 0.2 with actor lr
  1e-4: +2.0 / +2.2 / +3.0 / −0.0 % (+1.8), comment −5 %; **± 0.1 (adopted): +1.4 / +1.8 / +2.6 / +1.8 %
  (mean +1.9), comment −2.8 / −3.2 / −2.4 / −2.8 %, last iterates −8.9 / +1.8 / +3.0 %** — the steadiest,
  and the least comment per point of watch time (0.6–1.1 % watch per 1 % comment; main-only's rate is
  ~0.5). A linear warm-up of the actors' learning rate over 10 iterations (with per_request_mix) was
  tried on seed 100 only (shipped iteration 2, +0.1 %) and dropped.
* Adopted in configs/rank/ma_rdpg.yaml: margin 0.03, per_request_mix, deviation_bound 0.1 (the
  no-message ablation shares them). What it learns is still mostly the incumbent's comment slack,
  traded at a slightly better rate than main-only's; state-dependent weights worth +3 % were not found.
* Evaluation noise: two fixed constants (the incumbent and its comment weight × 0.6, no training noise) on
  worlds 3100–3104: the paired lift's 95 % half-width over the 5 seeds is ±1.46 points at 200 users and
  ±0.60 at 1 000 (`python -m benchmarks.rank_probe --eval-noise`). The table's half-widths (±3.7 for TSCAC, ±12.4 for
  MA-RDPG at 200 users) are mostly training variance, so 1 000 users narrow them only a little
  (TSCAC: √(3.7² − 1.46² + 0.60²) ≈ ±3.5 expected) but remove up to ~1.5 points of per-seed evaluation
  luck from each lift. `--users 1000` is now the default; `--search-users 200` keeps the fixed-fusion
  search (and so its constant) as before.
* The table above (the reported command run once with the adopted MA-RDPG settings and `--users 1000`:
  `python -m benchmarks.rank_quality --jobs 1`, 1 038 s at host load 3–4; the fixed-fusion search on its
  200 held-out users found the same constant (0.25, 0, 0.5, 0.2, 0.5, 0.5) at every stage):
  - MA-RDPG −1.7 % [−10.8, +7.3], comment 1.136, every constraint met (was −5.2 % [−17.6, +7.3] on 200
    users with the old settings). Per seed against fixed fusion +1.7 / +1.6 / −14.6 / +2.7 / −0.0 %.
    The previous settings (margin 0.1, neither new option) rerun once in the same conditions for a paired
    comparison (same seeds, same 1 000 users, trained and scored as `run_one` does with the overrides
    {"margin": 0.1, "per_request_mix": false, "deviation_bound": 0}; a one-off, not a tuning run): 3 298
    s/user-day, −6.7 % [−26.3, +12.8] against fixed fusion (per seed +1.3 / +5.5 / −31.6 / +4.1 / −13.0 %),
    comment 1.095 — violated on the mean (0.943 and 0.950 on seeds 0 and 3). New against old, paired:
    +7.0 % [−8.3, +22.3] (per seed +0.4 / −3.7 / +24.8 / −1.3 / +14.9 %).
    Seed 2 is a world mismatch, not the multiplier: on its training world the exploring incumbent's
    comment rate is 0.99 (iterations 0–9; 1.09–1.18 on the other four), below the threshold, so the
    constrained learner must *raise* comments there (training watch time 156 → 114 s per request, comment
    → 1.12) — on its evaluation world the incumbent already has 1.160, and the correction costs 14.6 %.
    The tuning worlds (incumbent 1.10–1.20) had no such case. main-only, which ignores the constraint, also
    loses 8.1 % on seed 2, so that training world transfers badly for every learner.
  - No-message ablation −1.3 % [−10.4, +7.8]; MA-RDPG vs it −0.4 % [−1.0, +0.2] (within ± 0.1 of the
    incumbent the message has little room to matter); vs the MA cascade −2.2 % [−10.1, +5.7].
  - Unchanged learners: TSCAC −0.1 % [−4.8, +4.6] (was −0.4 % on 200 users; per-seed lifts moved by
    0.9 points sd, the evaluation users' share), MA cascade +0.5 % [−5.9, +6.9] (was +0.9 %), RCPO −4.2 %
    [−15.2, +6.8] (was −1.2 %), BC −7.9 %, main-only +3.4 % [−5.5, +12.4] and violates comment (0.986;
    was +7.6 %, 0.953). main-only's and RCPO's per-seed lifts moved by 7 and 14 points sd although their
    training settings did not change: those two runs did not reproduce the previous run's policies (this
    run: one process, OMP_NUM_THREADS=1; the cause was not isolated) — read their rows with that spread.
    Fixed fusion's comment rate on seed 0's users is 1.043 on 1 000 users (1.095 on the first 200).
* Verdict: goal not met. MA-RDPG's multiplier no longer winds up and its actors no longer wander off the
  critic's data (tuning seeds: +1.9 % shipped vs +0.2 %), but what it learns is the incumbent's comment
  slack on its training world, and where that world has none (seed 2) it pays for a correction the
  evaluation world did not need. None of TSCAC, the MA cascade and MA-RDPG reaches +3 % with every
  constraint met; their between-seed spread (±5 to ±9 points) is training and world variance, which
  more evaluation users do not remove.

Tenth round, probe (2026-12-05, issue 18): does training in another world cause the spread? MA-RDPG as
shipped, tuning seeds only, 40 iterations × 64 rows, ground truth on 1 000 users of world 3000 + s, lift vs
the recorded incumbent constant on the same users (paired); "comment" per decision in the evaluation world.
The catalog (and the creators) come from the simulator's constructor seed and the users from the reset
seed, so the two separate: `BatchedSimPool(world_seed=3000 + s)` reset with s is the evaluation world's
catalog with other users. Commands (one process, nice 5, host load 3–4.5, ~35–100 s per seed):
`python -m benchmarks.rank_probe --train-world own|eval --seeds 100,101,102,103` and the same with
`--seeds 104,105,106,107,108,109,110,111`; `... --train-world eval --start local --seeds 100,101,102,103`.

* (a) train in world s (as today): +1.4 / +1.8 / +2.6 / +1.8 / +6.5 / +3.0 / +1.4 / +3.2 / +1.8 / +1.4 /
  +5.9 / +3.5 % (seeds 100–111; mean +2.9 % ±1.1, sd 1.7). Comment 1.120 / 1.042 / 1.035 / 1.226 / 1.072 /
  1.015 / 1.061 / 1.087 / 1.151 / 1.129 / 1.078 / 0.989: mean 1.084, below 1.1 on 8 of 12 seeds. The
  incumbent's comment rate is 1.10–1.21 in every training world but 1.061–1.261 in the evaluation worlds
  (below 1.1 in 3101 and 3102, 1.099 in 3111): the learner spends slack its training world has and the
  evaluation world may not.
* (b) train in the evaluation world's catalog (other users): +1.8 / +1.9 / −11.6 / +3.0 / +4.2 / −0.1 /
  −10.6 / +4.2 / +4.5 / +1.7 / +5.2 / +1.5 % (mean +0.5 % ±3.6, sd 5.6). Comment 1.092 / 1.050 / 1.127 /
  1.202 / 1.119 / 1.134 / 1.189 / 1.047 / 1.100 / 1.127 / 1.066 / 1.067: mean 1.110, below 1.1 on 5 of 12.
  (b) − (a), paired: −2.4 points ±3.4. The two large losses are seeds 102 and 106, where the incumbent's
  comment rate in the world the learner trains in is 1.061 and 1.117, under the multiplier's aim
  (1.1 × 1.03 = 1.133): the learner raises comments (+6.3 %, +6.4 %) and pays 11 % of watch time — the
  ninth round's seed-2 case, now in the world where it is judged and so not a mismatch. Seeds 100–103 of
  (a) reproduce the ninth round exactly.
* Reading: training in another world does not cause the spread; training in the judged world widens it
  (sd 1.7 → 5.6 points). The spread follows the evaluation world's comment slack at the incumbent: where
  the incumbent sits near or under the threshold, a constrained learner that sees that world must buy
  comments back, and one that does not see it ships a violation instead (a's steadier lifts come with a
  mean comment rate below the threshold). The lift against a constant that itself violates (worlds 3101,
  3102) is not a like-for-like comparison in either setting.
* (b) is only fair with the constant searched in the same world. Cost: rank_quality's `fixed_fusion_search`
  (grid + 2 sweeps, ~65–80 evaluations of 200 users × 3 days, ~0.3–0.5 s each here) is ~30–45 s per world at
  200 search users (~5× that at 1 000). Run on 100–103 (`--start local`: searched in world 3000 + s on 200
  users drawn from seed 20 000 + s, neither training nor evaluation users; the learner warm-starts at it and
  is compared with it): the local constants against the incumbent on the evaluation users −8.0 / −0.3 /
  −5.4 / +9.3 % (comment 1.189 / 1.078 / 1.116 / 1.105) — 200 search users pick noisily; the learner against
  its local constant +5.9 / +2.9 / +3.9 / −0.0 % (mean +3.2 % ±3.9, sd 2.5), comment 1.157 / 1.051 / 1.076 /
  1.105 (two below 1.1), against the incumbent −2.5 / +2.7 / −1.8 / +9.3 %.
* Not changed: no learner, no config, no default of the reported benchmark; the reported seeds were not run.
  A like-for-like score would judge each lift against a constant that is feasible on that world's
  evaluation users, and search it on more than 200 users.

Eleventh round (2026-12-05, issue 18): one world per seed — the benchmark's layout changed (the lead's decision),
the table rerun once.

* What changed (`--worlds one`, the default; ours; module docstring): a team has one catalog, so per reported
  seed s, with world W = 1000 + s (the judged world before), the fixed-fusion constant is searched IN W on
  1 000 users of user seed 20 000 + s (same grid + 2 sweeps rule; cached per world, user seed, users and days
  under runs/rank_quality_search/); every learner warm-starts at that constant and trains on W's catalog with
  the users of seed s (`sim.world_seed`; BC's behaviour logs too); everything is judged on W's own users, as
  before. `seed_plan` holds the layout; tests/unit/test_rank_quality_plan.py checks the three user seeds are
  disjoint for s < 1 000 (and refuses others), that `run_one` trains and judges in W, and the cache.
  `--worlds split` keeps the old layout (train in world s, judge 1000 + s, one constant on 200 users of world
  10 000) to reproduce the tenth round's table (`--worlds split --algos bc,fixed_fusion`, written to a temp
  folder, gave the tenth round's per-seed watch time and comment rates exactly, e.g. fixed fusion 3 608.79 /
  3 577.88 / 3 617.42 / 3 422.86 / 3 471.80); `--markdown-only` rewrites this .md from the .json (this file
  was rewritten so, adding these notes; the table is byte-identical to the run's). benchmarks/rank_probe.py
  defaults to the same layout on tuning worlds 3000 + s (`--train-world eval --start local --search-users
  1000`); the tenth round's commands now need `--start incumbent --search-users 200`.
* MA-RDPG's margin in the new layout (tuning seeds 100–105 only, worlds 3100–3105; rule fixed before looking:
  keep 0.03 unless 0.01 or 0.0 has a higher mean lift with the mean comment rate ≥ 1.1 on the judged users;
  `python -m benchmarks.rank_probe '{"margin": M}' --seeds 100,101,102,103,104,105`, 07:36–08:04 UTC, 29 min;
  lift of what ships vs the local constant on the same 1 000 judged users):
  - margin 0.03: +1.7 / +1.2 / +5.8 / +0.0 / +0.1 / −1.6 % (mean +1.22 % ±2.66), comment 1.109 / 1.034 /
    1.069 / 1.120 / 1.037 / 1.099 (mean 1.078; below 1.1 on 4 of 6);
  - margin 0.01: +1.8 / +1.4 / −0.0 / −0.0 / −1.2 / −7.7 % (mean −0.95 % ±3.65), comment mean 1.082;
  - margin 0.0: +1.8 / +1.9 / −0.0 / +0.1 / −0.0 / +0.2 % (mean +0.66 % ±0.97), comment mean 1.085.
  Kept 0.03: neither alternative has a higher mean lift, and no margin reaches a mean comment rate of 1.1.
  The worry that 0.03 forces the learner to buy comments back did not show: with every margin the shipped
  policy sits at or below the constant's comment rate (the tracker reads 64 noisy training users per batch).
  The local constants (1 000 search users) on the judged users: comment 1.166 / 1.062 / 1.102 / 1.120 /
  1.098 / 1.104 (two below 1.1), watch time vs the split layout's constant −0.8 / +1.6 / −5.9 / +8.9 / +10.1 /
  +2.9 %.
* Why a constant searched in its own world still violates on its judged users (`python -m
  benchmarks.rank_probe --constant-noise --seeds 100,101,102,103,104,105`, 6 constants × 5 fresh samples of
  1 000 users of the same world): the search keeps the best point with comment ≥ 1.1 on its search users, so it
  lands on the threshold (1.100–1.112 there), and the per-decision comment rate of one constant moves by sd
  0.021 (0.010–0.035 per world) between samples of 1 000 users of one world. There is no systematic winner's
  curse (search minus fresh mean −0.006; per world −0.039 / −0.008 / +0.007 / +0.009 / −0.001 / −0.005), so a
  constant on the threshold meets it on a fresh sample about half the time, and so do learners that stay near
  it. Averaged over 5 worlds the sampling sd is still ~0.01, a whole 1 % of the threshold.
* The table above (the reported command run once with the new defaults: `PYTHONPATH=$PWD OMP_NUM_THREADS=1
  nice -n 5 .venv/bin/python -m benchmarks.rank_quality --jobs 1`, at ce70a7b, 1 062 s including 431 s of
  constant searches, host load 2–3):
  - Per-seed constants (the same block at every stage): (0.25, 0.3, 0.2, 0.5, 0.7, 0.7), (0.25, 0.3, 0.3, 0.5,
    0.3, 0.3), (0.5, 0.3, 0.7, 0.3, 0.7, 0.7), (0.25, 0.3, 0.3, 0, 0.3, 0.3), (0.5, 0.3, 0.7, 0.2, 0.7, 0.7);
    comment on their search users 1.103 / 1.106 / 1.113 / 1.103 / 1.100, on the judged users 1.053 / 1.135 /
    1.097 / 1.070 / 1.081 (mean 1.087: fixed fusion itself misses the comment threshold, on 4 of 5 worlds).
  - Against the best of BC and fixed fusion (fixed fusion on every seed; BC −12.3 % [−14.4, −10.3], comment
    0.549), paired per seed, comment rate on the mean over seeds:
    TSCAC +0.2 % [−5.5, +6.0], comment 1.086 (NO; per seed +6.6 / +3.0 / −5.1 / −2.5 / −1.0 %);
    MA cascade +2.3 % [+0.1, +4.5], 1.067 (NO; +2.6 / +4.7 / −0.2 / +2.3 / +2.1 %);
    MA-RDPG +0.4 % [−0.3, +1.2], 1.081 (NO; +0.0 / +1.4 / +0.2 / −0.0 / +0.4 % — on seed 0 it scores the
    constant's numbers exactly, so it shipped an iterate from before its actors moved; elsewhere within 1.4 %);
    MA-RDPG without the message +1.2 % [−0.1, +2.4], 1.074 (NO);
    main-only +3.8 % [+0.4, +7.3], comment 0.842 — violates, as the goal wants;
    RCPO −11.0 % [−21.6, −0.5], 1.155 — the only feasible learner, and the furthest below.
    Per seed, the judged comment rate is ≥ 1.1 for TSCAC on 2 of 5 worlds, MA-RDPG 1, MA cascade 0, the
    constant 1, RCPO 4.
  - MA-RDPG vs the MA cascade, paired: −1.8 % [−3.5, −0.1] (per seed −2.5 / −3.1 / +0.4 / −2.3 / −1.6 %);
    vs its no-message ablation −0.7 % [−2.1, +0.6].
  - Against the tenth round's table (split layout, constant searched on 200 users of world 10 000): TSCAC
    −0.1 → +0.2 %, MA cascade +0.5 → +2.3 %, MA-RDPG −1.7 → +0.4 %, all three feasible → all three not;
    the between-seed intervals narrowed (MA-RDPG ±9.0 → ±0.8 points, the MA cascade ±6.4 → ±2.2): no learner
    meets another world's comment slack any more (the ninth round's seed 2: −14.6 %), and MA-RDPG mostly
    ships (nearly) the constant.
* Verdict: goal not met. Judged like for like, the learners gain little over the constant their world's team
  would run (MA cascade +2.3 %, the most, at 1.8 % fewer comments), none reaches +3 %, and none of TSCAC, the
  MA cascade and MA-RDPG meets the comment threshold on the mean — nor does the constant: a point searched onto
  the threshold on 1 000 users meets it on another 1 000 about half the time (sd 0.021). main-only violates
  (that part holds). The message is worth nothing measurable here (−0.7 % vs no message; −1.8 % vs the cascade).
  A next step is the benchmark's, not a learner's: either search the constant (and aim the learners) with a
  safety margin sized to that sampling noise (e.g. comment ≥ 1.1 + 2 × 0.021 on the search users), or judge
  feasibility with an interval rather than a point estimate; either changes the reference, so it needs its own
  reported run. Not changed: no learner, config or simulator; the reported seeds were run once.

Twelfth round (2026-12-05, issue 18): the fixed-fusion search keeps a safety margin (the lead's decision), the
table rerun once.

* What changed (ours; `fixed_fusion_search`'s docstring): in the one-world layout the search counts a point as
  feasible only if every constraint clears threshold × (1 + `--search-margin`) on its 1 000 search users,
  default 0.03 — the relative margin MA-RDPG's multiplier aims at (configs/rank/ma_rdpg.yaml); on comment
  that is 0.033, ≈ 1.6 sd of one 1 000-user sample's noise (0.021, eleventh round) and ≈ 1.1 sd of the
  difference between the search users' value and a fresh sample's. Why: a team ships a rule only with room for
  sampling noise; without it the eleventh round's reference constant missed the comment threshold on its own
  judged users in 4 of 5 worlds (mean 1.087), so the goal's comparator ("the best simple rule", which must meet
  every constraint) was not a valid one. `FixedFusionConfig.margin` (0 = the old rule). The margin is part of
  the search cache's file name (margin 0 keeps the old names, so the cached margin-0 searches stay valid); a
  margin search reuses the same users' margin-0 evaluations (the evaluation is deterministic: one point
  re-evaluated on world 3100 gave comment 1.109243 and 3 281.41 s/user-day, identical to the cached row).
  `--worlds split` keeps margin 0 (the tenth round's table); `--worlds one --search-margin 0` gives the
  eleventh round's, whose result files are kept as benchmarks/results/rank_quality_one_world_margin0.{json,md}.
  `benchmarks.rank_probe --search-margin` (default 0.03). Tests (tests/unit/test_rank_quality_plan.py): in a
  stand-in world where comment weight 0.5 gives comment 1.105 and 0.7 gives 1.147 (less watch time), margin 0
  keeps 0.5 and margin 0.03 picks 0.7 (both tests fail when the margin is ignored — checked); reusing the
  margin-0 table gives the same pick with fewer evaluations; the cache key; a bad margin is refused naming the
  field. The table's judging rule is unchanged (point value on the judged users, mean over seeds). No learner
  config changed: there was no time to retune them on tuning seeds for the new constant (MA-RDPG's multiplier
  still aims 3 % inside every threshold, the constant's own search margin now).
* Check before the run (tuning worlds 3100–3105 only; `python -m benchmarks.rank_probe --constant-noise --seeds
  100,101,102,103,104,105`, margin 0.03 by default, ~9 min; the same with `--search-margin 0` for the before;
  5 fresh samples of 1 000 users per world, user seeds 40 000 + 100·k + s):
  - margin 0.03: comment on the search users 1.135 / 1.135 / 1.135 / 1.142 / 1.141 / 1.136; fresh-sample means
    1.168 / 1.145 / 1.129 / 1.133 / 1.143 / 1.136 (sd between samples 0.022); **29 of 30 fresh samples meet
    1.1** (the one miss 1.091, world 3105); on the judged users 1.194 / 1.097 / 1.131 / 1.149 / 1.131 / 1.135
    (5 of 6). The price, on the judged users against the margin-0 constant: watch time −7.4 / −3.5 / −2.2 /
    −1.2 / −2.5 / −2.8 % (mean −3.3 %).
  - margin 0 (the eleventh round's constants): 1.100–1.112 on the search users; fresh means 1.140 / 1.109 /
    1.098 / 1.104 / 1.107 / 1.112; 19 of 30 fresh samples meet 1.1; judged users 4 of 6.
* The table above (the reported command run once: `PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python
  -m benchmarks.rank_quality --jobs 1`, at d3593b7, 08:39–08:54 UTC, 883 s including 296 s of constant
  searches):
  - Per-seed constants: (0.25, 0.2, 0, 1, 1, 1), (0.25, 0.1, 0.1, 1, 0.5, 0.5), (0.25, 0.1, 0.2, 0.3, 0.5,
    0.5), (0.5, 0.5, 0.7, 0.3, 0.7, 0.7), (0.25, 0.1, 0.3, 0.2, 0.5, 0.5); comment on their search users
    1.138 / 1.136 / 1.134 / 1.136 / 1.142, on the judged users 1.091 / 1.165 / 1.123 / 1.097 / 1.125 (mean
    1.120: the constant now meets every constraint on the mean, as the goal judges; singly on 3 of 5 worlds —
    the judged users of worlds 1000 and 1003 comment less than their search users, by 0.047 and 0.039 now and
    by 0.050 and 0.033 for the eleventh round's constants). Its price: −2.6 % [−3.7, −1.5] watch time against
    the eleventh round's constant on the same judged users (per seed −3.6 / −2.2 / −2.6 / −1.3 / −3.2 %).
  - Eleventh round (margin 0) → twelfth (margin 0.03), paired lift over the best of BC and fixed fusion (fixed
    fusion on every seed in both), and the mean comment rate on the judged users:

    | algorithm | lift, margin 0 | lift, margin 0.03 | comment, margin 0 | comment, margin 0.03 | all constraints |
    |---|---|---|---|---|---|
    | tscac | +0.2 % [−5.5, +6.0] | +1.7 % [+0.7, +2.7] | 1.086 | 1.091 | NO → NO |
    | ma_cascade | +2.3 % [+0.1, +4.5] | +0.2 % [−8.2, +8.5] | 1.067 | 1.115 | NO → yes |
    | ma_rdpg | +0.4 % [−0.3, +1.2] | −0.2 % [−3.6, +3.2] | 1.081 | 1.067 | NO → NO |
    | ma_rdpg_no_message | +1.2 % [−0.1, +2.4] | +0.8 % [−1.6, +3.3] | 1.074 | 1.085 | NO → NO |
    | main_only | +3.8 % [+0.4, +7.3] | +3.5 % [−4.8, +11.8] | 0.842 | 0.875 | NO → NO |
    | rcpo | −11.0 % [−21.6, −0.5] | −0.7 % [−12.1, +10.8] | 1.155 | 1.112 | yes → yes |
    | bc | −12.3 % [−14.4, −10.3] | −10.0 % [−12.2, −7.8] | 0.549 | 0.549 | NO → NO |
    | fixed_fusion | 0 | 0 | 1.087 | 1.120 | NO → yes |

  - Per seed (lift over the seed's constant, comment in brackets; the per-seed table above): TSCAC +2.8 (1.075)
    / +1.9 (1.124) / +2.0 (1.051) / +1.0 (1.087) / +0.8 % (1.118) — positive on every seed, below 1.1 on 3;
    MA cascade +8.7 (1.003) / −1.9 (1.196) / −9.4 (1.217) / +3.8 (1.039) / −0.4 % (1.119) — its lift
    follows how many comments it gives up or buys; MA-RDPG +4.2 (1.024) / −2.2 (1.121) / −1.0 (1.064) / +0.3
    (1.090) / −2.5 % (1.038); main-only −6.8 / +7.9 / +0.0 / +7.7 / +8.5 %, comment 0.63–0.97 on every seed;
    RCPO +10.2 (0.994) / −9.1 / −10.9 / +0.5 / +6.2 % (0.996). Judged comment ≥ 1.1 per seed: the constant 3 of
    5 (1 before), TSCAC 2 (2), MA cascade 3 (0), MA-RDPG 1 (1), RCPO 3 (4).
  - MA-RDPG vs the MA cascade, paired: −0.1 % [−6.9, +6.6] (per seed −4.1 / −0.3 / +9.2 / −3.3 / −2.1 %); vs
    its no-message ablation −1.1 % [−2.4, +0.3].
  - On the same judged users against the eleventh round's (margin-0) constant: TSCAC −0.9 % [−2.0, +0.1], MA
    cascade −2.4 % [−10.4, +5.6], MA-RDPG −2.8 % [−5.9, +0.3]: warm-started at the safer constant, no learner
    won back the 2.6 % the margin costs.
* Verdict: goal not met. The reference is now a valid one (fixed fusion meets every constraint on the mean of
  the judged users, comment 1.120), and against it no goal learner has both: TSCAC has the steadiest lift
  (+1.7 % [+0.7, +2.7], positive on all 5 seeds) but below +3 % and with comment 1.091 on the mean (it spends
  the constant's margin); the MA cascade is feasible on the mean (1.115) with no lift (+0.2 %, per seed −9.4
  to +8.7 %); MA-RDPG neither (−0.2 %, comment 1.067). main-only violates (comment 0.875; that part holds).
  The message is worth nothing measurable (−1.1 % vs no message, −0.1 % vs the cascade, both intervals across
  0). The margin made the reference honest and cost it 2.6 % watch time; the learners' comment rates did not
  follow it up (TSCAC 1.086 → 1.091, MA-RDPG 1.081 → 1.067): they go where their own constraint handling
  takes them on 64 training users per batch, not to the constant's margin. Making them feasible on fresh
  users would need their own aim retuned on tuning seeds (not done here: no learner config changed).
  The reported seeds were run once.

Probe for the next session (twelfth round; issue 18, tuning worlds 3100–3105 only, no default changed). Question:
would aiming 3 % inside every threshold, as MA-RDPG and the searched constant do, make TSCAC and the MA cascade
feasible on the judged users, and at what lift? TSCAC's aim is `TSCACConfig.margin` (default 0: its PID multiplier
drives Δ_i = s_i (C_i − Ĵ_i)/|C_i| + margin to zero on the training batch, i.e. aims at the threshold itself); the
MA cascade inherits the field but ships `lambda_control: fixed` (λ 0.02), which reads no threshold, so its only
cheap 3 % aim is the PID with a margin (`{"lambda_control": "pid", "margin": 0.03}`: TSCAC's constraint handling
on the cascade's actors — a change of method, not a knob of the shipped one). Commands (the probe's defaults:
one-world layout, constant searched with margin 0.03 on 1 000 users of seed 20 000 + s, judged on world 3000 + s's
own 1 000 users, 40 iterations; `PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m
benchmarks.rank_probe --algo A 'OVERRIDES' --seeds 100,101,102,103,104,105`, 2026-12-05 09:35–09:55 UTC):
lift over the seed's constant on the same users, comment in brackets (the constants' own comment 1.194 / 1.097 /
1.131 / 1.149 / 1.131 / 1.135 — world 3101's constant misses 1.1 on its judged users); mean ± 95 % half-width (t, 5 df).
* TSCAC as shipped (`{}`): +0.3 (1.193) / +0.8 (1.099) / +4.4 (1.090) / +3.0 (1.082) / +1.9 (1.123) / +3.9 %
  (1.074); +2.38 % ± 1.74, comment mean 1.110, ≥ 1.1 on 2 of 6 — on these worlds the shipped aim passes the
  mean only narrowly and misses on 4 seeds (reported run: mean 1.091, 3 of 5 below).
* TSCAC `{"margin": 0.03}`: +1.3 (1.182) / +2.6 (1.071) / +0.7 (1.114) / −3.8 (1.192) / +1.4 (1.106) / +0.2 %
  (1.127); +0.39 % ± 2.34, comment mean 1.132, ≥ 1.1 on 5 of 6 (the miss is world 3101, where the constant
  itself gives 1.097). Against the shipped aim, per seed −2.0 points [−5.4, +1.5]. Seed 102 tracked no feasible
  iterate (kept −1 in the probe's line); seed 103 overshot (comment +3.7 % over the constant, lift −3.8 %).
* MA cascade as shipped (`{}`, fixed λ 0.02): +8.4 (1.159) / −1.3 (1.106) / +3.3 (1.103) / +3.6 (1.083) / −2.3
  (1.143) / −6.4 % (1.194); +0.88 % ± 5.50, comment mean 1.131, ≥ 1.1 on 5 of 6: feasible on the mean here
  already, with the same wide spread as in the reported run (its lift follows how many comments it gives up).
* MA cascade `{"lambda_control": "pid", "margin": 0.03}`: +0.6 (1.183) / +0.6 (1.085) / +3.4 (1.107) / +2.5
  (1.109) / −1.0 (1.135) / +2.8 % (1.105); +1.49 % ± 1.75, comment mean 1.121, ≥ 1.1 on 5 of 6 (the miss again
  world 3101): the PID's aim narrows the spread (sd 1.7 points against 5.2) at the same feasibility; against the
  shipped fixed λ, per seed +0.6 points [−5.1, +6.3].
* Reading: the 3 % aim does what it is for — TSCAC's comment mean moves from 1.110 to 1.132 and 5 of 6 worlds
  meet 1.1 (2 before) — and costs what the margin buys: its steady lift (+2.4 %, positive on every seed, as
  reported) falls to +0.4 % with an interval across 0. With a reference constant that already keeps a 3 %
  margin, a learner that also keeps one has little room left on comment to trade for watch time; neither TSCAC
  setting gives both ≥ +3 % and feasibility on these tuning worlds. For the MA cascade the fixed λ is already
  feasible on the mean here (1.131); the PID with a 3 % aim keeps that (1.121) and steadies the lift (+1.5 %
  ± 1.7, not different from the fixed λ's +0.9 % ± 5.5) — the one candidate for a tuning-seed confirmation
  next session. A probe, not a decision: one run per seed, 1 000 judged users (comment noise sd ≈ 0.021 per
  sample), no config changed; logs in runs/ of worktree rank3.

Thirteenth round: training budget (2026-12-05, issue 18; tuning worlds 3100–3105 only, no default changed).
Question: are the goal learners data-starved at 40 iterations × 64 envs × 32 steps — does ×3 iterations (120),
×3 rows (192 envs) or both carry one to ≥ +3 % with every constraint met? Adoption rule, written before the runs
(commit c0c6197): a setting is adopted for a learner only if on seeds 100–105 its mean lift ≥ +3.0 % AND ≥ 5 of 6
seeds meet every constraint. Commands: `PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m
benchmarks.rank_probe --algo A 'OVERRIDES' --seeds 100,101,102,103,104,105 [--iterations 120] [--envs 192]`
(`--envs` new this round; the probe's defaults as in the twelfth round's probe: one-world layout, constant
searched with margin 0.03, judged on world 3000 + s's own 1 000 users), 10:24–11:52 UTC, one probe at a time
on the shared 2-core host (another helper's job on the other core). Overrides: MA cascade `{"lambda_control":
"pid", "margin": 0.03}`, MA-RDPG `{}` (its shipped PID with a 3 % aim; `actor_starts` stays 320 requests),
TSCAC `{"margin": 0.03}`. Lift over the seed's constant on the same users, mean ± 95 % half-width (t, 5 df);
"feasible": every constraint met on the judged users (only comment was ever missed); wall time of the whole
6-seed probe with the constants cached (the first probe also ran the six constant searches, ~110 s each).

| learner | iterations × envs | lift | sd | comment mean | feasible | wall |
|---|---|---|---|---|---|---|
| MA cascade PID 3 % | 40 × 64 | +1.49 % ± 1.75 | 1.67 | 1.121 | 5 of 6 | 789 s (a) |
| | 120 × 64 | +1.77 % ± 2.91 | 2.78 | 1.122 | 4 of 6 | 561 s |
| | 40 × 192 | +0.41 % ± 5.95 | 5.67 | 1.117 | 3 of 6 | 514 s |
| | 40 × 192, minibatch 3 072 (c) | +3.81 % ± 4.26 | 4.06 | 1.105 | 3 of 6 | 354 s |
| MA-RDPG (shipped) | 40 × 64 | +3.55 % ± 2.42 | 2.31 | 1.090 | 2 of 6 | 208 s |
| | 120 × 64 | +2.75 % ± 2.19 | 2.09 | 1.079 | 2 of 6 | 514 s |
| | 40 × 192 | +2.89 % ± 2.97 | 2.83 | 1.109 | 3 of 6 | 213 s |
| | 120 × 192 | +3.32 % ± 2.73 | 2.60 | 1.106 | 4 of 6 | 577 s |
| TSCAC margin 0.03 | 40 × 64 | +0.39 % ± 2.34 | 2.23 | 1.132 | 5 of 6 | 93 s (b) |
| | 120 × 64 | +1.77 % ± 2.19 | 2.09 | 1.113 | 3 of 6 | 224 s |
| | 40 × 192 | −0.44 % ± 5.86 | 5.58 | 1.147 | 5 of 6 | 233 s |
| | 120 × 192 | −0.45 % ± 5.86 | 5.58 | 1.150 | 5 of 6 | 631 s |
| | 40 × 192, minibatch 3 072 (c) | +3.02 % ± 4.98 | 4.75 | 1.118 | 3 of 6 | 163 s |

(a) the twelfth round's probe rerun, identical to the digit on every seed; its 789 s include the six constant
searches (~110 s each, cached since), training took ~30 s per seed. (b) the twelfth round's probe rerun, identical.
MA-RDPG's 40 × 64 line is new (the twelfth round's probe had none). (c) run last (11:43–11:52 UTC), after (3) below:
`{..., "minibatch_size": 3072}` keeps the 8 gradient steps per batch of 64 envs on 3× the rows.

* Per seed (lift, comment; * = misses 1.1): MA cascade 120 × 64 +0.6 (1.183) / +0.6 (1.085*) / +6.8 (1.077*) /
  +2.5 (1.109) / −1.3 (1.146) / +1.3 % (1.134); 40 × 192 −7.0 (1.214) / +5.0 (1.010*) / +6.1 (1.082*) / +2.7
  (1.077*) / +2.0 (1.114) / −6.4 % (1.204). MA-RDPG 40 × 64 +6.5 (1.154) / +4.0 (1.041*) / +5.7 (1.089*) / +0.4
  (1.121) / +2.3 (1.060*) / +2.4 % (1.078*); 120 × 192 +6.5 (1.154) / +2.8 (1.065*) / +6.5 (1.085*) / +0.4 (1.114)
  / +1.5 (1.112) / +2.2 % (1.103). TSCAC 120 × 64 −2.0 (1.180) / +2.5 (1.096*) / +4.4 (1.099*) / +2.4 (1.088*) /
  +1.4 (1.106) / +1.9 % (1.110); 40 × 192 +7.8 (1.136) / +0.8 (1.099*) / +0.6 (1.120) / −8.7 (1.232) / −4.3
  (1.172) / +1.2 % (1.123); 120 × 192 the same lifts (shipped iterates 33, 12, 72, 12, 11, 19: five of six
  from the first 40 iterations), comment 1.137 instead of 1.120 on seed 102. Minibatch 3 072 at 192 envs: MA
  cascade +9.3 (1.147) / −0.3 (1.096*) / +7.1 (1.071*) / +0.1 (1.153) / +1.1 (1.133) / +5.6 % (1.029*); TSCAC
  +10.7 (1.144) / −1.0 (1.093*) / +5.6 (1.093*) / −2.1 (1.189) / +0.9 (1.115) / +4.0 % (1.076*).
* Decision by the rule: nothing adopted — no setting reaches +3.0 % with 5 of 6 seeds feasible. Four pass the lift
  half and fail feasibility: the MA cascade and TSCAC with 192 envs at minibatch 3 072 (+3.81 %, +3.02 %; 3 of 6
  each, their lift bought with comment: on every seed above +5 % their comment rate is 3–9 % below the constant's)
  and MA-RDPG's: 40 × 64 has the lift (+3.55 %) but misses comment on 4 seeds (mean 1.090); 120 × 192 keeps +3.32 %
  and is feasible on 4 of 6 (mean 1.106; the misses 1.065 and 1.085). MA-RDPG is the only learner whose lift stays
  above +2.7 % at every budget; 192 envs move its comment mean up (1.090 → 1.109 / 1.106), 120 iterations alone down
  (1.079); none past the rule. No config changed, so no reported run.
* Reading: more iterations do little, and more rows help only with the gradient steps per batch held fixed — and
  then at the cost of comment. (1) What ships is the best feasible iterate by the training batch's windowed watch
  time (`BestFeasibleTracker`), and that batch value swings with the users in the batch (MA cascade seed 100:
  101–154 s per request over 120 iterations while λ_comment stayed 0.01–0.15 until the last five) more than with the
  policy: at 120 iterations the MA cascade shipped the very iterate it shipped at 40 on seeds 100, 101 and 103
  (iterations 21, 11, 23; identical lifts), so tripling the iterations changed the table on 3 seeds only, where a
  later noisy batch scored higher. (2) The last iterates, judged the same way (the probe now prints them for TSCAC
  and the MA cascade too), are mostly worse than what ships, not better: TSCAC 120 × 64 last iterate −23.5 to +0.7 %
  (5 of 6 below its shipped iterate), MA-RDPG 40 × 64 −11.1 to +1.6 %, MA cascade 40 × 192 −8.5 to +3.7 % — the
  actors drift rather than converge with more updates. The one exception is TSCAC at 40 × 64: its last iterate
  averaged +2.70 % ± 3.55 (+9.1 / +0.4 / +0.7 / +1.9 / +0.4 / +3.7 %; comment ≥ 1.1 on 5 of 6, the miss 1.055)
  against +0.39 % for what ships (higher on 3 seeds, equal on seed 102, which tracked no feasible iterate, lower on
  2) — and at 120 iterations the same learner's last iterate falls to −23.5…+0.7 %. So where the tracker keeps an
  early iterate it is mostly rescuing the run from a drift, not hiding progress; which iterate to ship (the
  tracker's window, `best_feasible_recency`/`_start`) is a separate question from the budget and was not probed
  here. (3) ×3 envs is not "the same updates on more data" for TSCAC and the MA cascade: the Trainer takes epochs ×
  rows / minibatch_size gradient steps per batch (4 × 6 144 / 1 024 = 24 at 192 envs against 8 at 64), so each batch
  moves the actors three times as far, and both learners' spread tripled (sd 5.6–5.7 points against 1.7–2.3). A
  like-for-like "more data" probe scales minibatch_size with n_envs (not run first; run last, (c): it raised both
  learners' lifts, +1.49 → +3.81 % and +0.39 → +3.02 %, and their last iterates (TSCAC +1.0 to +7.5 %, mean +3.9 %,
  where they were negative on 5 of 6 seeds at 120 × 64 and at 120 × 192, on 3 at 40 × 192 with minibatch 1 024),
  while feasibility fell 5 → 3 of 6 — more data lets them move, and the training batch's 3 % aim does not keep the
  judged comment rate above 1.1 as they do). MA-RDPG's updates are per request, so 192 envs only fills its replay
  faster (100 000 one-row requests: 40 × 64 × 32 = 81 920 rows fit, 192 envs or 120 iterations drop the oldest).
* Not run: 120 × 192 for the MA cascade (~30 min on this host); 120 × 192 with minibatch 3 072; more seeds. A probe,
  not a decision: one run per seed, 1 000 judged users (comment noise sd ≈ 0.021 per sample); ten bigger budgets
  were tried, so one that had passed the rule by a small margin would have needed a confirmation on fresh tuning
  seeds before a reported run. Logs in runs/probe/ of worktree rank.
* MA-RDPG's comment aim (the lead, 11:40–11:47 UTC, rule written before the runs: adopt a margin only with mean
  lift ≥ +3.0 % and ≥ 5 of 6 seeds feasible). `python -m benchmarks.rank_probe --algo ma_rdpg '{"margin": M}'
  --seeds 100,...,105` (40 × 64): margin 0.05 +2.10 % ± 2.41 (comment 1.157 / 1.068* / 1.131 / 1.114 / 1.096* /
  1.102), margin 0.07 +1.29 % ± 2.52 (1.158 / 1.097* / 1.131 / 1.114 / 1.131 / 1.098*); 4 of 6 feasible each,
  against the shipped 0.03's +3.55 %, 2 of 6. Nothing adopted. A higher aim on the training batch does not lift
  the judged comment rate: on every seed where the learner moved, what ships lands 2.7–3.3 % below the
  constant's comment rate on the judged users whatever the aim (3, 5 or 7 %), and where it did not move it ships
  an iterate near the start (kept 3 or 8) — the best-feasible tracker picks iterates by one noisy 64-env batch,
  so a batch that looked feasible and rich is over-read on both counts (a winner's curse). The next fix to try is
  choosing what ships on held-out users of the training world (several candidate iterates, 1 000 fresh users
  each), not a larger aim or budget.

Fourteenth round: MA-RDPG ships on held-out users (2026-12-05, issue 18; tuning seeds 100–105 only, off by
default, no config changed). `MARDPGConfig.holdout_users` N (ours): at the end of training the candidates are
judged on N fresh users of the training world (user seed 50 000 + s, `HOLDOUT_USER_SEED`; 3 days, common random
numbers) and the richest meeting every constraint with `margin` (3 %) ships, else the one closest to feasible.
Candidates: the tracker's last `holdout_candidates` (4) kept iterates, or with `holdout_spread` 4 snapshots
spread over the run (iterations 9, 19, 29, 39) plus the tracker's pick. Rule, written before each run (commits
7d2cc7d, 0ad0a97): a CANDIDATE for confirmation if mean lift ≥ +3.0 % AND ≥ 5 of 6 seeds meet every constraint.
`python -m benchmarks.rank_probe --algo ma_rdpg '{"holdout_users": 1000[, "holdout_spread": true]}' --seeds
100,...,105` (40 × 64; baseline, the thirteenth round's: +3.55 % ± 2.42, 2 of 6).

| candidates | lift | per seed (comment; * misses 1.1) | feasible | wall |
|---|---|---|---|---|
| tracker's last 4 | +1.16 % ± 2.75 | +6.5 (1.154) / +0.1 (1.097*) / 0.0 (1.131) / +0.4 (1.121) / 0.0 (1.131) / −0.0 % (1.135) | 5 of 6 | 278 s |
| spread + tracker's | −5.42 % ± 6.22 | −0.0 (1.194) / −10.9 (1.145) / −10.5 (1.152) / −11.0 (1.259) / 0.0 (1.131) / −0.0 % (1.135) | 6 of 6 | 271 s |

* Decision by the rule: neither is a candidate (feasibility passes, lift fails). Training is unchanged by the
  option (seed 100's shipped iterate and lift are the baseline's to the digit).
* Reading: the held-out users confirm the winner's curse and say the learner has little to sell. Every iterate
  richer than the start reads 1.067–1.131 comment on the held-out users (below the 1.133 the margin asks) where
  the start reads 1.102–1.171; where the baseline shipped such iterates they missed 1.1 on the judged users on
  4 seeds (1.041–1.089). So the choice mostly falls back to the start (the constant: seeds 101, 102, 104, 105 of
  the first line, lift 0). The 3 % margin on held-out users is stricter than the constant itself: the constant,
  searched onto 1.1 × 1.03 on its search users, reads 1.102–1.127 on held-out users in 3 of 6 worlds (the
  search's own winner's curse). With spread snapshots that lets the late, comment-heavy iterates win (−11 %,
  comment 1.15–1.26) over the start on 3 seeds. The tracker's 4 latest
  records are near-copies (seed 100: iterations 18–23, watch time within 0.01 %): no real choice. Not run:
  margin 0 on held-out users; read off the first line's log, it would change only seed 105 (the tracker's pick,
  +2.4 %, 1.078*), about +1.6 %, 4 of 6. Logs: runs/probe/holdout1000*.log of worktree holdout.

Fifteenth round: can the learners' updates keep a GOOD state-aware start? (2026-12-05, issue 18; a diagnostic on
tuning seeds only, nothing ships, no config changed). `benchmarks/headroom_rank.py`'s rule on observed features
(table + `OBSERVED_TILT`) earns +5.2 % over its constant, so the headroom exists and the question is whether the
learners lose it. Both learners started AT that rule (ours, off by default): TSCAC's actor fitted to the rule's
actions in its training world (`training.rl.trainer.PolicyStart`; the fitted start plays +4.28 % vs the rule's
+4.25 %), MA-RDPG's stage actors as rule(o_k) + 0.1·tanh(f(o_k, h)) (`ma_rdpg.train(start_policy=...)`, each
stage's sociability column mapped onto pre-rank's scale; +3.77 % in the sequential view). Trained in world s
(100–102, 40 × 64), judged with common random numbers on 1 000 users × 3 days of worlds 2100–2102 against
headroom_rank's `REFERENCE_CONSTANT` (world 2102's constant itself misses comment: 1.025). Rule, written before
the runs (the probes' docstrings): "updates productive from a good start" if mean (d − b) ≥ 0 and d feasible on
≥ as many seeds as the rule b; else "net harmful". `python -m benchmarks.rank_rule_start_probe [--trade-curve
...]`, `python -m benchmarks.rank_residual_rdpg_probe ['{"actor_lr": 1e-4}']`; benchmarks/results/rank_rule_start.md.

| arm (lift over the constant; comment; * misses 1.1) | seeds 100 / 101 / 102 | mean ± 95 % | feasible |
|---|---|---|---|
| b rule, single view | +4.12 (1.213) / +4.62 (1.130) / +4.02 % (1.030*) | +4.25 % ± 0.80 | 2 of 3 |
| TSCAC at the constant (shipped config) | +6.88 (1.080*) / −3.37 (1.150) / +2.94 % (0.946*) | +2.15 % ± 12.85 | 1 of 3 |
| TSCAC at the rule (shipped config) | +10.36 (1.124) / +4.30 (1.088*) / +5.48 % (0.999*) | +6.72 % ± 7.98 | 1 of 3 |
| TSCAC at the rule, margin 0.03 | +3.03 (1.208) / +6.25 (1.070*) / +8.19 % (0.984*) | +5.83 % ± 6.47 | 1 of 3 |
| b rule, sequential view | +3.74 (1.216) / +3.51 (1.130) / +4.07 % (1.030*) | +3.77 % ± 0.70 | 2 of 3 |
| MA-RDPG at the constant (shipped) | 0.00 (1.208) / −1.95 (1.091*) / 0.00 % (1.025*) | −0.65 % ± 2.80 | 1 of 3 |
| MA-RDPG at the rule (shipped) | +3.83 (1.158) / +4.32 (1.080*) / +4.09 % (1.030*) | +4.08 % ± 0.61 | 1 of 3 |
| MA-RDPG at the rule, actor lr / 3 | +3.74 (1.216) / +5.23 (1.091*) / +4.96 % (1.008*) | +4.64 % ± 1.97 | 1 of 3 |

* Decision by the rule: "net harmful" in all four learner runs — the watch-time half passes, feasibility fails
  (the learners lose comments where the rule kept them: 1 seed feasible against the rule's 2).
* Reading: the updates only TRADE along comments. Every TSCAC point lies below the rule's own trade curve (the
  rule with its comment weight × k on the same users, `--trade-curve`): at d's comment rate the plainer rule
  earns 0.5–3.6 points more (seed 101: d +4.30 % at 1.088, the rule at k 0.35 +7.86 %). MA-RDPG's shipped d
  bought 0.0–1.7 points with 2–5 % fewer comments; once its actors learn, the batch's watch time per request
  swings 97–187 s (rule ~125 s), the multiplier 0–0.9, and its LAST iterates lose 4–14 % (−11.2 / −3.8 /
  −13.9 %; from the constant −15 … −31 %): what ships is good only because the tracker kept an early iterate.
  So the bottleneck is the critic/actor updates, not the start or the ship choice: more rounds on starts, aims
  or ship rules cannot carry the learners to the goal. Both options stay as tested, off by default; export
  refuses MA-RDPG's rule start (the rule is numpy, not a graph).

Sixteenth round: TD3's stabilisers on MA-RDPG (2026-12-05, issue 18; tuning seeds 100–105 only, off by default, no
config changed). Fifteenth round: once the actors learn, MA-RDPG's training batch swings (watch 97–187 s per
request, comment 0.90–1.31, the PID multiplier 0–0.9) and the last iterates lose 4–31 % of watch time; what ships
is good only because the tracker keeps an early iterate — DDPG's actor climbing the critic's overestimation
errors (Fujimoto et al. 2018). Built (training/algorithms/ma_rdpg.py, ours on MA-RDPG, DEPARTURES from the paper's
DDPG, each off by default): `twin_critics` (clipped double Q, per signal: min of the two target critics for main
and ">=" signals, max for "<="; actors ascend critic 1's Q_mix; one shared set of message cells trained by both
critics' losses), `policy_delay` (actors and every target's Polyak once per that many critic steps),
`target_noise` / `target_noise_clip` (clipped Gaussian smoothing of the target actors' actions in y, as fractions
of the half-width of the box each actor squashes onto, `target_noise_box` "actor": the shipped deviation box ±0.1
→ σ 0.02, clip 0.05 in weight units; the smoothed action clipped to the full box, where the played actions lie).

DECISION RULE, written and committed BEFORE the first run:
`PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.rank_probe --algo ma_rdpg 'OVERRIDES'
--seeds 100,101,102,103,104,105` (rank_probe's standard layout: tuning worlds 3100–3105, 40 × 64; baseline, the
thirteenth round's shipped MA-RDPG: +3.55 % ± 2.42, feasible 2 of 6).
* Run 1: all three on at TD3's defaults — `{"twin_critics": true, "policy_delay": 2, "target_noise": 0.2,
  "target_noise_clip": 0.5}`.
* CANDIDATE for the reported run (the lead decides; this round changes no config) only if mean lift ≥ +3.0 % AND
  ≥ 5 of 6 seeds meet every constraint on the judged users. Otherwise "not a candidate".
* Secondary reading, not a decision: the LAST iterate's lift per seed (the probe's new LAST ITERATE line).
  "Stabilises" if the last iterate's mean lift is within 2 points of what ships (last − shipped ≥ −2 points),
  against the baseline's much larger losses (thirteenth round: last iterates −11.1 … +1.6 %); the baseline `{}`
  is rerun in this round for its per-seed last iterates (its shipped numbers must reproduce +3.55 %, 2 of 6).
  "Still drifts" otherwise.
* Run 2 only with a reason written (and committed) before it, one variant. Optional run 3: benchmarks/
  rank_residual_rdpg_probe.py with the three on (fifteenth round's d arm), judged by that probe's own rule.

Run 1 (13:16–13:20 UTC, 197 s after the six constant searches of 66–94 s each) and the baseline rerun (13:21–13:24,
197 s): run 1 +3.76 % ± 3.95 (8.7 / 3.2 / 7.8 / 1.0 / −0.9 / 2.7 %), comment mean 1.096, feasible 2 of 6 → NOT A
CANDIDATE. Last iterate −3.96 % ± 8.14 (7.7 / −0.4 / −9.7 / −10.9 / −11.0 / 0.6 %), last − shipped −7.71 points →
"still drifts". Baseline `{}` reproduced the thirteenth round to the digit (+3.55 % ± 2.42, 2 of 6); its last
iterate −7.47 % ± 5.34 (−4.5 / −9.7 / −10.7 / −11.1 / −10.5 / 1.6 %), last − shipped −11.03 points. The training
batch's watch time swings as much as before: after iteration 10, mean |Δ| between iterations 6.8 s per request
(baseline 6.6), range 56 s (57).

RUN 2, a diagnostic (reason and readings written and committed before it; not a candidate by construction, it
drops the constraint's pull): in run 1's trace the swings follow the comment multiplier. Seed 100, the one seed
whose multiplier stayed ≤ 0.31, had a flat trace (107 → 133 s, then 127–136; |Δ| 2.2) and a last iterate that
kept +7.7 % of the shipped +8.7 %; on the others watch time moves 40–90 s within a few iterations of ν jumping
0 ↔ 0.6–1.2 (seed 103: comment 0.89 at iteration 17 → ν 0.85 → watch 204 → 131 s). Is the drift TD3 leaves the
PID ↔ actor loop rather than the critic? Run 2: run 1's overrides plus `"max_multiplier": 1e-6` (ν ≡ 0: the
actors ascend the main value only), and the same with TD3 off (`{"max_multiplier": 1e-6}`, run 2b), same probe.
Readings: "the loop" if run 2's mean |Δ| (iterations 10–39) ≤ 3.4 s (half run 1's) AND its last − shipped ≥ −2
points; "the actor-critic itself" if its mean |Δ| ≥ 5 s; else mixed. Run 2b says whether TD3 is what holds a fixed
objective (2b swings ≥ 5 s where 2 does not) or the fixed objective alone does (both ≤ 3.4 s).

Run 2 (13:25–13:29 UTC, 203 s): shipped +2.51 % ± 4.13 (8.7 / 0.1 / 6.4 / 0.0 / 0.0 / 0.0 %: three seeds ship the
untouched start, kept iterations 3, 8, 10), feasible 4 of 6 (not a candidate, as built). Last iterate +2.97 % ± 3.90
(7.7 / 2.5 / 6.1 / −2.6 / 0.7 / 3.4 %, comment 0.85–1.16), last − shipped +0.45 points; mean |Δ| 3.44 s (range
44 s). Run 2b (13:29–13:33, 199 s): shipped +3.13 % ± 3.10 (7.6 / 2.5 / 5.0 / 0.0 / 0.0 / 3.7 %), 3 of 6; last
iterate +3.16 % ± 3.58 (7.6 / 2.5 / 5.9 / −2.1 / 1.5 / 3.5 %), last − shipped +0.03 points; mean |Δ| 3.32 s (31 s).
* Readings by the letter: run 2 "mixed" — its |Δ| 3.44 s misses the 3.40 bound (half of run 1's 6.80) by 0.04,
  its last iterate holds (+0.45 points). Run 2b: neither pre-written case exactly (run 2 is not ≤ 3.4), but the
  "TD3 is what holds a fixed objective" case is refuted: without TD3 the fixed objective holds as well (3.32 s,
  last − shipped +0.03), and the two runs' last iterates agree within 0.8 points on every seed.
* What that says (a reading, not a rule's verdict): with the multiplier frozen the drift is gone with or without
  TD3 — the last iterates keep what ships (−11.0 / −7.7 points with the PID, ±0.5 without), and the batch's
  swing halves (6.6–6.8 → 3.3–3.4 s, most of what is left is a steady climb of watch time as comments fall). So
  the drift the fifteenth round saw is the PID multiplier ↔ actor loop (ν jumps 0 ↔ 0.6–1.2 within a few
  iterations and the actors chase each new Q_mix), not the actor climbing the critic's overestimation; TD3's
  stabilisers do not touch that loop. Without the pull, the actors buy +3 % of watch time with 7–25 % fewer
  comments (the same trade as every round).

Run 3 (13:34–13:37 UTC, 225 s): benchmarks/rank_residual_rdpg_probe.py with the three stabilisers on both learners
(its docstring's third variant, rule written before): d'' − b +0.68 pts ± 1.70, d'' feasible 1 of 3 against b's 2 →
"updates net harmful" by that probe's rule; the last iterates d'' −19.3 / −9.5 / −15.4 % (first run's d −4…−14 %).
MA-RDPG with TD3 does not hold the rule's start either.
* Decision: not a candidate (run 1: 2 of 6 feasible); configs/rank/ma_rdpg.yaml unchanged; the options stay off.
  Not run: `target_noise_box` "action" (σ 0.1, the exploration's σ) — the diagnostic points away from the critic.
  The lever the diagnostic points at is the multiplier's dynamics against the actors' speed (a slower or
  smoothed ν, or actors that move once per multiplier update), not tried here. Logs: runs/probe/td3_*.log of
  worktree td3.

Seventeenth round: MA-RDPG's comment multiplier — slower, or fixed (2026-12-05, issue 18; tuning seeds 100–105
only, off by default, no config changed). Sixteenth round: with ν held at 0 the drift is gone (last − shipped
+0.03 points) but the actors buy ~3 % of watch time with 7–25 % fewer comments (+3.13 %, 3 of 6); with the
shipped PID (K_P 3, K_I 0.5, no EMA) ν jumps 0 ↔ 0.6–1.2 within a few iterations on one 64-env batch's noisy
comment rate and the actors chase each new Q_mix (last iterates −11 points). Does a ν that moves slowly
against the actors, or not at all, keep the learner stable AND feasible? Built (training/algorithms/
ma_rdpg.py, ours, off by default): `initial_multipliers` (ν_j at the start, one per constraint: click, like,
follow, comment, share) and `hold_multipliers` (DEPARTURE: a fixed-penalty method, not the adaptive
constrained scheme — ν stays at its start, the tracker still keeps the best feasible iterate).
ν = 0.4 for comment, 0 for the four others (never missed in any round; the sixteenth round's ν ≡ 0 met them
on every seed): where the shipped run's trace settles on these seeds (the thirteenth/sixteenth-round baseline's
mult_comment over iterations 20–39: mean 0.39 over the six seeds, per seed 0.38 / 0.37 / 0.78 / 0.20 / 0.39 /
0.24; iterations 10–39 mean 0.36, median 0.33) — tuning on tuning seeds.

DECISION RULE, written and committed BEFORE the first run:
`PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.rank_probe --algo ma_rdpg 'OVERRIDES'
--seeds 100,101,102,103,104,105` (tuning worlds 3100–3105, 40 × 64; baseline: shipped MA-RDPG +3.55 % ± 2.42,
feasible 2 of 6, last iterate −7.47 %, last − shipped −11.03 points).
* Run 1, slow integral-only from the settled value: `{"multiplier_kp": 0, "dual_lr": 0.05,
  "initial_multipliers": [0, 0, 0, 0.4, 0]}` (smoothing as shipped; no P term, so the batch's noise no longer
  moves ν directly; K_I 0.05 moves ν by 0.005 per iteration per 10 % relative violation, ≤ ~0.2 over the run —
  a tenth of the shipped integral's speed; from 0, as the brief's first example, ν could not reach the settled
  value within 40 iterations and the run would repeat the ν ≡ 0 diagnostic).
* Run 2, fixed penalty (DEPARTURE): `{"initial_multipliers": [0, 0, 0, 0.4, 0], "hold_multipliers": true}`.
* Run 3, only with its reason written and committed before it: whatever runs 1–2's traces point at.
* A variant is a CANDIDATE for the reported run (the lead decides; this round changes no config) only if mean
  lift ≥ +3.0 % AND ≥ 5 of 6 seeds meet every constraint on the judged users. Otherwise "not a candidate".
* Secondary reading, not a decision: "stable" if the last iterate's mean lift is within 2 points of what ships
  (last − shipped ≥ −2 points), else "drifts".

Run 1 (13:44–13:47 UTC, 190 s): +1.33 % ± 2.64 (6.3 / 0.1 / 0.0 / 0.2 / 0.0 / 1.3 %; comment 1.157 / 1.097* /
1.131 / 1.140 / 1.131 / 1.098*, mean 1.126), feasible 4 of 6 → NOT A CANDIDATE; last iterate −4.73 % ± 7.93 (6.3 /
−1.3 / −11.4 / 0.2 / −10.7 / −11.6 %), last − shipped −6.06 points → "drifts". ν stayed 0.29–0.44 on every seed,
yet the batch's watch time still jumps (mean |Δ| over iterations 11–39 3.93 s per request, baseline 6.64, ν ≡ 0
3.32; per-seed range 24–62 s). Run 2 (13:48–13:52, 197 s): +2.06 % ± 3.34 (6.6 / 0.1 / 5.8 / 0.0 / 0.0 / −0.0 %;
comment 1.160 / 1.097* / 1.088* / 1.149 / 1.131 / 1.135, mean 1.127), feasible 4 of 6 → NOT A CANDIDATE; last
iterate −3.75 % ± 8.32 (6.6 / −4.5 / 5.5 / −11.0 / −10.6 / −8.5 %), last − shipped −5.81 points → "drifts"; mean
|Δ| 3.98 s, range 32–60 s. Four of six seeds ship the untouched start or its neighbour (kept 3–8, lift 0.0).
* Trace, seed 105, run 2 (ν ≡ 0.4; per iteration from 10; train comment per request / watch s per request):
  1.18/132 1.19/107 1.22/105 1.23/106 1.15/106 1.21/105 1.18/104 1.18/123 1.11/161 1.07/161 … (0.99–1.10 / 153–164
  through 36) … 1.09/121 1.13/121 1.15/119. Run 1 seed 105 (ν 0.37–0.42) the same shape: comment side
  (1.23–1.32, 103–106 s) at 11–17, watch side (0.98–1.20, 147–165 s) at 18–37, back to 127 / 111 s at 38 / 39.
* Reading: with ν held the swing is still there. At ν 0.4 the actors' first steps (iteration 11) cut the batch's
  watch time 20–30 % on every seed (comment up on five, 1.14–1.33 over iterations 11–14, at or above the 1.133
  aim; on seed 102 it fell too, 0.99–1.16 — the "comment side" below), and on some seeds they
  later flip to the watch side and back within one or two iterations, with ν unchanged — the actors move
  between two regimes of their ±0.1 box whichever ν holds, so the sixteenth round's "the PID ↔ actor loop"
  is only half of it: ν ≡ 0 was stable because it leaves the actors one direction (watch time), not because ν
  stopped moving. The tracker then ships the start where only the comment side was feasible.

RUN 3 (reason written and committed before it): the traces put ν 0.4 on the comment side at the actors' first
move on all six seeds and ν 0 (sixteenth round) on the watch side; the trade the rule asks for lies between.
Run 3: the fixed penalty at the midpoint, `{"initial_multipliers": [0, 0, 0, 0.2, 0], "hold_multipliers": true}`
(DEPARTURE as run 2), judged by the same rule. Expected if the actors are two-regime: seeds split between the
two sides (lift 0 or the comment miss) and the last iterates still drift.

Run 3 (13:52–13:56 UTC, 191 s): +3.19 % ± 2.76 (6.6 / 4.0 / 5.7 / 0.6 / 0.7 / 1.5 %; comment 1.154 / 1.041* /
1.084* / 1.118 / 1.094* / 1.101, mean 1.099), feasible 3 of 6 → NOT A CANDIDATE (the lift half passes, feasibility
fails); last iterate +1.60 % ± 5.48 (6.5 / 3.3 / 5.8 / 0.7 / −8.0 / 1.4 %), last − shipped −1.59 points → "stable"
by the letter (five seeds within 0.7 points; seed 104 −8.7). Mean |Δ| 3.42 s, per-seed range 11–22 s on five
seeds, 64 s on seed 104 (its batch flips to the comment side at iteration 37: 170 → 134 s, comment 1.19–1.30).
* Traces, per iteration 10, 12, …, 38 (ν / training-batch comment per request / watch s per request):
  run 1 seed 105: ν 0.41 0.40 0.39 0.38 0.37 0.37 0.37 0.38 0.38 0.38 0.39 0.40 0.41 0.41 0.42; comment 1.18 1.32
  1.31 1.23 1.20 1.08 1.10 1.07 1.18 1.01 1.07 0.98 1.07 1.07 1.14; watch 132 103 104 104 147 164 158 163 160 161
  160 164 161 165 127. Run 2 seed 105: ν 0.40 throughout; comment 1.18 1.22 1.15 1.18 1.11 1.06 1.06 1.06 1.10
  1.06 1.06 1.07 1.03 1.05 1.13; watch 132 105 106 104 161 159 164 160 160 159 161 159 159 153 121. Run 3 seed
  104: ν 0.20 throughout; comment 1.13 1.22 1.09 1.12 1.20 1.24 1.10 1.08 1.10 1.08 1.14 1.04 1.14 1.14 1.24;
  watch 138 131 157 162 153 161 170 173 172 171 169 174 174 170 129.
* Decision by the rule: no variant is a candidate (runs 1, 2, 3: +1.33 / +2.06 / +3.19 %; 4 / 4 / 3 of 6
  feasible). configs/rank/ma_rdpg.yaml unchanged; `initial_multipliers` / `hold_multipliers` stay off by default.
* Reading: the pre-written expectation for run 3 (seeds split between the two sides) did not hold: at ν 0.2 the
  actors' first move went to the watch side on five seeds and they stayed there (ranges 11–22 s), so ν 0.2
  behaves like the sixteenth round's ν ≡ 0 — stable, and the same trade: the shipped iterates land 2.7–5.1 %
  below the constant's comment rate on the judged users (mean 1.099; the training batch's comment read 1.11–1.15
  at the kept iterates). At ν 0.4 (fixed, or slow from 0.4) the first move goes to the comment side, the tracker
  finds no richer feasible iterate and ships the start on three (run 1) and four (run 2) seeds, and later
  flips to the watch side and back with ν unchanged make the last iterates drift (−6 points). So no single ν
  gives both: below the knife-edge the learner is stable and infeasible on the judged users, above it
  stable-at-the-start or drifting; a slower ν alone (run 1) changes nothing against a fixed one. World
  3101's reference constant itself reads 1.097 on the judged users: a learner that does not add comments there
  misses on seed 101, and the 5-of-6 bar then allows no other miss. Not run: fixed ν 0.3 (between the two
  sides; the knife-edge suggests a seed-by-seed split, not both halves of the rule); a ν schedule that starts
  low and rises once the actors have moved. Logs: runs/probe/run{1,2,3}.log of worktree mult.

Eighteenth round (2026-12-05, issue 18; tuning seeds only, no config changed). Rules written and committed
BEFORE the runs (this paragraph; results appended below it after the runs):
(a) Fresh-seed check of the thirteenth round's two minibatch-3 072 settings, which passed the lift half there
    (+3.81 % / +3.02 %, 3 of 6): `rank_probe --algo ma_cascade '{"lambda_control": "pid", "margin": 0.03,
    "minibatch_size": 3072}' --envs 192 --seeds 106,...,111` and `--algo tscac '{"margin": 0.03,
    "minibatch_size": 3072}' --envs 192 --seeds 106,...,111` (worlds 3106–3111, never probed by these settings).
    Reading, under the REPORTED TABLE's criterion (every constraint met on the per-decision mean over seeds):
    "holds on fresh seeds" if mean lift >= +3.0 % AND mean comment over the six seeds >= 1.1 AND no other
    constraint missed on any seed; then it is a candidate for a reported run in a later session, with the
    owner's view on the per-seed bar (>= 5 of 6) the probes have used. Else: the thirteenth round's lift was
    seed luck. The per-seed count is reported beside it.
(b) MA-RDPG with a narrower actor range, `'{"deviation_bound": 0.05}' --seeds 100,...,105` (the shipped ±0.1
    lets the actors flip between a comment-heavy and a watch-heavy regime, seventeenth round): the usual rule,
    a candidate only if mean lift >= +3.0 % AND >= 5 of 6 seeds meet every constraint; "stable" if the last
    iterate's mean lift is within 2 points of what ships.
Results (14:26–14:44 UTC, the two probes in parallel, one per core; wall times include the six constant
searches of each seed set, ~80 s each; per seed: lift (comment; * misses 1.1), no other constraint missed):

| run | lift | per seed | comment mean | feasible | last − shipped | wall |
|---|---|---|---|---|---|---|
| (a) MA cascade mb 3 072, 192 envs, seeds 106–111 | +1.93 % ± 2.68 | −2.6 (1.158) / +3.0 (1.085*) / +1.5 (1.176) / +1.3 (1.124) / +4.1 (1.141) / +4.3 % (1.058*) | 1.124 | 4 of 6 | +0.41 | 877 s |
| (a) TSCAC mb 3 072, 192 envs, seeds 106–111 | +1.26 % ± 3.69 | +0.4 (1.147) / +2.0 (1.082*) / +7.6 (1.070*) / −0.8 (1.127) / −2.7 (1.164) / +1.0 % (1.113) | 1.117 | 4 of 6 | +1.87 | 157 s |
| (b) MA-RDPG deviation_bound 0.05, seeds 100–105 | +1.57 % ± 1.43 | +3.8 (1.176) / +1.8 (1.064*) / 0.0 (1.131) / +0.3 (1.133) / +2.1 (1.093*) / +1.4 % (1.102) | 1.116 | 4 of 6 | −4.79 | 645 s |

* Decisions by the rules: (a) both settings fail the lift half on fresh seeds (mean comment ≥ 1.1 holds): the
  thirteenth round's +3.81 % / +3.02 % were seed luck, not a candidate under either criterion. (b) not a
  candidate, and not stable (the last iterates still lose 4.8 points: a narrower range shrinks the gain more
  than the drift). Commands as in the rules; logs runs/probe/r18*.log of the main checkout.

Nineteenth round (2026-12-05, issue 18; tuning seeds only, no config changed): state-dependent antithetic
exploration. Question: the on-policy learners' updates move along the watch/comment trade (a state-independent
direction) and miss the state-dependent trade benchmarks/headroom_rank.py's searched rule shows (+5.2 % over its
constant, +2.1 % of it from within-session state). One exploration offset per user-episode (third round) is the
same at every state of the episode, so the paired episode difference credits only the episode's average
gradient. New (ours, DEPARTURE, off by default; commit d22ba4e): `exploration: antithetic_state`
(`AntitheticStateNoise`): each row holds per episode a standard-normal matrix E (A, 1 + obs), antithetic in row
pairs, and plays z_t = E·u(s_t), u = [√(1 − ρ); √ρ·ŝ/|ŝ|] a unit vector (every step's marginal exactly N(0, I), the
log-probabilities exact; two steps correlate by (1 − ρ) + ρ·cos(ŝ, ŝ')), ρ = `state_noise_share`; ŝ standardised
with statistics fixed after the collector's first 32 steps (the reset batch has the session columns constant);
each MA cascade stage's noise reads only its own observation block. rank_probe now lays the JSON overrides over
the config's online section too (the shipped online `exploration: antithetic` would otherwise win).
Rule, written and committed BEFORE the runs (this paragraph; results appended below it after the runs):
(a) `PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.rank_probe --algo tscac
    '{"exploration": "antithetic_state", "state_noise_share": 0.5}' --seeds 100,101,102,103,104,105`, then the
    same with `--algo ma_cascade` (the probe's defaults, 40 iterations × 64 envs; everything else as shipped:
    TSCAC margin 0, MA cascade fixed λ 0.02, advantage episode_pairs). A setting is a CANDIDATE for a learner if
    its mean lift over the seed's constant >= +3.0 % AND the mean comment rate over the six seeds >= 1.100 AND
    no other constraint is missed on any seed (the reported table's criterion: every constraint met on the mean
    over seeds); the per-seed feasible count is reported beside it. Baselines on these seeds (twelfth/thirteenth
    rounds, not rerun): TSCAC shipped +2.38 % ± 1.74 (comment mean 1.110), MA cascade shipped +0.88 % ± 5.50
    (1.131).
(b) A candidate is confirmed on fresh seeds 106–111 by the same rule before anything else (same command,
    `--seeds 106,107,108,109,110,111`); only a confirmed candidate is put forward for a reported run.
(c) One more share, pre-registered here: if a learner's ρ = 0.5 run is NOT a candidate but "looks promising" —
    its mean lift is above that learner's shipped baseline on these seeds (TSCAC +2.38 %, MA cascade +0.88 %) —
    run ρ = 0.8 (`"state_noise_share": 0.8`) for that learner on seeds 100–105, judged by the same rule (and (b)
    if a candidate). No other share, no other setting. Time budget: ~100 minutes from 15:20 UTC, whatever the
    outcome; probing stops there.
Results (15:35–15:42 UTC by the host clock, one probe at a time; constants cached; per seed: lift (comment; *
misses 1.1), no other constraint missed on any seed; "last": the last iterate's mean lift (per seed in brackets)):

| run | lift | per seed | comment mean | feasible | last (− shipped) | wall |
|---|---|---|---|---|---|---|
| TSCAC ρ 0.5 | −0.10 % ± 3.54 | +3.1 (1.183) / −2.5 (1.099*) / −3.6 (1.138) / +4.3 (1.068*) / +1.0 (1.108) / −3.0 % (1.182) | 1.130 | 4 of 6 | +1.72 % (+6.5 / +0.2 / +0.1 / +1.2 / +2.3 / −0.0; +1.81) | 148 s |
| MA cascade ρ 0.5 | +0.07 % ± 1.01 | +0.9 (1.189) / +0.9 (1.088*) / +0.3 (1.124) / −0.6 (1.153) / −1.5 (1.148) / +0.4 % (1.143) | 1.141 | 5 of 6 | −0.09 % (+1.2 / +0.6 / +2.0 / +0.9 / −4.8 / −0.4; −0.16) | 289 s |

* Decision by the rule: neither is a candidate (mean lift −0.10 % / +0.07 % against the +3.0 % bar; the comment
  half holds, 1.130 / 1.141). Neither "looks promising" by (c) (both below their shipped baselines +2.38 % /
  +0.88 %), so ρ = 0.8 was not run; nothing to confirm on 106–111. `antithetic_state` stays off by default; no
  config changed.
* Against the shipped runs on the same seeds, per seed (new − shipped): TSCAC +2.8 / −3.3 / −8.0 / +1.3 / −0.9 /
  −6.9, mean −2.5 ± 4.6 points; MA cascade −7.5 / +2.2 / −3.0 / −4.2 / +0.8 / +6.8, mean −0.8 ± 5.4 (not
  significant either way). The MA cascade barely leaves its constant (lift within ±1.5 %, comment within 1.4 % of
  the constant's on every seed, sd 0.96 points against the shipped 5.2): with half the variance moved into the
  state part, the paired episode difference no longer finds the state-independent watch/comment trade it found
  before, and finds no state-dependent one in its place. TSCAC's shipped iterates spread more (sd 3.4 against
  1.7) and the best-feasible tracker keeps iterates 16–36 below the last iterate (+1.72 %, comment mean 1.120).
* Measured beside the run (constant default weights, world 100's users, ρ = 1): the mean cosine of two standardised
  observations of one user-episode is 0.72 one step apart, 0.62 five apart, 0.46 twenty apart (episodes ~35
  steps); so at ρ 0.5 a step's offset correlates 0.86 with the next and 0.73 with one twenty steps later. By
  column group: the 12 pool-statistics columns alone 0.34 one step apart and 0.32 twenty apart (they change with
  every request: per-step noise in the state part), the 15 user / session / hour columns 0.91 and 0.49 (the
  within-session drift the round aimed at). Check: TSCAC shipped `{}` on seed 100 reproduces the twelfth round to the digit (+0.3 %, 1.193).
  Logs: /work/logs/statenoise_r19_*.log.

Nineteenth round (b): MA-RDPG's exploration held over a session and following the state (2026-12-05, issue 18;
tuning seeds only, off by default, no config changed). MA-RDPG explores with fresh Gaussian noise per stage and
request (the paper's DDPG form); in this world a weight's value is long-run (γ 0.99, sessions, next-day returns)
and the third round found per-request offsets hide a direction's long-run effect (t ≈ 1) where one offset held
per user-episode shows it (t ≈ 9) — the on-policy learners explore that way since, MA-RDPG never did. So its
critic sees one-request deviations only and its ∂Q/∂a follows the short-run watch/comment trade, not the
state-dependent trade headroom_rank finds (+5.2 %: sociability, session fatigue). Built (training/algorithms/
ma_rdpg.py, ours, DEPARTURE from the paper's per-step noise, off by default): `exploration: "session_state"` —
per row, stage k and SESSION a standard-normal matrix E_k (6 × 28), redrawn at a restart as the message; the
noise is σ ⊙ (E_k · u(o_k)), u(o) = [√(1 − ρ); √ρ·ô/|ô|] a unit vector on the stage's observation standardised
with fixed per-column statistics, so every request keeps today's N(0, σ²) and a session's requests correlate
(1 − ρ) + ρ·cos(ô, ô'); `state_noise_share` ρ. The statistics are pooled over the run's first iteration (32
requests) and then fixed, not taken from the first request alone: there every row is at a session's start and
10 of the 27 columns (recent rates, session depth, session signals — the sociability and fatigue proxies) are
the same on every row, so they would get weight 0; after the first iteration all 27 vary.

DECISION RULE, written and committed BEFORE the first run:
`PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.rank_probe --algo ma_rdpg 'OVERRIDES'
--seeds 100,101,102,103,104,105` (tuning worlds 3100–3105, 40 × 64; baseline, thirteenth/sixteenth rounds, not
rerun: shipped MA-RDPG +3.55 % ± 2.42, comment mean 1.090, last iterate −11 points below shipped).
* Run 1: `{"exploration": "session_state", "state_noise_share": 0.5}`.
* Run 2: `{"exploration": "session_state", "state_noise_share": 0.0}` (one offset held per session, no state
  dependence: separates "held" from "state-dependent").
* A run is a CANDIDATE (the reported table's criterion) only if its mean lift over the seed's constant ≥ +3.0 %
  AND its mean comment rate over the six seeds ≥ 1.100 AND no other constraint is missed on any seed; the
  per-seed feasible count is reported beside it. A candidate is then run once on fresh seeds 106–111
  (`--seeds 106,...,111`, worlds 3106–3111) and is CONFIRMED only if it meets the same rule there; otherwise
  "not a candidate" / "not confirmed". The lead decides on any config change; this round changes none.
* Secondary reading, not a decision: the LAST ITERATE line — "stable" if last − shipped ≥ −2 points, else
  "drifts".
Results (runs 1–2, 15:33–15:47 UTC, one at a time; the six constants cached; per seed: lift (comment; * misses
1.1), no other constraint missed on any seed; the comment mean read unrounded, from each judged evaluation's
per-decision rate — run 1 was run twice, the second time printing them, and reproduced to the digit):

| run | lift | per seed | comment mean | feasible | last iterate (last − shipped) | wall |
|---|---|---|---|---|---|---|
| 1 ρ 0.5 | +3.49 % ± 2.57 | +6.7 (1.155) / +4.1 (1.041*) / +5.9 (1.085*) / +0.5 (1.110) / +1.7 (1.111) / +2.1 % (1.095*) | 1.0995 | 3 of 6 | +0.29 % ± 5.19: 6.2 / 3.1 / −8.5 / 1.5 / 0.1 / −0.6 (−3.20) | 247 s |
| 2 ρ 0 | +2.01 % ± 2.67 | +6.7 (1.157) / +3.1 (1.059*) / −0.1 (1.130) / +0.2 (1.141) / +0.6 (1.119) / +1.5 % (1.102) | 1.118 | 5 of 6 | +0.56 % ± 5.45: 6.7 / 2.9 / −8.7 / 0.2 / 2.7 / −0.4 (−1.45) | 271 s |

* Decisions by the rule: run 1 NOT A CANDIDATE — the lift half passes (+3.49 %) and no other constraint is
  missed, but the mean comment is 1.09954 < 1.100 (printed 1.100 by the probe's 3 decimals; short by 0.0005).
  Run 2 NOT A CANDIDATE — the lift half fails (+2.01 %), the comment half passes (1.118, 5 of 6). No fresh-seed
  confirmation is due under the rule.
* Readings (not decisions): against the baseline (+3.55 %, comment 1.090, 2 of 6, last − shipped −11.03), the
  held noise keeps the lift at ρ 0.5 with slightly more comments (1.0995 vs 1.090, 3 of 6) and cuts the drift
  (−3.20 points; ρ 0: −1.45, "stable" by the letter; run 1 "drifts"); seed 102's last iterate still loses 8.5–8.7 %
  in both. ρ 0 (held, no state) is the more conservative: it ships the start's neighbourhood on 102–104 (lift
  −0.1…+0.6 %) and keeps later iterates (kept 34 / 34 / 10 / 37 / 20 / 13 vs run 1's 17 / 25 / 14 / 16 / 12 / 16).
  The state-dependent half buys +1.5 points of lift over ρ 0 and pays 0.018 of comment: along the same trade.
  The training batch still swings (mean |Δ| of watch time per request over iterations 11–39: 5.97 s at ρ 0.5,
  5.54 s at ρ 0; baseline 6.6; seed 104 12–14 s) — but a held offset makes one batch noisier by itself (fewer
  independent draws per batch), so |Δ| is not comparable one for one.

RUN 3, a diagnostic (reason and reading written and committed before it; NOT the rule's confirmation, which the
rule did not trigger, and not a candidate whatever it shows): run 1 missed the comment half by 0.0005, inside
any noise of the judged users (one 1 000-user sample: sd ≈ 0.021, eleventh round), so its result on these seeds
cannot separate "a candidate" from "not". Run 1's overrides on fresh seeds 106–111 (`--seeds 106,...,111`),
read by the same three conditions: "holds on fresh seeds" if all three are met there, else "does not hold".
Either way run 1 stays not a candidate; the reading only tells the lead whether a pre-registered rerun on
other seeds is worth a slot.
Run 3 (15:48–15:51 UTC, 176 s; constants cached): +1.34 % ± 1.85 (+0.1 (1.158) / +0.7 (1.082*) / +4.4 (1.142) /
−0.6 (1.144) / +1.2 (1.101) / +2.2 % (1.058*)), comment mean 1.114, no other constraint missed, 4 of 6; last
iterate −0.19 % ± 5.93 (1.5 / 2.3 / 4.4 / −0.6 / 2.5 / −11.3 %), last − shipped −1.53 points → "does not hold"
(the lift half fails by 1.7 points; the comment half passes). So session-held, state-dependent exploration is
not a candidate on either seed set; what it does change is the drift (last − shipped −3.20 / −1.53 points on
the two seed sets against the baseline's −11.03), not the trade: the shipped iterates still sit 1.8–5.5 % below
the constant's comment rate wherever they gain watch time. Both options stay off by default; configs/rank/
ma_rdpg.yaml unchanged. Logs: runs/probe/rdpgnoise_*.log of worktree rdpgnoise (the `_exact` runs print each
judged evaluation at full precision through a wrapper that leaves the probe unchanged).

Nineteenth round (c) (2026-12-05, issue 18; the lead; tuning seeds only, no config changed). Rule written and
committed BEFORE the run: the thirteenth round's MA-RDPG at 120 iterations × 192 rows read +3.32 % ± 2.73 on
seeds 100–105 with mean comment 1.106 (4 of 6 seeds feasible): it failed the per-seed bar used then (≥ 5 of 6) but
PASSES the reported table's criterion (every constraint met on the mean over seeds), and it was never checked on
fresh seeds. `rank_probe --algo ma_rdpg '{}' --iterations 120 --envs 192 --seeds 106,...,111` (worlds 3106–3111).
"Holds on fresh seeds" if mean lift >= +3.0 % AND mean comment over the six seeds >= 1.1 AND no other constraint
missed on any seed; then a candidate for a reported run of MA-RDPG at that budget (its own loop; the on-policy
learners stay at 40 × 64, where the thirteenth round found more budget did not help them). Else: seed luck.
Result (15:33–15:45 UTC, 690 s, alone on one core; per seed lift (comment; * misses 1.1), no other constraint
missed): +4.6 (1.111) / +2.2 (1.058*) / +4.5 (1.139) / 0.0 (1.145) / +1.1 (1.101) / +2.0 % (1.075*) — **+2.39 %
± 1.93**, comment mean 1.105, 4 of 6 seeds feasible; the last iterates −3.25 % ± 7.46 (last − shipped −5.65
points; −11.4 and −10.8 on seeds 106 and 109). Decision by the rule: does NOT hold on fresh seeds (the comment
half holds, the lift half fails); over the twelve tuning seeds this budget reads +2.86 %. Not a candidate; no
config changed. The drift of the last iterates (thirteenth and sixteenth rounds) is unchanged at 3× the rows.
Log runs/probe/r19c.log of the main checkout.

Nineteenth round (d) (2026-12-05, issue 18; the lead; a measurement on tuning worlds, no learning, no decision
rides on it): how much do the outcomes say about the learnable headroom? `python -m benchmarks.rank_signal_probe
--worlds 3100,3101,3102 --users 2000` (67 s) plays, on the same 2 000 users with common random numbers (what an
antithetic pair of the learners' exploration does), +ε against −ε along two directions around headroom_rank's
constant c: "state-dependent" w(s) = c + α·(r(s) − c), r headroom_rank's observed rule; "state-independent" c with
its comment weight × (1 − 0.4·α), the watch/comment trade the learners do follow. Paired lift of +ε over −ε, its
95 % half-width, and the users a paired comparison needs for 2 standard errors; comment of +ε vs −ε:

| world | rule vs c (α = 1) | state-dependent ε 0.1 (RMS step 0.014) | ε 0.2 (0.028) | state-independent ε 0.1 (0.004) | ε 0.2 (0.007) |
|---|---|---|---|---|---|
| 3100 | +4.68 % [3.75, 5.61], comment 1.137 vs 1.136 | +2.12 % ± 0.57 (t 7.3; 152 users), comment 1.141 vs 1.130 | +4.27 % ± 0.73 (60) | +0.37 % ± 0.37 (t 2.0; 2 062 users), 1.131 vs 1.139 | +1.10 % ± 0.45 (346) |
| 3101 | +5.32 % [4.40, 6.23], 1.068 vs 1.073 | +2.31 % ± 0.57 (t 8.0; 125), 1.077 vs 1.069 | +4.03 % ± 0.74 (71) | +0.58 % ± 0.36 (t 3.2; 785), 1.070 vs 1.076 | +0.95 % ± 0.46 (482) |
| 3102 | +4.85 % [3.99, 5.72], 1.032 vs 1.040 | +2.22 % ± 0.58 (t 7.5; 143), 1.041 vs 1.036 | +4.69 % ± 0.72 (49) | +0.38 % ± 0.32 (t 2.3; 1 537), 1.037 vs 1.043 | +1.14 % ± 0.46 (341) |

* Reading: the headroom is not hidden by the world's noise. Along the rule's direction a weight step of RMS 0.014
  (a seventh of the learners' exploration σ ≈ 0.1) moves watch time by +2.1–2.3 % and comments UP (+0.5–1 %), and
  ~150 users tell its sign at 2 s.e.; the state-independent trade the learners follow gives +0.4–0.6 % per step of
  RMS 0.004, with comments DOWN, and needs ~800–2 000 users. The learners see ~2 700 user-days per run (81 920
  requests at ~30 per user-day). So the data would show the rule's direction at once if a learner explored along
  it; what the learners lack is finding that direction among their actor's parameters: per-episode offsets
  (third round) cannot express it, per-request noise credits one request's share of a long-run effect, and
  state-dependent held noise (round (a) above) spreads the same pairs over ~500 directions (18 weights × 28
  features). A structured policy search in a few state features would find it, but choosing those features is
  headroom_rank's knowledge of the simulator, not something the issue's learners are given.

Nineteenth round (e) (2026-12-05, issue 18; the lead; a diagnostic on tuning seeds, not a learner the table
reports; rule written and committed BEFORE the runs): is it the learners' machinery or the data? The simplest
state-dependent policy search — antithetic evolution strategies over a linear policy in the standardised
observation around the seed's constant (`benchmarks/rank_es_probe.py`, module docstring; ours), W starting at 0
(the learners' warm start), σ 0.1 per weight (the learners' exploration scale), lr 1.0, comment multiplier by dual
ascent (η 2) aiming 3 % inside the threshold, the final W ships, judged as rank_probe judges (world 3000 + s's
own 1 000 users against the constant, common random numbers). Settings fixed here, not tuned:
(i) the learners' data: `python -m benchmarks.rank_es_probe --seeds 100,...,105 --iterations 14 --pairs 32`
    (2 688 user-days; a learner's run is ~2 700);
(ii) ten times that: `--iterations 140`.
Reading: "ES finds the headroom with the learners' data" if (i) has mean lift >= +3.0 % AND mean comment over the
six seeds >= 1.1 AND no other constraint missed on any seed; "with ten times the data" if (ii) does; else
"not even ES". It adopts nothing either way: the issue names its learners.
Two more, written and committed BEFORE they ran (after (i) had passed and while (ii) ran): (iii) (i) on fresh
seeds 106–111, read by (i)'s three conditions ("holds on fresh seeds" or not); (iv) the ablation `--raw`: (i) on
seeds 100–105 with the observation as it comes instead of standardised ("standardisation is what ES needs" if (iv)
fails (i)'s conditions while (i) passed; else "not the scale").
Results (15:51–15:59 UTC, one core; per seed lift [95 % CI on the 1 000 judged users] (comment; * misses 1.1), no
other constraint missed on any seed; each (i)-sized run 35–51 s for six seeds):

| run | lift | per seed | comment mean | feasible |
|---|---|---|---|---|
| (i) learners' data, seeds 100–105 | **+4.26 % ± 1.36** | +4.0 (1.209) / +3.2 (1.086*) / +3.2 (1.098*) / +3.6 (1.124) / +5.1 (1.061*) / +6.5 % (1.072*) | 1.108 | 2 of 6 |
| (ii) ten times the data, seeds 100–105 | −4.48 % ± 10.60 | +10.8 (1.160) / −7.1 (1.122) / −14.7 (1.136) / −1.8 (1.170) / +1.4 (1.127) / −15.6 % (1.193) | 1.151 | 6 of 6 |
| (iii) learners' data, fresh seeds 106–111 | **+3.97 % ± 1.32** | +4.1 (1.080*) / +2.8 (1.074*) / +5.5 (1.192) / +2.2 (1.112) / +4.9 (1.126) / +4.4 % (1.081*) | 1.111 | 3 of 6 |
| (iv) (i) on raw features, seeds 100–105 | −3.67 % ± 12.18 | +15.5 (1.124) / −8.5 (1.140) / −9.4 (1.160) / −5.7 (1.229) / −17.6 (1.224) / +3.7 % (1.112) | 1.165 | 6 of 6 |

* Readings by the rules: (i) "ES finds the headroom with the learners' data" — every per-seed lift +2.2 to +6.5 %;
  (iii) it holds on fresh seeds; (iv) "standardisation is what ES needs": the same search on the raw observation
  swings from +15.5 % to −17.6 % with comments overshooting (1.12–1.23). (ii): ten times the data with the same
  fixed step and dual step does NOT help — the multiplier winds up (ν 3 by iteration 40 on seed 101) and the
  long run overshoots on comments (mean 1.151) at the cost of watch time on five seeds; plain ES has no step
  decay, no tracker and no early stop, so read (i)/(iii) as "the data carry ≥ +3 % at this budget", not as a
  tuned learner.
* So the learners' shortfall is not the world's noise or the data budget: a linear policy in the STANDARDISED
  observation, trained by the simplest paired search, clears the goal's bar at the learners' budget on twelve
  tuning seeds. What the issue's learners share and ES did not: MLPs on the raw observation (the twentieth round
  tests exactly that), likelihood-ratio or critic gradients per request instead of the paired outcome of a user's
  three days, and, for TSCAC, the two-stage imitation. Logs runs/probe/r19e_*.log of the main checkout.
(f) Written and committed BEFORE it ran, after (i) and (iii) had held: ES on the REPORTED seeds 0–4, the last
step of the protocol (tuning seeds, fresh seeds, reported), settings frozen as (i) (14 iterations × 32 pairs, σ 0.1,
lr 1.0, η 2, standardised features): `python -m benchmarks.rank_es_probe --reported` — world 1000 + s, the
reported table's own constant (the same cached search: its watch time per user-day must equal the table's fixed
fusion per seed, a check printed beside it), ES's own training users (seeds 59 000 + s, 60 000 + 1 000·s + t),
judged on the world's own 1 000 users with common random numbers, as the table judges. Reading (the table's
criterion): "a learned policy clears the goal's bar on the reported seeds" if mean lift >= +3.0 % AND every
constraint met on the per-decision mean over the five seeds. Written to benchmarks/results/rank_es_reported.{json,md};
it changes no row of the reported table and is not one of the issue's three learners (ours, a diagnostic).
Result (16:17 UTC, 30 s; the constant's watch time equals the table's fixed fusion on every seed, to the digit):
per seed −0.5 (1.119) / +5.2 (1.107) / +5.7 (1.113) / +3.7 (1.083*) / +3.7 % (1.054*) — **+3.55 % ± 3.02**, comment
mean 1.095 (other rates far above their thresholds), 3 of 5 seeds feasible: by the rule **not met** — the lift half
holds, the comment half misses by 0.005 (world 1004's ES spends 6 % of the constant's comments). So even the
search that clears the bar on both tuning seed sets lands, on the reported worlds, just under the comment
threshold on the mean. benchmarks/results/rank_es_reported.{json,md}; log runs/probe/r19e_f.log.

Twentieth round (2026-12-05, issue 18; tuning seeds only; rule written and committed BEFORE the runs). Why the
learners might miss what ES finds: their networks read the RAW observation, whose columns differ in scale by two
orders of magnitude (std over a 3-day run of the constant: 0.013–3.1; the pool's predicted interaction rates —
column 16, the user's sociability as headroom_rank reads it, std 0.028; the completion EMA, column 24, std 0.082 —
are among the smallest), so with the default initialisation the actors and critics barely see the features the
state-dependent trade depends on; ES above standardised them. New (ours, off by default):
`training.rl.networks.Standardise` first in every network of the learner (actors and critics), statistics fixed
from the run's first batch (before any update; the warm-started actor plays the constant whatever its input, so
the first batch is unchanged), exported with the network. Option `obs_standardise` (LossConfig for TSCAC and the
MA cascade; MARDPGConfig for MA-RDPG). Settings (40 × 64, the probe's defaults, seeds 100–105):
  TSCAC and the MA cascade: (1) `{"obs_standardise": true}`; (2) `{"obs_standardise": true, "exploration":
  "antithetic_state", "state_noise_share": 0.5}`.  MA-RDPG: (1) `{"obs_standardise": true}`; (2) `{"obs_standardise":
  true, "exploration": "session_state", "state_noise_share": 0.5}`.
Rule (the reported table's criterion): a setting is a CANDIDATE for its learner if mean lift >= +3.0 % AND mean
comment over the six seeds >= 1.100 (unrounded) AND no other constraint missed on any seed; a candidate is
confirmed on fresh seeds 106–111 by the same rule (if both settings of a learner are candidates, the one with the
higher mean lift is confirmed first, the other only if it fails). Only confirmed settings change a config, and
only if all three learners have one is the reported table rerun; else the confirmed ones are recorded, not shipped.

Twentieth round (on-policy results) (16:00–16:14 UTC by the host clock, one probe at a time, nice 5; constants
cached; code: commit fbc2989, `LossConfig.obs_standardise` — TSCAC's actor, stage-one actors, best-feasible and
collecting copies, critics and their targets, the MA cascade's stage agents (each on its own observation block)
and central Q_i (on [obs; action]) each get a `Standardise` layer fitted by the Trainer once, from the first
batch, before the first update). Per seed: lift (comment; * misses 1.1); no constraint other than comment missed
on any seed; comment means read unrounded from each judged evaluation (a wrapper around `rq.evaluate` that leaves
the probe's output unchanged); "last": the last iterate's mean lift (per seed) and last − shipped:

| run | lift | per seed | comment mean | feasible | last (− shipped) | wall |
|---|---|---|---|---|---|---|
| TSCAC (1) std | +4.08 % ± 4.66 | +10.9 (1.103) / +5.8 (1.012*) / +2.9 (1.101) / +3.9 (1.076*) / −2.8 (1.141) / +3.8 % (1.073*) | 1.0843 | 3 of 6 | +3.81 % (11.8 / 1.1 / 2.9 / 3.3 / −2.0 / 5.8; −0.27) | 133 s |
| TSCAC (2) std + state ρ 0.5 | +4.42 % ± 2.31 | +5.4 (1.194) / +3.4 (1.012*) / +8.1 (1.042*) / +2.2 (1.117) / +4.8 (1.038*) / +2.6 % (1.098*) | 1.0833 | 2 of 6 | +5.38 % (4.4 / 5.1 / 8.1 / 5.0 / 4.9 / 4.7; +0.96) | 153 s |
| MA cascade (1) std | +2.93 % ± 3.41 | +8.5 (1.143) / −0.1 (1.081*) / −0.3 (1.0995*) / +2.3 (1.095*) / +4.2 (1.047*) / +2.9 % (1.032*) | 1.0829 | 1 of 6 | +1.02 % (10.3 / −3.5 / −0.3 / −7.0 / 3.8 / 2.9; −1.91) | 261 s |
| MA cascade (2) std + state ρ 0.5 | +3.30 % ± 3.36 | +7.9 (1.168) / +3.0 (1.072*) / −2.2 (1.0998*) / +3.7 (1.076*) / +3.5 (1.075*) / +3.8 % (1.103) | 1.09882 | 2 of 6 | +3.83 % (10.3 / 3.0 / −2.2 / 5.3 / 4.7 / 1.9; +0.52) | 309 s |

* Decisions by the rule: NONE of the four is a candidate. TSCAC (1) and (2) pass the lift half (+4.08 % / +4.42 %)
  and fail the comment half (1.0843 / 1.0833); MA cascade (1) fails both (+2.93 %, 1.0829); MA cascade (2) passes
  the lift half (+3.30 %) and fails the comment half by 0.0012 (1.09882, printed 1.099 by the probe). No
  confirmation on 106–111 is due; `obs_standardise` stays off by default; no config changed.
* Readings (not decisions). Standardised inputs make both learners MOVE: against the shipped runs on these seeds
  (twelfth/thirteenth rounds, per seed from the nineteenth round's differences), new − shipped is TSCAC +1.70 ±
  5.66 / +2.04 ± 2.68 points, MA cascade +2.05 ± 5.12 / +2.42 ± 5.79 (none significant), and the last iterates
  stay within 2 points of what ships (last − shipped −0.27 / +0.96 / −1.91 / +0.52). But the gain is bought along the watch/comment trade, not the state-dependent one: the
  judged comment falls 4.8 / 5.0 / 5.0 / 3.6 % below the seed's constant on average (constants' mean 1.140), so
  watch gained per point of comment lost is 0.84 / 0.88 / 0.59 / 0.92 — no better than the shipped learners'
  (TSCAC +2.38 % at 1.110, MA cascade +0.88 % at 1.131: about 0.9 and 1.2) and well below round (e)'s ES
  (+4.3 % at 1.108, about 1.5 from the brief's figures), whereas round (d)'s state-dependent direction raised
  watch time and comments together. The last iterates sit lower still on comment (means 1.064 / 1.022 / 1.100 /
  1.094). On the seeds that miss, the judged comment lands 1.4–9.1 % under the constant's; the training
  batches' comment swings by ±0.1 from one iteration to the next (e.g. 0.87–1.22 on TSCAC (1)'s seed 103), so
  the best-feasible tracker's measured slacks say little about fresh users. No feasible iterate was kept (the
  last ships; "kept −1") on seed 102 in all four runs and on seed 105 in MA cascade (1).
* Check: the option off reproduces TSCAC shipped `{}` on seed 100 to the digit (+0.3 %, 1.193, kept 27), and a
  unit test shows the first batch's observations and actions bit-identical with the option on and off
  (tests/unit/test_rl_obs_standardise.py). Logs: /work/logs/stdonpolicy_*.log (commands as in the rule, through
  the full-precision wrapper /work/logs/stdonpolicy_wrap/exact_probe.py).
Twentieth round (MA-RDPG results) (helper stdrdpg; tuning seeds only, no config changed). Built (training/algorithms/
ma_rdpg.py, ours, DEPARTURE from the paper's raw inputs, off by default; commit 51ce680): `obs_standardise` — every
network that reads a stage observation o_k reads it standardised per column: each stage actor's policy head
([o; h], the message h not standardised), its message cell ([o; a], the action not), their targets and
best-feasible copies, and the critics (o_k in Q(k, h, o_k, a), one set of statistics per stage for both critics and
their targets). Statistics: stage k's observations of the run's first iteration (32 requests × 64 rows = 2 048),
fitted once, never refitted, copied into the target actors at the fit (Polyak then keeps them equal). Because
`learning_starts` (4) is earlier than the first iteration's end, the FIRST GRADIENT STEP WAITS FOR THE FIT (request
32, not 4: 56 fewer critic steps before the actors start at request 320; a departure of this build, not of the
rule). Until the fit the standardisers are the exact identity, so the first iteration plays bit for bit as without
the option (unit test), and with the option off a short rank run reproduces HEAD's state dict bit for bit. The fitted
std per column ranged 0.010–2.4 on every seed and stage; no column was constant. Exported inside each stage's ONNX
graph (unit test: onnxruntime = torch, and the statistics change the action).
Results (16:02–16:14 UTC, one at a time; the constants cached; per seed: lift (comment; * misses 1.1), no other
constraint missed on any seed; the comment mean unrounded from each judged evaluation's per-decision rate, printed by
a wrapper that leaves the probe unchanged; "kept": the tracker's iteration):

| run | lift | per seed | comment mean | feasible | last iterate (last − shipped) | wall |
|---|---|---|---|---|---|---|
| 1 obs_standardise | +1.88 % ± 2.48 | +6.5 (1.153) / +2.2 (1.031*) / 0.0 (1.131) / +0.7 (1.117) / +0.7 (1.122) / +1.3 % (1.102) | 1.1094 | 5 of 6 | −3.74 % ± 7.25: 6.5 / −1.9 / −10.5 / −8.5 / −9.5 / 1.6 (−5.62) | 325 s |
| 2 + session_state ρ 0.5 | +1.79 % ± 4.43 | +6.4 (1.158) / +2.2 (1.030*) / +5.7 (1.086*) / +0.2 (1.113) / −5.3 (1.207) / +1.5 % (1.101) | 1.1157 | 4 of 6 | −2.42 % ± 6.82: 6.5 / −7.1 / −5.1 / 0.4 / 1.9 / −11.1 (−4.21) | 306 s |

* Decisions by the rule: run 1 NOT A CANDIDATE (the lift half fails, +1.88 % < +3.0 %; the comment half passes,
  1.109). Run 2 NOT A CANDIDATE (lift +1.79 %; comment 1.116 passes). No fresh-seed confirmation is due; MA-RDPG
  has no confirmed setting this round, so the reported table is not rerun whatever the other learners show.
* Readings (not decisions): against the unstandardised runs (shipped +3.55 %, comment 1.090, 2 of 6, last − shipped
  −11.03; nineteenth round (b) run 1, session_state ρ 0.5: +3.49 %, 1.0995, 3 of 6, −3.20), standardising moved
  both along the same trade — about 1.7 points less lift for +0.016–0.019 of comment — not off it. Kept iterations
  27 / 27 / 3 / 26 / 14 / 15 (run 1) and 38 / 26 / 20 / 35 / 29 / 15 (run 2). Run 2's seed 104 shipped an iterate
  5.3 % BELOW the constant with comment 1.207 (+6.7 % over the constant's): the tracker kept one that traded the
  other way on the training batch. The training batch still swings: mean |Δ| of watch time per request over
  iterations 11–39 7.15 s (run 1; baseline 6.6) and 4.53 s (run 2; nineteenth (b) run 1: 5.97). Logs /work/logs/
  stdrdpg_run{1,2}.log (the wrapper: /work/logs/stdrdpg_exact.py).

RUN 3, a diagnostic (reason and reading written and committed before it; not a candidate, adopts nothing): the
build moved the first gradient step from request 4 to 32, so run 1 differs from the shipped baseline in two ways.
`rank_probe --algo ma_rdpg '{"learning_starts": 32}' --seeds 100,...,105` (no standardisation, the same delayed
start). Reading: "the delay matters" if its mean lift is closer to run 1's (+1.88 %) than to the baseline's
(+3.55 %), i.e. below +2.72 %; else "the delay is not what moved run 1" (the standardisation, or seed noise: the
difference is inside either run's half-width).
Run 3 (16:15–16:20 UTC, 190 s): +1.88 % ± 2.55 (+6.3 (1.158) / +3.1 (1.060*) / 0.0 (1.131) / +1.1 (1.091*) / 0.0
(1.131) / +0.8 % (1.129)), comment mean 1.1166, no other constraint missed, 4 of 6; kept 22 / 31 / 3 / 29 / 8 / 25;
last iterate −4.33 % ± 8.24 (5.5 / −9.7 / 5.9 / −8.3 / −8.2 / −11.2), last − shipped −6.22 points; |Δ| 6.99 s →
"the delay matters" by the letter (+1.88 % < +2.72 %; a caveat: `learning_starts` 32 also measures the reward scales
on 32 requests instead of 4, which the build does not). So at the SAME schedule standardising changed nothing
measurable: run 1 vs run 3, +1.88 % vs +1.88 %, comment 1.109 vs 1.117, 5 vs 4 of 6 feasible, last − shipped −5.62
vs −6.22. The hypothesis (the raw scales hide the state-dependent trade from MA-RDPG) is not supported on these
seeds; the drop from the baseline's +3.55 % goes with the later first gradient step (1.7 points, inside either
run's half-width of ±2.4–2.6, so it may be seed noise). obs_standardise stays off; configs/rank/ma_rdpg.yaml
unchanged. Log /work/logs/stdrdpg_run3.log.

Twenty-first round (2026-12-05, issue 18; the lead; rule written and committed BEFORE the runs, after the twentieth
round's first on-policy probes had read (numbers in its results): with `obs_standardise` TSCAC gains +4.1 % / +4.4 %
(its last iterates +3.8 % / +5.4 %) but spends comments, mean 1.083–1.084 — its shipped PID aims at the threshold
itself (margin 0) on 64 training users; the MA cascade +2.9 %, comment 1.083 (its shipped fixed λ 0.02 reads no
threshold). The twelfth round's probe had the 3 % aim lift TSCAC's judged comment mean 1.110 → 1.132 (5 of 6 seeds).
Settings (40 × 64, seeds 100–105, the probe's defaults):
  TSCAC (1) `{"obs_standardise": true, "margin": 0.03}`; (2) the same plus `"exploration": "antithetic_state",
  "state_noise_share": 0.5`.  MA cascade (1) `{"obs_standardise": true, "lambda_control": "pid", "margin": 0.03}`;
  (2) the same plus the state-dependent exploration.
Rule: the twentieth round's, word for word (candidate: mean lift >= +3.0 % AND mean comment >= 1.100 unrounded AND
no other constraint missed on any seed; the better candidate of a learner confirmed on fresh seeds 106–111 first;
configs change only for confirmed settings, and the reported table is rerun only if all three learners have one).
Results (16:09–16:24 UTC, one probe at a time beside the helpers' jobs; per seed lift (comment; * misses 1.1), no
other constraint missed on any seed; logs runs/probe/r21_{tscac,ma_cascade}.log of the main checkout):

| setting | lift | per seed | comment mean | feasible | last iterate |
|---|---|---|---|---|---|
| TSCAC std, margin 0.03 | +3.81 % ± 4.26 | +8.8 (1.143) / +4.1 (1.032*) / +5.1 (1.069*) / +5.0 (0.975*) / +3.4 (1.104) / −3.5 % (1.129) | 1.075 | 3 of 6 | +4.30 % |
| TSCAC std, margin 0.03, state ρ 0.5 | +2.27 % ± 2.50 | +5.2 (1.170) / −1.4 (1.074*) / +1.5 (1.120) / +2.7 (1.112) / +1.2 (1.093*) / +4.3 % (1.107) | 1.113 | 4 of 6 | +3.38 % |
| MA cascade std, PID margin 0.03 | +2.17 % ± 5.29 | +7.9 (1.152) / +1.2 (1.059*) / −6.4 (1.138) / +3.3 (1.068*) / +6.2 (1.041*) / +0.8 % (1.081*) | 1.090 | 2 of 6 | +2.03 % |
| MA cascade std, PID margin 0.03, state ρ 0.5 | +2.53 % ± 2.19 | +5.4 (1.197) / +4.3 (1.051*) / +0.6 (1.115) / −0.0 (1.136) / +2.7 (1.082*) / +2.2 % (1.113) | 1.116 | 4 of 6 | +2.06 % |

* Decision by the rule: no candidate. Each setting meets one half: the plain 3 % aims keep the lift and not the
  comments (1.075, 1.090 — the aim on 64 training users does not hold the judged rate, as the thirteenth round
  found for MA-RDPG); with the state-dependent exploration the comments hold (1.113, 1.116) and the lift does not
  (+2.3 %, +2.5 %). No config changed; the reported table was not rerun.
* Reading of rounds 19–21 together: standardising the inputs is what lets the on-policy learners move (TSCAC's
  last iterates +3.8 to +5.4 %, every per-seed lift of ES-like size), but what they find still sits on the
  watch/comment trade, ~0.6–0.9 % of watch time per 1 % of comments, where ES finds ~1.5; at this budget none of
  the three named learners gets both halves of the goal on the tuning seeds, and ES, which does on both tuning
  seed sets, misses the comment half on the reported seeds by 0.005 (round (e)(f)).
"""

ALGOS = ("tscac", "ma_cascade", "ma_rdpg", "ma_rdpg_no_message", "main_only", "rcpo", "bc", "fixed_fusion")
ONLINE = ("tscac", "ma_cascade", "main_only", "rcpo")
"""On-policy learners trained by the generic Trainer (`--iterations`)."""
OFF_POLICY = ("ma_rdpg", "ma_rdpg_no_message")
"""MA-RDPG and its no-communication ablation: own replay loop in the sequential view (`--rdpg-iterations`)."""
GOAL_ALGOS = ("tscac", "ma_cascade", "ma_rdpg")
WORLDS = ("one", "split")
"""`--worlds`: one world per seed (search, train and judge in world 1000 + s; the default) or the old split."""
SEARCH_CACHE = Path(__file__).resolve().parent.parent / "runs" / "rank_quality_search"


@dataclass(frozen=True)
class SeedPlan:
    """Where seed s's constant is searched, its learners train and everything is judged (module docstring).

    A world is the simulator's constructor seed (catalog, creators); a user seed is the reset seed that draws
    the users and their luck. None as a user seed: the world's own users (`evaluate_policy(seed=world)`)."""

    train_world: int | None
    """The training pool's `world_seed`; None: the old layout, the catalog drawn from the training seed itself."""
    train_users: int
    """The training reset seed (`run.seed`): the users the learners (and BC's behaviour logs) see."""
    judge_world: int
    """Every policy is judged on this world's own users (common random numbers)."""
    search_world: int
    search_users: int | None
    """User seed of the fixed-fusion search (None: the search world's own users)."""

    def user_seeds(self) -> dict[str, int]:
        """The reset seed each role draws its users from (the judged and, when None, the searched world's own)."""
        return {
            "train": self.train_users,
            "judge": self.judge_world,
            "search": self.search_world if self.search_users is None else self.search_users,
        }


def seed_plan(seed: int, worlds: str = "one", world_offset: int = 1000) -> SeedPlan:
    """Seed `seed`'s plan. "one": search (user seed 20 000 + s), train (users s) and judge (the world's own
    users) in world `world_offset` + s; "split" (before the eleventh round): train in world s, judge world
    `world_offset` + s, search the world 10 000's own users. `world_offset` 3000: the probes' tuning worlds."""
    if worlds not in WORLDS:
        raise ValueError(f"worlds: expected one of {list(WORLDS)}, got {worlds!r}")
    if not 0 <= seed < 1000 or world_offset < 1000 or world_offset + seed >= 10_000:
        # keeps the three user seeds apart: s < 1 000 ≤ world_offset + s < 10 000 ≤ 20 000 + s
        raise ValueError(
            f"seed: expected 0 <= seed < 1000 and 1000 <= world_offset + seed < 10000, got {seed}, {world_offset}"
        )
    world = world_offset + seed
    if worlds == "split":
        return SeedPlan(train_world=None, train_users=seed, judge_world=world, search_world=10_000, search_users=None)
    return SeedPlan(
        train_world=world, train_users=seed, judge_world=world, search_world=world, search_users=20_000 + seed
    )


def _config_name(algo: str) -> str:
    return "ma_rdpg" if algo in OFF_POLICY else algo


def _online(algo: str) -> dict[str, Any]:
    """configs/rank/<algo>.yaml's online section (exploration and advantage settings used in the simulator)."""
    from pathlib import Path

    from training.train import load_config_file

    path = Path(__file__).resolve().parent.parent / "configs" / "rank" / f"{_config_name(algo)}.yaml"
    return dict(load_config_file(path).get("online", {})) if path.is_file() else {}


def _algo_config(algo: str, lam: float | None, start: np.ndarray | None = None) -> dict[str, Any]:
    """configs/rank/<algo>.yaml's algo section (the shipped configuration), λ optionally overridden; a learner
    trained online starts exactly at `start` when given (`start_action`: the warm start at the incumbent)."""
    from pathlib import Path

    from training.train import load_config_file

    path = Path(__file__).resolve().parent.parent / "configs" / "rank" / f"{_config_name(algo)}.yaml"
    cfg: dict[str, Any] = dict(load_config_file(path).get("algo", {})) if path.is_file() else {}
    if algo in ("tscac", "ma_cascade") and lam is not None:
        cfg["lam"] = lam
    if algo == "ma_rdpg_no_message":
        cfg["message"] = False
    if start is not None and algo in (*ONLINE, *OFF_POLICY):
        cfg["start_action"] = [float(x) for x in start]
    return cfg


def _ci(values: list[float]) -> tuple[float, float, float]:
    a = np.asarray(values, dtype=np.float64)
    m = float(a.mean())
    if len(a) < 2:
        return m, m, m
    h = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return m, m - h, m + h


def evaluate(algo: str, learner: Any, users: int, days: int, seed: int) -> tuple[float, dict[str, float]]:
    """Ground truth on `users` fresh users of `seed` (common random numbers: the same users and luck for every
    algorithm). The stage agents (MA cascade, MA-RDPG) act in the sequential view, each stage on the pool
    the upstream stages really kept; the others act on the single view's observation."""
    from training.envs.evaluate import evaluate_policy
    from training.rl.losses import shipped_policy
    from training.rl.sim import actor_policy, evaluate_sequential, joint_actor_stage_policy

    if algo in OFF_POLICY:
        from training.algorithms.ma_rdpg import message_policy

        actors = list(learner.shipped_actors())
        policy = message_policy(actors, message=algo == "ma_rdpg")
        r = evaluate_sequential(policy, learner.state_size, users, days, seed=seed)
        return float(r["per_user_day"]["watch_time"].mean()), r["per_decision"]
    # What ships (`shipped_policy`, the export path's accessor): TSCAC's, the MA cascade's and RCPO's best
    # feasible iterate, the last iterate for main-only and BC; MA-RDPG's `shipped_actors()` above.
    if algo == "ma_cascade":
        r = evaluate_sequential(joint_actor_stage_policy(shipped_policy(learner)), 0, users, days, seed=seed)
        return float(r["per_user_day"]["watch_time"].mean()), r["per_decision"]
    actor = shipped_policy(learner) if hasattr(learner, "actor") else learner
    ev = evaluate_policy(
        "rank",
        actor_policy(actor) if callable(getattr(actor, "mode", None)) else actor,
        n_users=users,
        days=days,
        seed=seed,
    )
    return ev.signals["watch_time"].mean, dict(ev.per_decision)


def fixed_fusion_search(
    users: int,
    days: int,
    seed: int,
    user_seed: int | None = None,
    margin: float = 0.0,
    known: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The best constant on `users` users of world `seed` (drawn from `user_seed`; None: the world's own).

    `margin` (ours; `--search-margin`, 0.03 in the one-world layout since the twelfth round, 0 in the split
    layout): a point counts as feasible only if every constraint clears its threshold × (1 + margin) on the
    search users (`FixedFusionConfig.margin`). Why: a team ships a rule only with room for sampling noise, and
    here the noise is large — one constant's per-decision comment rate moves by sd 0.021 between samples of
    1 000 users of one world (NOTES, eleventh round), so a point searched onto the threshold meets it on fresh
    users about half the time. 0.03 is the relative margin MA-RDPG's comment multiplier aims at
    (configs/rank/ma_rdpg.yaml), ≈ 1.6 sd of that noise on comment (1.1 × 0.03 = 0.033). Both the search
    users' value and a fresh sample's carry that noise, so their difference has sd ≈ 0.021·√2 ≈ 0.030 and
    a point that just clears 1.133 on its search users meets 1.1 on one fresh sample ~85 % of the time
    (Gaussian, one-sided; ~95 % if the search's value were exact); on tuning worlds 3100–3105 the kept
    points sit at 1.135–1.142 there. The value is ours, not a paper's. The table is judged as before (point
    values on the judged users, mean over seeds); only the search changed.

    `known`: rows of an earlier search table on the SAME users (world, user seed, users, days), whose points
    are not evaluated again — the evaluation is deterministic, so this only saves time."""
    from training.algorithms import fixed_fusion
    from training.envs import constant_policy
    from training.envs.evaluate import evaluate_policy
    from training.rl.task import TaskSpec

    task = TaskSpec.from_problem(RANK)
    memo = {_point_key(row["weights"]): {k: v for k, v in row.items() if k != "weights"} for row in known or []}

    def ev(action: np.ndarray) -> dict[str, float]:
        key = _point_key(action[:6])
        if key in memo and np.allclose(np.tile(action[:6], len(action) // 6), action):
            return memo[key]
        r = evaluate_policy(
            "rank", constant_policy("rank", action), n_users=users, days=days, seed=seed, user_seed=user_seed
        )
        return {**r.per_decision, "watch_time_per_user_day": r.signals["watch_time"].mean}

    # Ranked by the metric this benchmark reports (watch time per user-day, next-day returns included),
    # constraints per decision; every grid point sees the same users (same seed), so differences are paired.
    # Two coordinate sweeps after the shared-interaction grid: per-signal weights (e.g. clicks high, the
    # other interactions low), which the grid alone cannot express (NOTES, fourth round).
    cfg = fixed_fusion.FixedFusionConfig(objective="watch_time_per_user_day", refine_sweeps=2, margin=margin)
    res = fixed_fusion.train(cfg, task, ev)
    table = [{"weights": [float(x) for x in a[:6]], **m} for a, m in res.table]
    return res.action, table


def _point_key(weights: Any) -> tuple[float, ...]:
    """A constant's block of six weights as a dictionary key (grid values: exact to 4 decimals)."""
    return tuple(round(float(x), 4) for x in weights)


def searched_constant(
    world: int,
    users: int,
    days: int,
    user_seed: int | None = None,
    cache: Path | None = SEARCH_CACHE,
    margin: float = 0.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """`fixed_fusion_search`, read back from `cache` when this (world, user seed, users, days, margin) was
    searched before (the search is deterministic: ~75 evaluations, 2–5 min at 1 000 users on a shared core).
    Margin 0 keeps the file name of the searches before the twelfth round. A search with a margin reuses the
    evaluations of the same users' margin-0 search when that is cached (the same points give the same numbers)."""

    def path_for(m: float) -> Path | None:
        tail = "" if m == 0 else f"_margin{m:g}"
        return None if cache is None else cache / f"world{world}_users{user_seed}_n{users}_days{days}{tail}.json"

    path = path_for(margin)
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        return np.asarray(saved["action"], np.float32), saved["table"]
    plain = path_for(0.0)
    known = json.loads(plain.read_text())["table"] if margin and plain is not None and plain.is_file() else None
    action, table = fixed_fusion_search(users, days, world, user_seed, margin=margin, known=known)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"action": [float(x) for x in action], "margin": margin, "table": table}))
    return np.asarray(action, np.float32), table


def run_one(algo: str, seed: int, a: argparse.Namespace, best_fixed: np.ndarray) -> tuple[float, dict[str, float]]:
    """Train `algo` as seed `seed`'s plan says (fixed fusion: the constant searched for it, `best_fixed`) and
    judge it on the plan's judged users."""
    import torch

    from training.envs import constant_policy
    from training.train import train_problem

    torch.set_num_threads(1)
    plan = seed_plan(seed, a.worlds)
    eval_seed = plan.judge_world
    if algo == "fixed_fusion":
        return evaluate(algo, constant_policy("rank", best_fixed), a.users, a.days, eval_seed)
    run = {
        "seed": seed,
        "iterations": a.rdpg_iterations if algo in OFF_POLICY else a.iterations,
        "n_envs": a.n_envs,
        "rollout_steps": 32,
        "progress": False,
        "tensorboard": False,
        "plots": False,
        "out_dir": f"var/bench/rank_quality/{algo}/seed{seed}",
    }
    res = train_problem(
        "rank",
        "ma_rdpg" if algo in OFF_POLICY else algo,
        sim=True,
        config={
            "run": run,
            "algo": _algo_config(algo, a.lam, best_fixed if a.start == "incumbent" else None),
            "online": _online(algo),
            # the catalog of the plan's training world, the users of the training seed (BC's logs too)
            "sim": {} if plan.train_world is None else {"world_seed": plan.train_world},
        },
    )
    return evaluate(algo, res.learner, a.users, a.days, eval_seed)


def _paired(results: dict[str, dict[str, list[float]]], algo: str, ref: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds of the per-seed lift of `algo` over `ref` (same users per seed)."""
    return _ci([w / r - 1.0 for w, r in zip(results[algo]["watch_time"], ref, strict=True)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=5)
    # Sized for ~20 min on the shared 2-core host (issue 18): at 64 envs an iteration costs ~0.4 s (TSCAC,
    # main-only, RCPO), ~0.8 s (MA cascade, MA-RDPG) on an unloaded core — see NOTES, seventh round.
    p.add_argument("--iterations", type=int, default=40, help="on-policy learners: iterations × n_envs × 32 steps")
    p.add_argument("--rdpg-iterations", type=int, default=40, help="MA-RDPG: iterations × n_envs × 32 requests")
    p.add_argument("--n-envs", type=int, default=64, help="simulator rows per online iteration (× 32 steps)")
    # Evaluation users per seed. 1 000 (was 200): on two fixed constant policies (no training noise) on
    # worlds 3100-3104 the paired lift's 95% half-width over 5 seeds was 1.46 points at 200 users and
    # 0.60 at 1 000 (NOTES, ninth round); an evaluation costs ~5 s instead of ~1 s.
    p.add_argument("--users", type=int, default=1000)
    p.add_argument(
        "--worlds",
        choices=WORLDS,
        default="one",
        help="one: search, train and judge in world 1000+s (ours, the default); split: the old three-world layout",
    )
    p.add_argument(
        "--search-users",
        type=int,
        default=None,
        help="users of the fixed-fusion search; default 1 000 (--worlds one) or 200 (split: the old constant)",
    )
    p.add_argument(
        "--search-margin",
        type=float,
        default=None,
        help="relative safety margin of the fixed-fusion search's constraints; default 0.03 (one) or 0 (split)",
    )
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--lam", type=float, default=None, help="override λ of configs/rank/{tscac,ma_cascade}.yaml")
    p.add_argument(
        "--start",
        choices=("incumbent", "default"),
        default="incumbent",
        help="where the online learners start: the fixed-fusion search's constant (ours) or the production default",
    )
    p.add_argument("--algos", default=",".join(ALGOS))
    p.add_argument("--jobs", type=int, default=2, help="(algorithm, seed) runs in parallel processes")
    p.add_argument(
        "--markdown-only",
        action="store_true",
        help="rewrite rank_quality.md from rank_quality.json with the current NOTES; trains and evaluates nothing",
    )
    a = p.parse_args(argv)
    if a.markdown_only:
        _markdown_from_json()
        return
    if a.search_users is None:
        a.search_users = 1000 if a.worlds == "one" else 200
    if a.search_users < 2:
        raise SystemExit(f"--search-users: expected >= 2, got {a.search_users}")
    if a.search_margin is None:
        a.search_margin = 0.03 if a.worlds == "one" else 0.0
    if not 0.0 <= a.search_margin < 1.0:
        raise SystemExit(f"--search-margin: expected 0 <= margin < 1, got {a.search_margin}")
    from concurrent.futures import ProcessPoolExecutor

    from training.algorithms import fixed_fusion  # noqa: F401  (import errors surface before the long run)

    algos = [x for x in a.algos.split(",") if x]
    unknown = sorted(set(algos) - set(ALGOS))
    if unknown:
        raise SystemExit(f"--algos: unknown {unknown}; known: {list(ALGOS)}")
    t0 = time.perf_counter()
    # The constant of each seed (split: one constant, searched once, for every seed). It is searched when
    # fixed fusion is in the table or the learners warm-start at it; otherwise the production default.
    constants: dict[int, np.ndarray] = {}
    grids: dict[int, list[dict[str, Any]]] = {}
    for seed in range(a.seeds):
        plan = seed_plan(seed, a.worlds)
        if "fixed_fusion" in algos or a.start == "incumbent":
            constants[seed], grids[seed] = searched_constant(
                plan.search_world, a.search_users, a.days, plan.search_users, margin=a.search_margin
            )
            print(
                f"seed {seed}: constant {np.round(constants[seed][:6].astype(float), 2).tolist()} (searched in world "
                f"{plan.search_world} on {a.search_users} users of seed {plan.user_seeds()['search']}, margin "
                f"{a.search_margin:g}; "
                f"plan {plan}) [{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
        else:
            constants[seed], grids[seed] = np.asarray(RANK.default_action, np.float32), []
    results: dict[str, dict[str, list[float]]] = {k: {"watch_time": []} for k in algos}
    # The on-policy learners are the slowest: submitted first so the pool drains evenly.
    order = sorted(((algo, seed) for seed in range(a.seeds) for algo in algos), key=lambda t: t[0] not in ONLINE)
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = {job: pool.submit(run_one, job[0], job[1], a, constants[job[1]]) for job in order}
        for seed in range(a.seeds):
            for algo in algos:
                wt, pd = futures[(algo, seed)].result()
                results[algo]["watch_time"].append(wt)
                for c in RANK.constraints:
                    results[algo].setdefault(c.signal, []).append(pd[c.signal])
                print(
                    f"seed {seed} {algo}: watch_time/user-day {wt:.1f}  "
                    + " ".join(f"{c.signal}={pd[c.signal]:.3f}" for c in RANK.constraints)
                    + f"  [{time.perf_counter() - t0:.0f} s]",
                    flush=True,
                )
    metrics: list[Metric] = []
    summary: dict[str, Any] = {}
    refs = [k for k in ("bc", "fixed_fusion") if k in results]
    ref_value = max((_ci(results[k]["watch_time"])[0] for k in refs), default=None)
    # Paired per seed: every algorithm is evaluated on the same users of that seed, so the lift over
    # the better of BC and fixed fusion on those users removes the (large) between-user variance.
    ref_per_seed = [max(results[k]["watch_time"][i] for k in refs) for i in range(a.seeds)] if refs else None
    for algo in algos:
        m, lo, hi = _ci(results[algo]["watch_time"])
        cons = {c.signal: _ci(results[algo][c.signal])[0] for c in RANK.constraints}
        ok = all(c.satisfied(cons[c.signal]) for c in RANK.constraints)
        summary[algo] = {
            "watch_time": m,
            "ci": [lo, hi],
            "constraints": cons,
            "all_constraints_satisfied": ok,
            "per_seed": results[algo],
        }
        base = ("rank.best_of_bc_and_fixed_fusion.watch_time_per_user_day", ref_value) if ref_value else None
        metrics.append(Metric(f"rank.{algo}.watch_time_per_user_day", m, "s/user-day", ci=(lo, hi), baseline=base))
        if ref_per_seed is not None:
            lm, llo, lhi = _paired(results, algo, ref_per_seed)
            summary[algo]["paired_lift"] = {"mean": lm, "ci": [llo, lhi]}
            metrics.append(
                Metric(
                    f"rank.{algo}.lift",
                    lm,
                    "fraction",
                    ci=(llo, lhi),
                    goal=(">=", 0.03) if algo in GOAL_ALGOS else None,
                    note="watch time per user-day incl. returns, paired per seed against max(bc, fixed_fusion)",
                )
            )
        for c in RANK.constraints:
            metrics.append(
                Metric(
                    f"rank.{algo}.constraint.{c.signal}",
                    cons[c.signal],
                    "per decision",
                    goal=(c.direction, c.threshold),
                )
            )
    # What the message is worth: MA-RDPG against the MA cascade and against itself without communication.
    comparisons: dict[str, Any] = {}
    for other in ("ma_cascade", "ma_rdpg_no_message"):
        if "ma_rdpg" in results and other in results:
            cm, clo, chi = _paired(results, "ma_rdpg", results[other]["watch_time"])
            comparisons[f"ma_rdpg_vs_{other}"] = {"mean": cm, "ci": [clo, chi]}
            metrics.append(
                Metric(
                    f"rank.ma_rdpg.lift_vs_{other}",
                    cm,
                    "fraction",
                    ci=(clo, chi),
                    note="paired per seed (same users, common random numbers)",
                )
            )
    goal_met = None
    if all(k in summary for k in (*GOAL_ALGOS, "main_only")) and ref_per_seed is not None:
        goal_met = bool(
            all(
                summary[k]["paired_lift"]["mean"] >= 0.03 and summary[k]["all_constraints_satisfied"]
                for k in GOAL_ALGOS
            )
            and not summary["main_only"]["all_constraints_satisfied"]
        )
    extra = {
        "summary": summary,
        "comparisons": comparisons,
        "goal_met": goal_met,
        "seeds": a.seeds,
        "iterations": a.iterations,
        "rdpg_iterations": a.rdpg_iterations,
        "n_envs": a.n_envs,
        "users": a.users,
        "search_users": a.search_users,
        "search_margin": a.search_margin,
        "days": a.days,
        "lam_override": a.lam,
        "start": a.start,
        "jobs": a.jobs,
        "worlds": a.worlds,
        "seed_plans": {seed: seed_plan(seed, a.worlds).__dict__ for seed in range(a.seeds)},
        # one constant per seed (split: the same one for every seed); the grid with each point's rates on the
        # search users (a shared search appears once per seed)
        "fixed_fusion_constants": {seed: [float(x) for x in c] for seed, c in constants.items()},
        "fixed_fusion_grids": {seed: g for seed, g in grids.items()},
        "seconds": time.perf_counter() - t0,
    }
    write_result(
        "rank_quality",
        metrics,
        command="python -m benchmarks.rank_quality " + " ".join(sys.argv[1:] if argv is None else argv),
        extra=extra,
    )
    _markdown(summary, comparisons, goal_met, a, constants, grids)


def _markdown_from_json() -> None:
    """rank_quality.md again from the recorded run (benchmarks/results/rank_quality.json), e.g. after NOTES changed."""
    d = json.loads((RESULTS_DIR / "rank_quality.json").read_text())
    fields = ("seeds", "users", "days", "iterations", "n_envs", "rdpg_iterations", "start", "search_users")
    a = argparse.Namespace(
        **{k: d[k] for k in fields},
        lam=d["lam_override"],
        worlds=d.get("worlds", "split"),
        search_margin=d.get("search_margin", 0.0),
    )
    constants = {int(k): np.asarray(v, np.float32) for k, v in d.get("fixed_fusion_constants", {}).items()}
    grids = {int(k): v for k, v in d.get("fixed_fusion_grids", {}).items()}
    _markdown(d["summary"], d["comparisons"], d["goal_met"], a, constants, grids)


def _on_search_users(constant: np.ndarray, grid: list[dict[str, Any]]) -> dict[str, Any]:
    """The search's own row for `constant` (its rates on the search users); {} if the grid does not hold it."""
    for row in grid:
        if np.allclose(row["weights"], constant[:6]):
            return row
    return {}


def _per_seed_lines(
    summary: dict[str, Any], constants: dict[int, np.ndarray], grids: dict[int, list[dict[str, Any]]]
) -> list[str]:
    """Per seed: the constant, its comment rate on the search and the judged users, and each learner's lift."""
    if "fixed_fusion" not in summary:
        return []
    learners = [k for k in (*GOAL_ALGOS, "ma_rdpg_no_message", "main_only", "rcpo") if k in summary]
    ref = summary["fixed_fusion"]["per_seed"]
    lines = [
        "Per seed: the constant (the same block at every stage), its comment rate on the search users and on "
        "the judged users, and each learner's lift over it (comment rate in brackets).",
        "",
        "| seed | constant | comment (search) | comment (judged) | " + " | ".join(learners) + " |",
        "|" + "---|" * (4 + len(learners)),
    ]
    for i, seed in enumerate(sorted(constants)):
        row = _on_search_users(constants[seed], grids.get(seed, []))
        searched = f"{row['comment']:.3f}" if row else "–"
        cells = [
            f"{100 * (summary[k]['per_seed']['watch_time'][i] / ref['watch_time'][i] - 1):+.1f}% "
            f"({summary[k]['per_seed']['comment'][i]:.3f})"
            for k in learners
        ]
        constant = np.round(constants[seed][:6].astype(float), 2).tolist()
        lines.append(f"| {seed} | {constant} | {searched} | {ref['comment'][i]:.3f} | " + " | ".join(cells) + " |")
    return ["", *lines]


def _markdown(
    summary: dict[str, Any],
    comparisons: dict[str, Any],
    goal_met: bool | None,
    a: argparse.Namespace,
    constants: dict[int, np.ndarray],
    grids: dict[int, list[dict[str, Any]]],
) -> None:
    cons = list(RANK.constraints)
    head = (
        "| algorithm | watch time / user-day (95% CI) | paired lift vs best of BC & fixed (95% CI) | "
        + " | ".join(f"{c.signal} (≥ {c.threshold:g})" for c in cons)
        + " | all constraints |"
    )
    lam = "λ from configs/rank/{tscac,ma_cascade}.yaml" + (f", overridden to {a.lam}" if a.lam is not None else "")
    start = (
        "Every online learner starts exactly at the fixed-fusion constant below (warm start at the incumbent, "
        "ours: `start_action`) and learns deviations from it."
        if a.start == "incumbent"
        else "Every online learner starts at the production default weights."
    )
    layout = (
        f"Worlds: one per seed (ours, `--worlds one`). For seed s, world W = 1000 + s: the fixed-fusion constant "
        f"is searched in W on {a.search_users} users of user seed 20 000 + s"
        + (
            f", every constraint required to clear its threshold × {1 + a.search_margin:g} there (safety margin, ours)"
            if a.search_margin
            else ""
        )
        + "; every learner warm-starts at it and "
        "trains on W's catalog with the users of seed s (BC on behaviour logs of the same); every policy, the "
        "constant included, is judged on W's own users."
        if a.worlds == "one"
        else f"Worlds: split (the layout before the eleventh round, `--worlds split`): learners train in world s, "
        f"are judged on world 1000 + s, and one constant is searched on {a.search_users} users of world 10 000."
    )
    lines = [
        f"# rank policy quality on simulators 2.0 ({a.seeds} seeds, {a.users} users × {a.days} days per seed)",
        "",
        f"Training budgets: on-policy learners (TSCAC, MA cascade, main-only, RCPO) {a.iterations} iterations × "
        f"{a.n_envs} envs × 32 steps; MA-RDPG {a.rdpg_iterations} iterations × {a.n_envs} rows × 32 requests (its "
        f"own replay loop). {lam}. {start} Constraint columns: per-decision means over seeds. "
        "Ground truth on fresh users with common random numbers (the same users and luck for every algorithm); "
        "the stage agents (MA cascade, MA-RDPG) act in the sequential view, each stage on the pool the upstream "
        "stages really kept (`training.rl.sim.evaluate_sequential`), and the MA cascade also *trains* in it "
        "(the collector's `act_in_turn`). Fixed fusion: the "
        "constant weights with the most watch time per user-day among those meeting every constraint (or, when "
        "none does, the least violation), from a grid refined by two coordinate sweeps over the six per-signal "
        "weights (the same at every stage), searched on held-out users.",
        "",
        layout,
        "",
        head,
        "|" + "---|" * (4 + len(cons)),
    ]
    for algo, s in summary.items():
        pl = s.get("paired_lift")
        rel = f"{pl['mean'] * 100:+.1f}% [{pl['ci'][0] * 100:+.1f}, {pl['ci'][1] * 100:+.1f}]" if pl else "–"
        lines.append(
            f"| {algo} | {s['watch_time']:.1f} [{s['ci'][0]:.1f}, {s['ci'][1]:.1f}] | {rel} | "
            + " | ".join(f"{s['constraints'][c.signal]:.3f}" for c in cons)
            + f" | {'yes' if s['all_constraints_satisfied'] else 'NO'} |"
        )
    lines += _per_seed_lines(summary, constants, grids)
    for name, c in comparisons.items():
        lines.append("")
        lines.append(
            f"`{name}` (paired per seed): {c['mean'] * 100:+.1f}% [{c['ci'][0] * 100:+.1f}, {c['ci'][1] * 100:+.1f}]"
        )
    lines += [
        "",
        "Goal (TSCAC, MA cascade and MA-RDPG ≥ +3% paired lift over the best of BC and fixed fusion with every constraint met; "
        f"main-only violates ≥ 1): **{'met' if goal_met else 'not met'}**.",
        "",
        NOTES,
    ]
    (RESULTS_DIR / "rank_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
