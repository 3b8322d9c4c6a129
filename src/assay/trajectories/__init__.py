"""Robot trajectories, a modality of its own: LeRobot v3 datasets in and out (one record per episode), demonstrations
recorded from a MuJoCo simulation (ALOHA transfer-cube), and the co-training mixer. The quality steps are in
:mod:`assay.harvest.trajectory`."""
