"""Does curation matter for robot demonstrations? Behaviour cloning on curated versus raw demonstrations.

A tiny policy (an MLP from state to action, torch on CPU) is trained by behaviour cloning on each set of
demonstrations with the same budget (gradient steps, batch size, architecture), then rolled out in the simulator the
demonstrations came from; its success rate is measured over evaluation episodes with fixed start seeds, and the
whole train-and-evaluate is repeated over training seeds. The comparison reports each arm's mean success rate with a
Student-t interval over seeds, and the paired difference (same seed, same evaluation starts) with its own interval
and p-value, and says plainly when the difference is not significant.

The simulator is any Gymnasium-style environment: ``reset(seed=...) -> (obs, info)``, ``step(action) -> (obs,
reward, terminated, truncated, info)``, success read from ``info["is_success"]`` (or ``info["success"]``), the
observation being the state vector the demonstrations recorded. :class:`TransferCubeJointEnv` is the one the
benchmark uses: gym-aloha's joint-space transfer-cube task, the simulator ``assay.trajectories.sim`` records
demonstrations in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from assay.lab.stats import MeanCI, mean_ci


@dataclass
class Demo:
    """One demonstration: ``state`` (T, state_dim) and ``action`` (T, action_dim), frame-aligned."""

    state: np.ndarray
    action: np.ndarray
    episode_index: int | None = None

    def __post_init__(self) -> None:
        self.state = np.asarray(self.state, dtype=np.float32)
        self.action = np.asarray(self.action, dtype=np.float32)
        if self.state.ndim == 1:
            self.state = self.state[:, None]
        if self.action.ndim == 1:
            self.action = self.action[:, None]
        if len(self.state) != len(self.action):
            raise ValueError(f"episode {self.episode_index}: {len(self.state)} states but {len(self.action)} actions")


def demo_from_content(content: dict[str, Any], state_keys: Sequence[str] = ("observation.state",),
                      action_key: str = "action") -> Demo:
    """A :class:`Demo` from an episode record's content (per-frame columns under ``frames`` or at the top level, or
    a list of per-frame dicts: the layouts ``assay.annotate.trajectory_task`` accepts). The state is the
    concatenation of ``state_keys`` (e.g. the joints and ``observation.environment_state``, the object's pose)."""
    frames = content.get("frames", content)
    if isinstance(frames, list):
        cols = {k: [f[k] for f in frames] for k in (*state_keys, action_key)}
    else:
        cols = frames
    parts = [np.asarray(cols[k], np.float32) for k in state_keys]
    state = np.concatenate([p if p.ndim == 2 else p[:, None] for p in parts], axis=1)
    return Demo(state, np.asarray(cols[action_key], np.float32), content.get("episode_index"))


class Policy:
    """A trained MLP with its input/output normalisation; ``policy(state) -> action`` (numpy in, numpy out).
    ``delta``: the network predicts ``action - state[:action_dim]`` (joint targets as a step from where the joints
    are), which is added back."""

    def __init__(self, net: Any, s_mean: np.ndarray, s_std: np.ndarray, a_mean: np.ndarray, a_std: np.ndarray,
                 delta: bool = False):
        self.net, self.s_mean, self.s_std, self.a_mean, self.a_std = net, s_mean, s_std, a_mean, a_std
        self.delta = delta

    def __call__(self, state: np.ndarray) -> np.ndarray:
        import torch

        state = np.asarray(state, np.float32).reshape(-1)
        x = ((state - self.s_mean) / self.s_std)[None]
        with torch.no_grad():
            y = self.net(torch.from_numpy(x)).numpy()[0] * self.a_std + self.a_mean
        return y + state[:len(y)] if self.delta else y


@dataclass(frozen=True)
class Budget:
    """The same for every arm: gradient steps, batch size, hidden width and depth, learning rate, and whether the
    network predicts the action as a step from the current joints (``delta``; needs the state to start with the
    joints the action targets, as ``observation.state`` and ``action`` do in LeRobot's ALOHA datasets)."""

    steps: int = 3000
    batch: int = 256
    hidden: int = 128
    layers: int = 2
    lr: float = 1e-3
    delta: bool = True


def train_policy(demos: Sequence[Demo], *, seed: int = 0, budget: Budget = Budget()) -> Policy:
    """Behaviour cloning: minimise the mean squared error of normalised actions over all (state, action) frames of
    ``demos``, with Adam for ``budget.steps`` minibatch steps. Deterministic for a seed (one CPU thread)."""
    import torch
    from torch import nn

    if not demos:
        raise ValueError("no demonstrations to train on")
    s = np.concatenate([d.state for d in demos]).astype(np.float32)
    a = np.concatenate([d.action for d in demos]).astype(np.float32)
    if len(s) == 0:
        raise ValueError("the demonstrations have no frames")
    if budget.delta:
        if s.shape[1] < a.shape[1]:
            raise ValueError("delta actions need a state that starts with the action's joints")
        a = a - s[:, :a.shape[1]]
    s_mean, s_std = s.mean(0), s.std(0) + 1e-6
    a_mean, a_std = a.mean(0), a.std(0) + 1e-6
    xs = torch.from_numpy((s - s_mean) / s_std)
    ys = torch.from_numpy((a - a_mean) / a_std)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        dims = [s.shape[1]] + [budget.hidden] * budget.layers
        mods: list[Any] = []
        for i, o in zip(dims, dims[1:]):
            mods += [nn.Linear(i, o), nn.ReLU()]
        net = nn.Sequential(*mods, nn.Linear(dims[-1], a.shape[1]))
        opt = torch.optim.Adam(net.parameters(), lr=budget.lr)
        for _ in range(budget.steps):
            idx = torch.randint(0, len(xs), (min(budget.batch, len(xs)),), generator=gen)
            loss = nn.functional.mse_loss(net(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
    finally:
        torch.set_num_threads(threads)
    return Policy(net, s_mean, s_std, a_mean, a_std, delta=budget.delta)


def _is_success(info: dict[str, Any]) -> bool:
    return bool(info.get("is_success", info.get("success", False)))


def rollout_outcome(policy: Callable[[np.ndarray], np.ndarray], env: Any, *, seed: int, max_steps: int
                    ) -> tuple[bool, float]:
    """One episode of ``policy`` in ``env`` from the start ``seed``: (the environment reported success, the best
    reward reached). The observation is the state vector the policy reads."""
    obs, info = env.reset(seed=seed)
    best = -math.inf
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(policy(np.asarray(obs, np.float32)))
        best = max(best, float(reward))
        if _is_success(info) or terminated or truncated:
            break
    return _is_success(info), best


def rollout(policy: Callable[[np.ndarray], np.ndarray], env: Any, *, seed: int, max_steps: int) -> bool:
    """One episode of ``policy`` in ``env`` from the start ``seed``; True when the environment reports success."""
    return rollout_outcome(policy, env, seed=seed, max_steps=max_steps)[0]


def evaluate(policy: Callable[[np.ndarray], np.ndarray], make_env: Callable[[], Any], *, episodes: int,
             max_steps: int, first_seed: int = 10_000) -> list[tuple[bool, float]]:
    """:func:`rollout_outcome` from the start seeds ``first_seed``, ``first_seed + 1``, … (the same starts for every
    policy, so arms are compared on the same situations)."""
    env = make_env()
    try:
        return [rollout_outcome(policy, env, seed=first_seed + k, max_steps=max_steps) for k in range(episodes)]
    finally:
        close = getattr(env, "close", None)
        if close:
            close()


def success_rate(policy: Callable[[np.ndarray], np.ndarray], make_env: Callable[[], Any], *, episodes: int,
                 max_steps: int, first_seed: int = 10_000) -> float:
    """The share of ``episodes`` rollouts (see :func:`evaluate`) that succeed."""
    outcomes = evaluate(policy, make_env, episodes=episodes, max_steps=max_steps, first_seed=first_seed)
    return sum(ok for ok, _ in outcomes) / episodes


def blind_sim(width: int = 8, height: int = 8) -> Any:
    """``assay.trajectories.sim.TransferCubeSim`` with its camera off (black frames): same physics and operator, for
    demonstrations a state policy learns from. Software rendering costs ~0.3 s a frame on a busy CPU, the physics
    ~3 ms a step, so a blind recording is ~100x faster."""
    from assay.trajectories.sim import TransferCubeSim

    class BlindSim(TransferCubeSim):
        def render(self) -> np.ndarray:
            return np.zeros((self.height, self.width, 3), np.uint8)

    return BlindSim(width, height)


def replay_in_joint_env(episode: Any, env: "TransferCubeJointEnv | None" = None) -> Any:
    """``episode`` (an ``assay.trajectories.sim.Episode`` recorded with the end-effector model) as the joint-space
    robot executes it: its actions replayed open loop in :class:`TransferCubeJointEnv` from the same start, the
    states and rewards re-recorded there (ACT's own recipe for simulated demonstrations: script in end-effector
    space, replay the joint trajectory, keep what the joint-space robot did). Training data and evaluation then
    share one dynamics. Frames are black (8x8): the camera is off."""
    from assay.trajectories.sim import Episode

    env = env or TransferCubeJointEnv()
    obs, _ = env.reset(seed=episode.seed, options={"start_state": episode.state[0]})
    states, rewards = [], []
    for a in episode.action:
        states.append(obs)
        obs, reward, _term, _trunc, _info = env.step(a)
        rewards.append(reward)
    s = np.asarray(states, np.float32)
    return Episode(state=s[:, :14], env_state=s[:, 14:], action=np.asarray(episode.action, np.float32),
                   reward=np.asarray(rewards, np.float32), frames=np.zeros((len(s), 8, 8, 3), np.uint8),
                   seed=episode.seed, task=episode.task, info={**episode.info, "replayed_in": "joint_env"})


class TransferCubeJointEnv:
    """gym-aloha's joint-space transfer-cube task (its MuJoCo model, position-controlled joints, START_ARM_POSE and
    its contact reward: 4 = the left gripper holds the cube in the air) without the cameras: a state policy needs
    none, and rendering three 640x480 cameras a step is most of the cost of gym-aloha's own ``AlohaEnv`` on a CPU.
    The observation is the 14 joint positions (grippers normalised, as recorded in ``observation.state``) followed
    by the cube's pose (``observation.environment_state``); the cube is placed as the demonstrations' generator
    places it (``assay.trajectories.sim.sample_box_xyz`` with ``numpy.random.default_rng(seed)``). The arms start in
    ``start_state`` (14 values in the ``observation.state`` layout; default gym-aloha's ``START_ARM_POSE``), or in
    ``reset(options={"start_state": …})``: evaluate where the demonstrations start."""

    def __init__(self, start_state: np.ndarray | None = None) -> None:
        from dm_control import mujoco as dm_mujoco
        from gym_aloha.constants import ASSETS_DIR, DT

        self.physics = dm_mujoco.Physics.from_xml_path(str(ASSETS_DIR / "bimanual_viperx_transfer_cube.xml"))
        self.n_sub = int(round(DT / self.physics.model.opt.timestep))
        self.start_state = None if start_state is None else np.asarray(start_state, float)

    @staticmethod
    def _qpos16(state: np.ndarray) -> np.ndarray:
        """The 16 arm joint positions (two fingers per gripper) of a 14-value state (normalised grippers)."""
        from gym_aloha.constants import unnormalize_puppet_gripper_position as grip

        gl, gr = grip(state[6]), grip(state[13])
        return np.concatenate([state[:6], [gl, -gl], state[7:13], [gr, -gr]])

    def _obs(self) -> np.ndarray:
        from gym_aloha.tasks.sim import BimanualViperXTask

        return np.concatenate([BimanualViperXTask.get_qpos(self.physics), self.physics.data.qpos[16:23]]
                              ).astype(np.float32)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        from gym_aloha.constants import START_ARM_POSE

        from assay.trajectories.sim import sample_box_xyz

        box = sample_box_xyz(np.random.default_rng(seed))
        start = (options or {}).get("start_state", self.start_state)
        arms = np.asarray(START_ARM_POSE, float) if start is None else self._qpos16(np.asarray(start, float))
        p = self.physics
        with p.reset_context():
            p.data.qpos[:16] = arms
            np.copyto(p.data.ctrl, arms)
            p.data.qpos[16:23] = np.concatenate([box, [1.0, 0.0, 0.0, 0.0]])
        return self._obs(), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        from gym_aloha.tasks.sim import TransferCubeTask

        self.physics.set_control(self._qpos16(np.asarray(action, dtype=float)))
        self.physics.step(self.n_sub)
        reward = TransferCubeTask.get_reward(None, self.physics)  # type: ignore[arg-type]
        return self._obs(), float(reward), reward == 4, False, {"is_success": reward == 4}

    def close(self) -> None:
        self.physics.free()


@dataclass
class Comparison:
    """Per arm: success rate per seed and its mean with a Student-t interval; per pair with the first arm (the
    reference): the paired difference over seeds, its interval and a paired t-test p-value."""

    rates: dict[str, list[float]]
    seeds: list[int]
    episodes: int
    budget: Budget
    frames: dict[str, int] = field(default_factory=dict)
    demos: dict[str, int] = field(default_factory=dict)
    milestone: float | None = None  # a reward short of success (ALOHA transfer cube: 2 = cube lifted)
    milestone_rates: dict[str, list[float]] = field(default_factory=dict)

    def ci(self, arm: str, milestone: bool = False) -> MeanCI:
        return mean_ci((self.milestone_rates if milestone else self.rates)[arm])

    def difference(self, arm: str, reference: str, milestone: bool = False) -> tuple[MeanCI, float]:
        """(mean of arm − reference over seeds with its interval, two-sided paired t-test p-value)."""
        rates = self.milestone_rates if milestone else self.rates
        diffs = [x - y for x, y in zip(rates[arm], rates[reference])]
        ci = mean_ci(diffs)
        if len(diffs) < 2:
            return ci, math.nan
        sd = float(np.std(diffs, ddof=1))
        if sd == 0:
            return ci, (1.0 if ci.mean == 0 else 0.0)
        from scipy.stats import t

        stat = ci.mean / (sd / math.sqrt(len(diffs)))
        return ci, float(2 * t.sf(abs(stat), len(diffs) - 1))

    def verdict(self, arm: str, reference: str, milestone: bool = False) -> str:
        diff, p = self.difference(arm, reference, milestone)
        if diff.n < 2 or math.isnan(diff.lo):
            return "not enough seeds to tell"
        if diff.lo > 0:
            return f"{arm} is better than {reference} (the 95% interval of the difference excludes 0; p = {p:.3g})"
        if diff.hi < 0:
            return f"{arm} is worse than {reference} (the 95% interval of the difference excludes 0; p = {p:.3g})"
        return f"NOT significant at 95%: the interval of the difference contains 0 (p = {p:.3g})"

    def table(self) -> str:
        arms = list(self.rates)
        ref = arms[0]
        blocks = [("success", False)]
        if self.milestone is not None and self.milestone_rates:
            blocks.append((f"reward >= {self.milestone:g}", True))
        lines = []
        for title, ms in blocks:
            head = f"{title}: mean [95% CI] over {len(self.seeds)} seeds"
            lines.append(f"{'arm':<12} {'demos':>6} {'frames':>7}  {head:<46} per seed")
            for arm in arms:
                ci = self.ci(arm, ms)
                rates = (self.milestone_rates if ms else self.rates)[arm]
                row = f"{arm:<12} {self.demos.get(arm, 0):>6} {self.frames.get(arm, 0):>7}  "
                lines.append(f"{row}{ci.mean:.3f} [{ci.lo:.3f}, {ci.hi:.3f}]".ljust(75)
                             + " ".join(f"{r:.2f}" for r in rates))
            for arm in arms[1:]:
                diff, p = self.difference(arm, ref, ms)
                lines.append(f"  {arm} - {ref}: {diff.mean:+.3f} [{diff.lo:+.3f}, {diff.hi:+.3f}] (paired over "
                             f"seeds): {self.verdict(arm, ref, ms)}")
            lines.append("")
        return "\n".join(lines).rstrip()

    def to_dict(self) -> dict[str, Any]:
        arms = list(self.rates)
        out: dict[str, Any] = {"seeds": self.seeds, "episodes": self.episodes, "budget": self.budget.__dict__,
                               "milestone": self.milestone, "arms": {}, "differences": {}}
        for a in arms:
            out["arms"][a] = {"rates": self.rates[a], "ci": self.ci(a).to_dict(), "demos": self.demos.get(a),
                              "frames": self.frames.get(a)}
            if self.milestone_rates:
                out["arms"][a]["milestone_rates"] = self.milestone_rates[a]
                out["arms"][a]["milestone_ci"] = self.ci(a, True).to_dict()
        for a in arms[1:]:
            for ms, suffix in ((False, ""), (True, " (milestone)")):
                if ms and not self.milestone_rates:
                    continue
                ci, p = self.difference(a, arms[0], ms)
                out["differences"][f"{a}-{arms[0]}{suffix}"] = {"ci": ci.to_dict(), "p": p,
                                                               "verdict": self.verdict(a, arms[0], ms)}
        return out


def compare(arms: dict[str, Sequence[Demo]], make_env: Callable[[], Any], *, seeds: Iterable[int], episodes: int,
            max_steps: int, budget: Budget = Budget(), milestone: float | None = None,
            progress: Callable[[str], None] | None = None) -> Comparison:
    """Train one policy per (arm, seed) with the same ``budget`` and measure its success rate on the same
    ``episodes`` evaluation starts (and the share of rollouts whose reward reached ``milestone``). The first arm is
    the reference the others are compared with."""
    seeds = list(seeds)
    rates: dict[str, list[float]] = {name: [] for name in arms}
    reached: dict[str, list[float]] = {name: [] for name in arms}
    for seed in seeds:
        for name, demos in arms.items():
            policy = train_policy(demos, seed=seed, budget=budget)
            outcomes = evaluate(policy, make_env, episodes=episodes, max_steps=max_steps)
            rates[name].append(sum(ok for ok, _ in outcomes) / episodes)
            if milestone is not None:
                reached[name].append(sum(best >= milestone for _, best in outcomes) / episodes)
            if progress:
                progress(f"seed {seed} {name}: success {rates[name][-1]:.2f}"
                         + (f", reward >= {milestone:g} {reached[name][-1]:.2f}" if milestone is not None else ""))
    return Comparison(rates, seeds, episodes, budget, frames={n: int(sum(len(d.state) for d in ds))
                                                              for n, ds in arms.items()},
                      demos={n: len(ds) for n, ds in arms.items()}, milestone=milestone,
                      milestone_rates=reached if milestone is not None else {})
