"""Stage I for robot trajectories (LeRobot episodes, one record each: :mod:`assay.trajectories.lerobot`).

Steps (importing this package registers them):

* per episode (:mod:`.checks`): ``trajectory_timing`` (timestamp gaps, jitter, non-increasing timestamps against
  the declared fps), ``trajectory_frozen`` (duplicated rows, a state that stops updating, a camera that freezes),
  ``trajectory_kinematics`` (action jumps, velocity and acceleration outliers, NaN/inf), ``trajectory_joint_range``
  (values outside joint limits), ``trajectory_gripper`` (a gripper that never moves), ``trajectory_success``
  (success from ``next.success`` or the environment's reward);
* ``trajectory_trim_idle`` (:mod:`.trim`): cut idle frames at the start and end, measure pauses;
* across episodes (:mod:`.episodes`, global steps): ``trajectory_length_outliers``, ``trajectory_dedup``
  (near-duplicate episodes);
* ``lerobot_export`` (:mod:`.export`): the kept episodes as a LeRobot v3 dataset in the run folder.

``recipes/robot-demos.yaml`` ties them together; ``docs/trajectories.md`` explains them.
"""

from assay.harvest.trajectory.checks import (TrajectoryFrozen, TrajectoryGripper, TrajectoryJointRange,
                                             TrajectoryKinematics, TrajectorySuccess, TrajectoryTiming)
from assay.harvest.trajectory.episodes import TrajectoryDedup, TrajectoryLengthOutliers
from assay.harvest.trajectory.export import LeRobotExport
from assay.harvest.trajectory.trim import TrajectoryTrimIdle

__all__ = ["LeRobotExport", "TrajectoryDedup", "TrajectoryFrozen", "TrajectoryGripper", "TrajectoryJointRange",
           "TrajectoryKinematics", "TrajectoryLengthOutliers", "TrajectorySuccess", "TrajectoryTiming",
           "TrajectoryTrimIdle"]
