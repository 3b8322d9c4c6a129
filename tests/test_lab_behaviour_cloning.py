"""The behaviour-cloning lab on a tiny budget: the render-free joint-space transfer-cube environment starts where the
recordings start and its servos follow a recording's joint targets (a clean demonstration replayed open loop picks
the cube up, a missed grasp does not; success is gym-aloha's reward 4), training is deterministic per seed and fits
its demonstrations, and the comparison's paired interval and p-value match scipy's paired t-test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.lab.behaviour_cloning import (Budget, Comparison, Demo, TransferCubeJointEnv, blind_sim, compare,
                                         demo_from_content, replay_in_joint_env, rollout, success_rate, train_policy)


class Replay:
    """An open-loop policy: the recorded actions, one per call."""

    def __init__(self, actions: np.ndarray) -> None:
        self.actions, self.t = actions, 0

    def __call__(self, _state: np.ndarray) -> np.ndarray:
        a = self.actions[min(self.t, len(self.actions) - 1)]
        self.t += 1
        return a


@pytest.fixture(scope="module")
def demos():
    """A clean demonstration and a missed grasp, recorded (camera off) in the end-effector model."""
    from assay.trajectories.sim import Operator, record_episode

    sim = blind_sim()
    return (record_episode(seed=0, operator=Operator(tremor=0.0), sim=sim),
            record_episode(seed=1, operator=Operator(tremor=0.0, grasp_miss=0.12), sim=sim))


def test_joint_env_replays_a_recording(demos):
    good, missed = demos
    assert good.success and not missed.success
    env = TransferCubeJointEnv()
    obs, _ = env.reset(seed=good.seed)
    # the start: gym-aloha's resting arms, and the cube where the recording had it (on the table: x, y)
    from gym_aloha.constants import START_ARM_POSE

    assert np.allclose(obs[:6], START_ARM_POSE[:6]) and np.allclose(obs[7:13], START_ARM_POSE[8:14])
    assert np.allclose(obs[14:16], good.env_state[0, :2], atol=1e-6)
    joint = replay_in_joint_env(good, env)  # from the recording's own first pose
    assert np.allclose(joint.state[0], good.state[0], atol=1e-4) and np.array_equal(joint.action, good.action)
    arms = [*range(6), *range(7, 13)]
    # the servos follow the recording's joint targets (to within a few hundredths of a radian on average) ...
    lag = float(np.abs(joint.state[1:, arms] - good.action[:-1, arms]).mean())
    assert lag < 0.05, lag
    # ... and pick the cube up (reward 2: the right gripper holds it off the table); the missed grasp does not
    assert joint.reward.max() >= 2 and replay_in_joint_env(missed, env).reward.max() < 2
    # a rollout is a success exactly when the reward reached 4 (gym-aloha's definition)
    assert rollout(Replay(good.action), env, seed=good.seed, max_steps=len(good)) == bool(joint.reward.max() >= 4)
    env.close()
    assert success_rate(Replay(missed.action), TransferCubeJointEnv, episodes=1, max_steps=len(missed),
                        first_seed=missed.seed) == 0.0


def test_training_is_deterministic_and_fits_the_demonstrations(demos):
    good, _ = demos
    demo = demo_from_content({"episode_index": 3, "frames": {"observation.state": good.state.tolist(),
                                                             "observation.environment_state": good.env_state.tolist(),
                                                             "action": good.action.tolist()}},
                             ("observation.state", "observation.environment_state"))
    assert demo.state.shape == (len(good), 21) and demo.action.shape == (len(good), 14)
    budget = Budget(steps=150, batch=64, hidden=64, lr=3e-3)
    p1, p2 = train_policy([demo], seed=0, budget=budget), train_policy([demo], seed=0, budget=budget)
    p3 = train_policy([demo], seed=1, budget=budget)
    x = demo.state[::17]
    y1 = np.stack([p1(s) for s in x])
    assert np.array_equal(y1, np.stack([p2(s) for s in x]))
    assert not np.allclose(y1, np.stack([p3(s) for s in x]))
    # far better than always answering the mean action (what an untrained or broken fit would amount to)
    mse = float(np.mean((np.stack([p1(s) for s in demo.state]) - demo.action) ** 2))
    baseline = float(np.mean((demo.action - demo.action.mean(0)) ** 2))
    assert mse < 0.2 * baseline, (mse, baseline)
    with pytest.raises(ValueError, match="no demonstrations"):
        train_policy([], budget=budget)
    with pytest.raises(ValueError, match="states but"):
        Demo(np.zeros((3, 2)), np.zeros((4, 2)))


def test_comparison_statistics_match_scipy(demos):
    from scipy.stats import ttest_rel

    c = Comparison({"raw": [0.1, 0.2, 0.15, 0.05, 0.2], "curated": [0.4, 0.3, 0.5, 0.45, 0.35]}, list(range(5)), 20,
                   Budget())
    diff, p = c.difference("curated", "raw")
    ref = ttest_rel(c.rates["curated"], c.rates["raw"])
    assert math.isclose(p, ref.pvalue, rel_tol=1e-9) and diff.mean == pytest.approx(0.26)
    assert diff.lo > 0 and "better" in c.verdict("curated", "raw")
    same = Comparison({"raw": [0.2, 0.3, 0.1], "curated": [0.3, 0.2, 0.15]}, [0, 1, 2], 20, Budget())
    assert "NOT significant" in same.verdict("curated", "raw")
    assert "curated - raw" in same.table() and same.to_dict()["differences"]["curated-raw"]["p"] > 0.05


def test_compare_runs_every_arm_on_a_tiny_budget(demos):
    good, missed = demos
    arms = {"raw": [Demo(np.concatenate([e.state, e.env_state], 1), e.action) for e in (good, missed)],
            "curated": [Demo(np.concatenate([good.state, good.env_state], 1), good.action)]}
    lines: list[str] = []
    result = compare(arms, TransferCubeJointEnv, seeds=[0, 1], episodes=1, max_steps=20,
                     budget=Budget(steps=20, batch=32, hidden=16), milestone=2, progress=lines.append)
    assert set(result.rates) == {"raw", "curated"} and all(len(r) == 2 for r in result.rates.values())
    assert all(0.0 <= x <= 1.0 for r in result.rates.values() for x in r)
    assert result.demos == {"raw": 2, "curated": 1} and result.frames["raw"] == len(good) + len(missed)
    assert set(result.milestone_rates) == {"raw", "curated"} and "reward >= 2" in result.table()
    assert len(lines) == 4 and lines[0].startswith("seed 0 raw: success")
