"""Demonstrations from real physics: the ALOHA bimanual transfer-cube task (gym-aloha's MuJoCo model), driven by a
scripted operator with human-like imperfections.

The scripted operator is the waypoint policy of the ACT paper (Zhao et al. 2023) for "transfer cube": the right arm
picks the red cube, lifts it to a meeting point, the left arm takes it over. It moves the end effectors (mocap
bodies) of gym-aloha's end-effector model; what is recorded is what a teleoperated ALOHA records:

* ``observation.state``: the 14 joint positions (6 arm joints + normalised gripper per arm),
* ``observation.environment_state``: the cube's pose (x, y, z, qw, qx, qy, qz), so a state-only policy can see it,
* ``action``: the 14 joint targets (the next joint positions; gripper as the normalised command), as a leader arm
  would send them,
* ``next.reward``: the task's contact reward (0–4; 4 = the left gripper holds the cube in the air),
* ``observation.images.top``: the top camera, rendered offscreen (MuJoCo EGL, or OSMesa when ``MUJOCO_GL`` says so).

:class:`Operator` adds what a human operator does: smooth tremor on the commanded positions (an Ornstein-Uhlenbeck
process), pauses (the command held still for a while), idle time before starting and after finishing, and
failures (a grasp that misses the cube by a few centimetres, or a hand-over released too early).

``record_episode(seed, operator)`` runs one episode and returns an :class:`Episode`; ``write_demos`` (in
:mod:`assay.trajectories.lerobot`) stores a list of them as a LeRobot v3 dataset. ``make_joint_env()`` gives the
joint-space gym-aloha environment a learned policy is evaluated in (same physics, 14-dim joint actions).

Needs the ``robot`` extra (gym-aloha, which brings MuJoCo and dm_control).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FPS = 50  # gym-aloha's control rate (DT = 0.02 s)
TASK = "Pick up the red cube with the right arm and hand it over to the left arm."
STATE_NAMES = [f"{side}_{j}" for side in ("left", "right")
               for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")]
ENV_STATE_NAMES = ["cube_x", "cube_y", "cube_z", "cube_qw", "cube_qx", "cube_qy", "cube_qz"]
GRIPPER_DIMS = (6, 13)  # indices of the two grippers in state and action
SUCCESS_REWARD = 4
SETTLE_STEPS = 60  # simulated (not recorded) steps before an episode starts


def _gl_backend() -> None:
    # headless rendering: EGL (Mesa's software renderer works without a GPU); a user's MUJOCO_GL wins
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


@dataclass
class Operator:
    """How the simulated human teleoperates. All amounts are in metres / steps; 0 turns a behaviour off."""

    tremor: float = 0.004  # std of the OU tremor on the commanded end-effector positions (m)
    tremor_tau: float = 8.0  # its correlation time (steps)
    pause_prob: float = 0.0  # chance of one mid-task pause
    pause_steps: tuple[int, int] = (20, 60)
    idle_head: int = 0  # steps of doing nothing before starting
    idle_tail: int = 0  # steps of doing nothing after finishing
    grasp_miss: float = 0.0  # horizontal offset of the grasp (m): > ~0.03 misses the cube
    early_release: bool = False  # the right hand opens before the left has closed: the cube falls
    speed: float = 1.0  # > 1 = faster (fewer steps for the same motion)


@dataclass
class Episode:
    """One recorded demonstration: per-frame arrays and the camera frames."""

    state: np.ndarray  # (T, 14) float32
    env_state: np.ndarray  # (T, 7) float32
    action: np.ndarray  # (T, 14) float32
    reward: np.ndarray  # (T,) float32
    frames: np.ndarray  # (T, H, W, 3) uint8, the top camera
    seed: int
    task: str = TASK
    info: dict[str, Any] = field(default_factory=dict)  # the operator's settings and what happened

    @property
    def success(self) -> bool:
        return bool(self.reward.max(initial=0) >= SUCCESS_REWARD)

    def __len__(self) -> int:
        return len(self.state)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def _axis_quat(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    half = np.deg2rad(degrees) / 2
    return np.array([np.cos(half), *(np.sin(half) * np.asarray(axis, dtype=float))])


def _waypoints(box_xyz: np.ndarray, init_left: np.ndarray, init_right: np.ndarray, op: Operator,
               rng: np.random.Generator) -> tuple[list[dict], list[dict], int, np.ndarray]:
    """ACT's transfer-cube waypoints (t, xyz, quat, gripper 1=open), bent by the operator's failures."""
    pick_quat = _quat_mul(init_right[3:], _axis_quat((0.0, 1.0, 0.0), -60))
    meet_left_quat = _axis_quat((1.0, 0.0, 0.0), 90)
    meet = np.array([0.0, 0.5, 0.25])
    miss = np.zeros(3)
    if op.grasp_miss:
        angle = rng.uniform(0, 2 * np.pi)
        miss[:2] = op.grasp_miss * np.array([np.cos(angle), np.sin(angle)])
    release = 185 if op.early_release else 310  # the right hand opens at this step
    left = [
        (0, init_left[:3], init_left[3:], 0), (100, meet + [-0.1, 0, -0.02], meet_left_quat, 1),
        (260, meet + [0.02, 0, -0.02], meet_left_quat, 1), (310, meet + [0.02, 0, -0.02], meet_left_quat, 0),
        (360, meet + [-0.1, 0, -0.02], np.array([1.0, 0, 0, 0]), 0),
        (400, meet + [-0.1, 0, -0.02], np.array([1.0, 0, 0, 0]), 0)]
    right = [
        (0, init_right[:3], init_right[3:], 0), (90, box_xyz + miss + [0, 0, 0.08], pick_quat, 1),
        (130, box_xyz + miss + GRASP, pick_quat, 1), (170, box_xyz + miss + GRASP, pick_quat, 0),
        (200, meet + [0.05, 0, 0], pick_quat, 0), (220, meet, pick_quat, 0), (release, meet, pick_quat, 1),
        (max(release, 310) + 50, meet + [0.1, 0, 0], pick_quat, 1),
        (max(release, 310) + 90, meet + [0.2, 0, 0], pick_quat, 1)]
    right.sort(key=lambda w: w[0])
    if op.early_release:  # once open, the right hand stays open: the cube falls before the left hand has it
        right = [(t, x, q, 1 if t >= release else g) for t, x, q, g in right]
    to = lambda ws: [{"t": int(round(t / op.speed)), "xyz": np.asarray(x, float), "quat": np.asarray(q, float),  # noqa: E731
                      "gripper": float(g)} for t, x, q, g in ws]
    horizon = int(round(400 / op.speed))
    return to(left), to(right), horizon, miss


SERVO = 0.2  # gain of the operator's visual correction (per step, on the fingertip error)
GRASP = np.zeros(3)  # fingertips' target at the pick, relative to the cube's centre


MAX_CORRECTION = 0.2  # m: the operator's correction never exceeds this (no wind-up into the table)


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v if n <= limit else v * (limit / n)


def _servo_targets(t: float, lx: np.ndarray, rx: np.ndarray, cube: np.ndarray, horizon: int,
                   op: Operator) -> tuple[np.ndarray, np.ndarray]:
    s = 1.0 / op.speed
    rt = rx
    if 90 * s <= t <= 175 * s:  # pick: fingertips onto the cube (from above, then around it)
        f = min(1.0, (t - 90 * s) / (40 * s))
        rt = cube + GRASP + np.array([0.0, 0.0, 0.08 * (1 - f)])
    lt = lx
    if 240 * s <= t <= 315 * s:  # hand-over: the left fingertips onto the cube the right hand holds
        lt = cube + LEFT_TAKE
    return lt, rt


LEFT_TAKE = np.array([-0.02, 0.0, 0.01])  # left fingertips' target at the hand-over, relative to the cube


def _interpolate(ws: list[dict], t: float) -> tuple[np.ndarray, np.ndarray, float]:
    if t >= ws[-1]["t"]:
        w = ws[-1]
        return w["xyz"], w["quat"], w["gripper"]
    for a, b in zip(ws, ws[1:]):
        if a["t"] <= t <= b["t"]:
            f = (t - a["t"]) / max(1, b["t"] - a["t"])
            quat = a["quat"] + (b["quat"] - a["quat"]) * f
            return (a["xyz"] + (b["xyz"] - a["xyz"]) * f, quat / np.linalg.norm(quat),
                    a["gripper"] + (b["gripper"] - a["gripper"]) * f)
    w = ws[0]
    return w["xyz"], w["quat"], w["gripper"]


class TransferCubeSim:
    """gym-aloha's end-effector transfer-cube model, rendering one camera at a small size."""

    def __init__(self, width: int = 128, height: int = 96, camera: str = "top") -> None:
        _gl_backend()
        from dm_control import mujoco as dm_mujoco
        from gym_aloha.constants import ASSETS_DIR

        self.physics = dm_mujoco.Physics.from_xml_path(str(ASSETS_DIR / "bimanual_viperx_end_effector_transfer_cube.xml"))
        self.width, self.height, self.camera = width, height, camera
        self._renderer: Any = None

    def reset(self, box_xyz: np.ndarray) -> None:
        from gym_aloha.tasks.sim_end_effector import TransferCubeEndEffectorTask

        p = self.physics
        with p.reset_context():
            TransferCubeEndEffectorTask.initialize_robots(None, p)  # type: ignore[arg-type]
            start = p.model.name2id("red_box_joint", "joint")
            qadr = p.model.jnt_qposadr[start]
            p.data.qpos[qadr: qadr + 7] = np.concatenate([box_xyz, [1.0, 0, 0, 0]])

    def step(self, command: np.ndarray) -> None:
        from gym_aloha.constants import unnormalize_puppet_gripper_position

        p = self.physics
        p.data.mocap_pos[0], p.data.mocap_quat[0] = command[:3], command[3:7]
        p.data.mocap_pos[1], p.data.mocap_quat[1] = command[8:11], command[11:15]
        gl, gr = (unnormalize_puppet_gripper_position(command[7]), unnormalize_puppet_gripper_position(command[15]))
        p.data.ctrl[:] = [gl, -gl, gr, -gr]
        n_sub = int(round(1.0 / FPS / p.model.opt.timestep))
        p.step(n_sub)

    def qpos(self) -> np.ndarray:
        from gym_aloha.tasks.sim_end_effector import BimanualViperXEndEffectorTask

        return BimanualViperXEndEffectorTask.get_qpos(self.physics)

    def cube_pose(self) -> np.ndarray:
        return self.physics.data.qpos.copy()[16:23]

    def fingertips(self, side: str) -> np.ndarray:
        """The midpoint between one hand's two fingers."""
        x = self.physics.named.data.geom_xpos
        return (x[f"vx300s_{side}/10_left_gripper_finger"] + x[f"vx300s_{side}/10_right_gripper_finger"]) / 2

    def reward(self) -> int:
        from gym_aloha.tasks.sim_end_effector import TransferCubeEndEffectorTask

        return int(TransferCubeEndEffectorTask.get_reward(None, self.physics))  # type: ignore[arg-type]

    def render(self) -> np.ndarray:
        import mujoco

        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.physics.model.ptr, self.height, self.width)
        r = self._renderer
        r.update_scene(self.physics.data.ptr, camera=self.camera)
        # no shadows, reflections or sky: a third of the software-rendering time, the same picture otherwise
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            r.scene.flags[flag] = 0
        return r.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def mocap(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.physics
        return (np.concatenate([p.data.mocap_pos[0], p.data.mocap_quat[0]]).copy(),
                np.concatenate([p.data.mocap_pos[1], p.data.mocap_quat[1]]).copy())


def sample_box_xyz(rng: np.random.Generator) -> np.ndarray:
    """gym-aloha's cube placement range, from our own random generator (theirs is not seeded)."""
    return np.array([rng.uniform(0.0, 0.2), rng.uniform(0.4, 0.6), 0.05])


def record_episode(seed: int, operator: Operator | None = None, *, sim: TransferCubeSim | None = None,
                   width: int = 128, height: int = 96) -> Episode:
    """Run one teleoperated transfer-cube episode in MuJoCo and record it (see the module doc)."""
    op = operator or Operator()
    rng = np.random.default_rng(seed)
    sim = sim or TransferCubeSim(width, height)
    sim.reset(sample_box_xyz(rng))
    init_left, init_right = sim.mocap()
    hold = np.concatenate([init_left, [0.0], init_right, [0.0]])
    for _ in range(SETTLE_STEPS):  # the arms fall into the grip of the mocap welds and the cube onto the table first:
        sim.step(hold)             # a real recording starts from a robot at rest
    left, right, horizon, miss = _waypoints(sim.cube_pose()[:3], init_left, init_right, op, rng)
    pause_at = pause_len = -1
    if op.pause_prob and rng.random() < op.pause_prob:
        pause_at = int(rng.integers(horizon // 5, 4 * horizon // 5))
        pause_len = int(rng.integers(op.pause_steps[0], op.pause_steps[1] + 1))
    # the script's clock: stands still during idle head, a pause and the idle tail
    clock: list[float] = [0.0] * op.idle_head
    t = 0.0
    while t <= horizon:
        clock.append(t)
        if int(t) == pause_at:
            clock.extend([t] * pause_len)
            pause_at = -1
        t += 1.0
    clock.extend([float(horizon)] * op.idle_tail)
    noise = np.zeros(6)
    theta = 1.0 / max(op.tremor_tau, 1e-6)
    states, envs, commands, rewards, frames = [], [], [], [], []
    from dm_control.rl.control import PhysicsError

    prev_t = None
    physics_error = ""
    corr_l, corr_r = np.zeros(3), np.zeros(3)
    for t in clock:
        moving = prev_t is None or t != prev_t
        prev_t = t
        lx, lq, lg = _interpolate(left, t)
        rx, rq, rg = _interpolate(right, t)
        if op.tremor and moving:  # a hand at rest on the leader arm does not shake: tremor only while moving
            noise += -theta * noise + op.tremor * np.sqrt(2 * theta) * rng.standard_normal(6)
        if SERVO and moving:  # the operator watches the fingertips and corrects the hands towards the targets
            lt, rt = _servo_targets(t, lx, rx, sim.cube_pose()[:3] + miss, horizon, op)
            corr_l = _clip_norm(corr_l + SERVO * (lt - sim.fingertips("left")), MAX_CORRECTION)
            corr_r = _clip_norm(corr_r + SERVO * (rt - sim.fingertips("right")), MAX_CORRECTION)
        cmd = np.concatenate([lx + corr_l + noise[:3], lq, [lg], rx + corr_r + noise[3:], rq, [rg]])
        state, env, frame = sim.qpos(), sim.cube_pose(), sim.render()
        try:
            sim.step(cmd)
        except PhysicsError as e:  # the simulation blew up (rare): the recording ends here, as a failed episode
            physics_error = str(e)
            break
        states.append(state)
        envs.append(env)
        frames.append(frame)
        commands.append(cmd)
        rewards.append(sim.reward())
    state = np.asarray(states, dtype=np.float32)
    # action = the joint targets a leader arm sends: the next joint positions, the gripper as commanded
    if len(state) == 0:
        raise RuntimeError(f"the simulation failed at its first step: {physics_error}")
    last = state[-1] if physics_error else sim.qpos().astype(np.float32)
    nxt = np.concatenate([state[1:], last[None]])
    action = nxt.copy()
    cmds = np.asarray(commands)
    action[:, GRIPPER_DIMS[0]] = cmds[:, 7]
    action[:, GRIPPER_DIMS[1]] = cmds[:, 15]
    info = {"operator": {k: (list(v) if isinstance(v, tuple) else v) for k, v in op.__dict__.items()},
            "paused": pause_len if pause_len > 0 else 0}
    if physics_error:
        info["physics_error"] = physics_error
    return Episode(state=state, env_state=np.asarray(envs, dtype=np.float32), action=action,
                   reward=np.asarray(rewards, dtype=np.float32), frames=np.asarray(frames, dtype=np.uint8),
                   seed=seed, info=info)


def make_joint_env(width: int = 128, height: int = 96) -> Any:
    """gym-aloha's joint-space transfer-cube environment (``gym_aloha/AlohaTransferCube-v0``): a learned policy's
    14-dim joint actions are evaluated here. ``reset(seed=s)`` places the cube as :func:`sample_box_xyz` would not:
    use ``place_cube(env, xyz)`` to put it where a recorded episode had it."""
    _gl_backend()
    from gym_aloha.env import AlohaEnv

    return AlohaEnv("transfer_cube", obs_type="pixels_agent_pos", observation_width=width,
                    observation_height=height)


def place_cube(env: Any, box_xyz: np.ndarray) -> None:
    """Move the cube of a reset joint-space env to ``box_xyz`` (and re-settle the physics)."""
    p = env._env.physics
    with p.reset_context():
        start = p.model.name2id("red_box_joint", "joint")
        qadr = p.model.jnt_qposadr[start]
        p.data.qpos[qadr: qadr + 7] = np.concatenate([box_xyz, [1.0, 0, 0, 0]])
