"""Open a LeRobot dataset with LeRobot's own ``LeRobotDataset`` and read frames, camera frames included (run in
.venv-lerobot, which ``make peers`` creates: torch 2.13 CPU, lerobot-dataset 0.4.4 — the packaged copy of lerobot's
``datasets`` module —, torchcodec 0.13 on Debian's FFmpeg libraries).

torchvision's PyPI wheel cannot load beside the CPU build of torch 2.13 (its C operators link CUDA libraries, and
lerobot itself pins torch<2.12), so a stub stands in for it: this code path imports ``torchvision.transforms`` but
only calls ``ToTensor`` for image (not video) features, and decodes videos with torchcodec, not torchvision.

    .venv-lerobot/bin/python benchmarks/peers/lerobot_load.py DATASET      # prints JSON: counts and item shapes
"""

import importlib.machinery
import json
import sys
import types

import numpy as np


def _stub_torchvision() -> None:
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")

    class ToTensor:
        def __call__(self, img):  # noqa: ANN001, ANN204
            import torch

            return torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255

    tv.transforms.ToTensor = ToTensor
    tv.transforms.v2 = types.ModuleType("torchvision.transforms.v2")
    for name, mod in {"torchvision": tv, "torchvision.transforms": tv.transforms,
                      "torchvision.transforms.v2": tv.transforms.v2}.items():
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = mod


def main() -> None:
    _stub_torchvision()
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    root = sys.argv[1]
    ds = LeRobotDataset("local/" + root.rstrip("/").split("/")[-1], root=root, video_backend="torchcodec")
    items = {}
    for i in sorted({0, len(ds) // 2, len(ds) - 1}):
        item = ds[i]
        items[i] = {k: (list(v.shape) if hasattr(v, "shape") else v) for k, v in item.items()}
        items[i]["episode_index"] = int(item["episode_index"])
        items[i]["image_mean"] = float(item[ds.meta.video_keys[0]].mean()) if ds.meta.video_keys else None
    print(json.dumps({"episodes": ds.num_episodes, "frames": ds.num_frames, "fps": ds.fps,
                      "video_keys": ds.meta.video_keys, "items": items}))


if __name__ == "__main__":
    main()
