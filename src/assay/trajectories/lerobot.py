"""LeRobot datasets (format v3.0) in and out: one Assay record per episode.

The layout (what ``lerobot``'s ``LeRobotDataset`` reads)::

    meta/info.json                                  codebase_version "v3.0", fps, features, paths, totals
    meta/tasks.parquet                              task (index) → task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode: length, tasks, where its frames and
                                                    video segments are (data/…, videos/<key>/…), stats/…
    meta/stats.json                                 per-feature min/max/mean/std/count over the dataset
    data/chunk-000/file-000.parquet                 one row per frame: the features, timestamp, frame_index,
                                                    episode_index, index, task_index
    videos/<camera key>/chunk-000/file-000.mp4      the episodes' frames one after another; an episode is the
                                                    span [from_timestamp, to_timestamp) of its row

The episode record (modality ``trajectory``)::

    content = {
      "episode_index": 3,                           # in the dataset it was read from
      "task": "Pick up the red cube …",
      "fps": 50.0,
      "frames": {"observation.state": [[…14…], …], "action": [[…]], "timestamp": [0.0, 0.02, …],
                 "frame_index": [0, 1, …], "next.reward": [...], …},   # every non-video feature, per frame
      "videos": {"observation.images.top": {"path": "/abs/…/file-000.mp4", "from_timestamp": 8.02,
                                            "to_timestamp": 16.04}},
    }
    meta = {"source": dataset root, "robot_type", "features": the info.json features of the kept columns,
            "length": frames, "dataset": name}

Records keep pointing at the input's video files; :class:`LeRobotWriter` decodes each episode's span and encodes it
into the output dataset's own videos (H.264), so an output dataset stands alone. The writer also stores each
episode's Assay id, source and lineage in extra ``assay/…`` columns of ``meta/episodes`` (LeRobot ignores them).

``read_lerobot(root, errors)`` yields the records; damaged input (a missing data file, an episode whose frames are
not where the episode table says) is a counted skip in ``errors.jsonl``. ``write_demos(episodes, root)`` stores
simulator episodes (:mod:`assay.trajectories.sim`) as a dataset.
"""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from assay.core.errors import ErrorLog
from assay.core.record import Record, stable_id

CODEBASE_VERSION = "v3.0"
MODALITY = "trajectory"
CHUNK = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK + ".parquet"
#: columns every LeRobot frame has; the writer (re)numbers the last four
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
_RENUMBERED = ("episode_index", "index", "task_index")


class LeRobotFormatError(ValueError):
    """The folder is not a LeRobot v3 dataset Assay can read (the message says why)."""


def is_lerobot_dataset(path: str | Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


def find_dataset_root(path: str | Path) -> Path:
    """``path`` itself when it is a dataset, else its ``lerobot/`` subfolder (an Assay run's export)."""
    p = Path(path)
    if is_lerobot_dataset(p):
        return p
    if is_lerobot_dataset(p / "lerobot"):
        return p / "lerobot"
    raise LeRobotFormatError(f"{path}: not a LeRobot dataset (no meta/info.json), nor a run folder with lerobot/")


def load_info(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    try:
        info = json.loads((root / "meta" / "info.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LeRobotFormatError(f"{root}: no meta/info.json: not a LeRobot dataset") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeRobotFormatError(f"{root}/meta/info.json: not valid JSON ({e})") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise LeRobotFormatError(f"{root}: LeRobot dataset version {version or '?'}; Assay reads v3.x (convert older "
                                 f"datasets with lerobot's convert_dataset_v21_to_v30)")
    for key in ("fps", "features"):
        if key not in info:
            raise LeRobotFormatError(f"{root}/meta/info.json: missing {key!r}")
    return info


def data_files(root: str | Path) -> list[Path]:
    """The dataset's frame files in order (data/chunk-*/file-*.parquet)."""
    return sorted(Path(root).glob("data/chunk-*/file-*.parquet"))


def _episode_rows(root: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    files = sorted(root.glob("meta/episodes/chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root}: no meta/episodes/chunk-*/file-*.parquet")
    rows: list[dict[str, Any]] = []
    for f in files:
        table = pq.read_table(f)
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        rows.extend(table.select(keep).to_pylist())
    return rows


def _tasks(root: Path) -> dict[int, str]:
    import pyarrow.parquet as pq

    path = root / "meta" / "tasks.parquet"
    if not path.exists():
        return {}
    table = pq.read_table(path)
    cols = table.column_names
    task_col = "task" if "task" in cols else next((c for c in cols if c.startswith("__index_level")), None)
    if task_col is None or "task_index" not in cols:
        return {}
    return {int(i): str(t) for t, i in zip(table.column(task_col).to_pylist(), table.column("task_index").to_pylist())}


def read_lerobot(root: str, errors: ErrorLog, *, files: tuple[int, int] | None = None) -> Iterator[Record]:
    """One ``trajectory`` record per episode of the LeRobot v3 dataset at ``root`` (a local folder). ``files``:
    only the episodes whose frames are in data files ``[lo, hi)`` of :func:`data_files` (a shard)."""
    import pyarrow.parquet as pq

    base = Path(root)
    try:
        info = load_info(base)
        episodes = _episode_rows(base)
    except LeRobotFormatError as e:
        errors.add("bad_lerobot_dataset", root, None, str(e))
        return
    except OSError as e:
        errors.add("unreadable_file", root, None, str(e))
        return
    tasks = _tasks(base)
    fps = float(info["fps"])
    features: dict[str, Any] = info["features"]
    video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
    all_files = data_files(base)
    lo, hi = files if files is not None else (0, len(all_files))
    wanted = {str(p.relative_to(base)) for p in all_files[lo:hi]}
    by_file: dict[str, list[dict[str, Any]]] = {}
    for ep in episodes:
        rel = DATA_PATH.format(chunk_index=int(ep.get("data/chunk_index", 0)),
                               file_index=int(ep.get("data/file_index", 0)))
        by_file.setdefault(rel, []).append(ep)
    for rel in sorted(wanted):
        eps = by_file.get(rel, [])
        try:
            table = pq.read_table(base / rel)
        except OSError as e:
            errors.add("unreadable_file", str(base / rel), None, f"{type(e).__name__}: {e}")
            continue
        cols = table.to_pydict()
        ep_col = cols.get("episode_index")
        if ep_col is None:
            errors.add("bad_lerobot_dataset", str(base / rel), None, "no episode_index column")
            continue
        ep_arr = np.asarray(ep_col)
        for ep in sorted(eps, key=lambda e: int(e["episode_index"])):
            index = int(ep["episode_index"])
            rows = np.flatnonzero(ep_arr == index)
            length = int(ep.get("length", len(rows)))
            if len(rows) == 0 or len(rows) != length:
                errors.add("bad_episode", str(base / rel), index,
                           f"episode {index}: the episode table says {length} frames, the data file holds {len(rows)}")
                continue
            frames = {k: [v[i] for i in rows] for k, v in cols.items() if k not in _RENUMBERED}
            task_index = cols.get("task_index", [None])[rows[0]] if "task_index" in cols else None
            ep_tasks = ep.get("tasks") or []
            task = tasks.get(int(task_index)) if task_index is not None else None
            task = task or (ep_tasks[0] if ep_tasks else "")
            videos = {}
            for key in video_keys:
                ci, fi = ep.get(f"videos/{key}/chunk_index"), ep.get(f"videos/{key}/file_index")
                if ci is None or fi is None:
                    errors.add("bad_episode", str(base / rel), index, f"episode {index}: no video span for {key}")
                    break
                path = base / VIDEO_PATH.format(video_key=key, chunk_index=int(ci), file_index=int(fi))
                videos[key] = {"path": str(path.resolve()), "from_timestamp": float(ep[f"videos/{key}/from_timestamp"]),
                               "to_timestamp": float(ep[f"videos/{key}/to_timestamp"])}
            else:
                content = {"episode_index": index, "task": task, "fps": fps, "frames": frames, "videos": videos}
                kept = {k: v for k, v in features.items() if k in frames or k in videos}
                meta = {"source": str(base), "dataset": base.name, "robot_type": info.get("robot_type"),
                        "features": kept, "length": length}
                for k in ("assay/id", "assay/source"):
                    if ep.get(k):
                        meta["origin_" + k.split("/")[1]] = ep[k]
                yield Record(stable_id(str(base), f"episode-{index}"), content, MODALITY, meta)


# -- writing ---------------------------------------------------------------------------------------------------


def _feature_stats(values: np.ndarray) -> dict[str, Any]:
    """min/max/mean/std/count over axis 0, keeping the feature's shape (LeRobot's layout)."""
    v = values.astype(np.float64)
    return {"min": v.min(axis=0).tolist(), "max": v.max(axis=0).tolist(), "mean": v.mean(axis=0).tolist(),
            "std": v.std(axis=0).tolist(), "count": [int(len(v))]}


def _aggregate(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-episode stats (parallel variance formula, as LeRobot's aggregate_stats)."""
    counts = np.array([s["count"][0] for s in stats], dtype=np.float64)
    means = [np.asarray(s["mean"]) for s in stats]
    stds = [np.asarray(s["std"]) for s in stats]
    total = counts.sum()
    m = np.stack(means)
    w = counts.reshape((-1,) + (1,) * (m.ndim - 1))
    mean = (m * w).sum(axis=0) / total
    var = ((np.stack(stds) ** 2 + (m - mean) ** 2) * w).sum(axis=0) / total
    return {"min": np.min(np.stack([np.asarray(s["min"]) for s in stats]), axis=0).tolist(),
            "max": np.max(np.stack([np.asarray(s["max"]) for s in stats]), axis=0).tolist(),
            "mean": mean.tolist(), "std": np.sqrt(var).tolist(), "count": [int(total)]}


def _arrow_type(feature: dict[str, Any]):  # noqa: ANN202
    import pyarrow as pa

    dtype = feature.get("dtype", "float32")
    base = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
            "bool": pa.bool_(), "string": pa.string()}.get(dtype)
    if base is None:
        raise LeRobotFormatError(f"unsupported feature dtype {dtype!r}")
    shape = list(feature.get("shape") or [1])
    if shape == [1]:
        return base
    if len(shape) == 1:
        return pa.list_(base, shape[0])
    raise LeRobotFormatError(f"unsupported feature shape {shape} (only scalars and vectors are written)")


def _numpy_dtype(feature: dict[str, Any]) -> Any:
    return {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32,
            "bool": np.bool_}.get(feature.get("dtype", "float32"), np.float32)


class VideoSpanReader:
    """Decodes the frames of ``[from_timestamp, to_timestamp)`` of a video file (a LeRobot episode's span)."""

    @staticmethod
    def frames(path: str, start: float, end: float, fps: float) -> list[np.ndarray]:
        import av

        half = 0.5 / fps if fps > 0 else 1e-4
        out: list[np.ndarray] = []
        with av.open(path) as container:
            stream = container.streams.video[0]
            tb = stream.time_base or Fraction(1, 90000)
            first_pts = None
            if start > 1.0:
                container.seek(int(max(0.0, start - 1.0) / tb), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if first_pts is None:
                    first_pts = stream.start_time if stream.start_time is not None else 0
                t = float((frame.pts - first_pts) * tb)
                if t < start - half:
                    continue
                if t >= end - half:
                    break
                out.append(frame.to_ndarray(format="rgb24"))
        return out


class _VideoOut:
    """One output mp4 for one camera: episodes' frames appended one after another at the dataset's fps."""

    def __init__(self, path: Path, fps: int, width: int, height: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # every frame a keyframe-friendly GOP keeps seeking to an episode's start exact and cheap
            self.stream.options = {"crf": "20", "preset": "veryfast", "g": "25"}
        self.fps = fps
        self.n = 0
        self.size = (width, height)

    def add(self, frame: np.ndarray) -> None:
        import av

        if (frame.shape[1], frame.shape[0]) != self.size:
            raise LeRobotFormatError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the video's "
                                     f"{self.size[0]}x{self.size[1]}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[..., :3]), format="rgb24").reformat(format="yuv420p")
        vf.pts = self.n
        vf.time_base = Fraction(1, self.fps)
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.n += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def _video_info(path: Path, fps: int) -> dict[str, Any]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"video.height": s.height, "video.width": s.width, "video.codec": s.codec_context.name,
                "video.pix_fmt": s.pix_fmt or "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                "video.channels": 3, "has_audio": False}


class LeRobotWriter:
    """Writes episodes into a new LeRobot v3 dataset at ``root`` (written under ``root.tmp-…`` and renamed into
    place by :meth:`close`, so a killed writer never leaves a half dataset under the real name).

    ``features``: the non-default features (info.json's form); video features have dtype ``video`` and shape
    ``[height, width, 3]``. Episodes come as :class:`~assay.core.record.Record` (:meth:`add_record`) or as arrays
    (:meth:`add_episode`)."""

    def __init__(self, root: str | Path, fps: float, features: dict[str, Any], *, robot_type: str | None = None,
                 overwrite: bool = False) -> None:
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"{self.root} exists")
        self.tmp = self.root.with_name(f".tmp-{self.root.name}-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.fps = int(round(fps))
        if abs(fps - self.fps) > 1e-6:
            raise LeRobotFormatError(f"LeRobot needs an integer fps; got {fps}")
        self.features = {k: dict(v) for k, v in features.items() if k not in DEFAULT_FEATURES}
        self.video_keys = [k for k, f in self.features.items() if f.get("dtype") == "video"]
        self.columns = [k for k in self.features if k not in self.video_keys]
        self.robot_type = robot_type
        self.tasks: dict[str, int] = {}
        self.frames: dict[str, list[Any]] = {k: [] for k in [*self.columns, *DEFAULT_FEATURES]}
        self.episodes: list[dict[str, Any]] = []
        self.videos: dict[str, _VideoOut] = {}
        self.video_stats: dict[str, list[dict[str, Any]]] = {k: [] for k in self.video_keys}
        self.total = 0

    # -- adding ------------------------------------------------------------------------------------------------
    def add_record(self, record: Record) -> None:
        c = record.content
        frames = c["frames"]
        videos = {}
        for key in self.video_keys:
            span = c.get("videos", {}).get(key)
            if span is None:
                raise LeRobotFormatError(f"record {record.id}: no video {key!r}")
            videos[key] = VideoSpanReader.frames(span["path"], float(span["from_timestamp"]),
                                                 float(span["to_timestamp"]), float(c.get("fps", self.fps)))
        extra = {"assay/id": record.id, "assay/source": str(record.meta.get("source", "")),
                 "assay/source_episode": int(c.get("episode_index", -1)),
                 "assay/lineage": json.dumps([e.as_dict() for e in record.lineage]),
                 "assay/signals": json.dumps(record.signals, default=float),
                 "assay/mix": json.dumps(record.meta["mix"]) if record.meta.get("mix") else ""}
        cols = {k: frames[k] for k in self.columns}
        if "timestamp" in frames:
            cols["timestamp"] = frames["timestamp"]
        self.add_episode(str(c.get("task", "")), cols, videos, extra=extra)

    def add_episode(self, task: str, columns: dict[str, Any], videos: dict[str, list[np.ndarray] | np.ndarray],
                    *, extra: dict[str, Any] | None = None) -> None:
        """One episode: per-frame ``columns`` (every non-video feature), camera ``videos`` (frames, uint8 HWC)."""
        lengths = {k: len(v) for k, v in columns.items()} | {k: len(v) for k, v in videos.items()}
        missing = [k for k in [*self.columns, *self.video_keys] if k not in lengths]
        if missing:
            raise LeRobotFormatError(f"episode lacks features {missing}")
        n = set(lengths.values())
        if len(n) != 1 or 0 in n:
            raise LeRobotFormatError(f"an episode's features must have the same, non-zero number of frames: {lengths}")
        length = n.pop()
        ep_index = len(self.episodes)
        task_index = self.tasks.setdefault(task, len(self.tasks))
        stats: dict[str, Any] = {}
        for k in self.columns:
            arr = np.asarray(columns[k], dtype=_numpy_dtype(self.features[k]))
            self.frames[k].extend(arr.tolist())
            num = arr.astype(np.float64)
            stats[k] = _feature_stats(num.reshape(length, -1) if num.ndim > 1 else num[:, None])
        ts = np.arange(length, dtype=np.float64) / self.fps
        if "timestamp" in columns:  # keep the recorded clock (quality steps look at it), rebased to start at 0
            rec = np.asarray(columns["timestamp"], dtype=np.float64)
            ts = rec - rec[0]
        self.frames["timestamp"].extend(ts.astype(np.float32).tolist())
        self.frames["frame_index"].extend(range(length))
        self.frames["episode_index"].extend([ep_index] * length)
        self.frames["index"].extend(range(self.total, self.total + length))
        self.frames["task_index"].extend([task_index] * length)
        for k, arr in (("timestamp", ts), ("frame_index", np.arange(length)), ("episode_index", np.full(length, ep_index)),
                       ("index", np.arange(self.total, self.total + length)), ("task_index", np.full(length, task_index))):
            stats[k] = _feature_stats(np.asarray(arr, dtype=np.float64)[:, None])
        row: dict[str, Any] = {"episode_index": ep_index, "tasks": [task], "length": length,
                               "data/chunk_index": 0, "data/file_index": 0,
                               "dataset_from_index": self.total, "dataset_to_index": self.total + length}
        for key in self.video_keys:
            frames = videos[key]
            first = np.asarray(frames[0])
            out = self.videos.get(key)
            if out is None:
                h, w = first.shape[:2]
                out = self.videos[key] = _VideoOut(self.tmp / VIDEO_PATH.format(video_key=key, chunk_index=0,
                                                                                file_index=0), self.fps, w, h)
                self.features[key]["shape"] = [h, w, 3]
                self.features[key].setdefault("names", ["height", "width", "channels"])
            start = out.n / self.fps
            pix = []
            for f in frames:
                out.add(np.asarray(f))
                pix.append(np.asarray(f, dtype=np.float32)[::4, ::4, :3].reshape(-1, 3) / 255.0)
            allpix = np.concatenate(pix)
            s = {"min": allpix.min(0), "max": allpix.max(0), "mean": allpix.mean(0), "std": allpix.std(0)}
            stats[key] = {k2: v.reshape(3, 1, 1).tolist() for k2, v in s.items()} | {"count": [length]}
            self.video_stats[key].append(stats[key])
            row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": out.n / self.fps}
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        row["_stats"] = stats
        row.update(extra or {})
        self.episodes.append(row)
        self.total += length

    # -- finishing ---------------------------------------------------------------------------------------------
    def close(self) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for v in self.videos.values():
            v.close()
        features = {k: dict(v) for k, v in self.features.items()} | DEFAULT_FEATURES
        for key in self.video_keys:
            if key in self.videos:
                features[key]["info"] = _video_info(self.videos[key].path, self.fps)
        # frames
        schema = pa.schema([(k, _arrow_type(features[k])) for k in [*self.columns, *DEFAULT_FEATURES]])
        table = pa.table({k: self.frames[k] for k in schema.names}, schema=schema)
        path = self.tmp / DATA_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        # tasks: the task string is the (pandas) index, as LeRobot writes it
        tasks = sorted(self.tasks.items(), key=lambda kv: kv[1])
        task_table = pa.table({"task_index": pa.array([i for _, i in tasks], pa.int64()),
                               "__index_level_0__": pa.array([t for t, _ in tasks], pa.string())})
        pandas_meta = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None}], "creator": {"library": "assay"}, "pandas_version": "2.2.3"}
        task_table = task_table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        (self.tmp / "meta").mkdir(parents=True, exist_ok=True)
        pq.write_table(task_table, self.tmp / "meta" / "tasks.parquet")
        # episodes (with their stats flattened as stats/<feature>/<stat>)
        rows = []
        for ep in self.episodes:
            r = {k: v for k, v in ep.items() if k != "_stats"}
            for feat, st in ep["_stats"].items():
                for name, val in st.items():
                    r[f"stats/{feat}/{name}"] = val
            rows.append(r)
        path = self.tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
        # dataset stats
        stats = {}
        for feat in {f for ep in self.episodes for f in ep["_stats"]}:
            per = [ep["_stats"][feat] for ep in self.episodes if feat in ep["_stats"]]
            stats[feat] = _aggregate(per)
        (self.tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
                "total_episodes": len(self.episodes), "total_frames": self.total, "total_tasks": len(self.tasks),
                "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": self.fps,
                "splits": {"train": f"0:{len(self.episodes)}"} if self.episodes else {},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH if self.video_keys else None,
                "features": features}
        (self.tmp / "meta" / "info.json").write_text(json.dumps(info, indent=4))
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.root)
        return self.root

    def abort(self) -> None:
        for v in self.videos.values():
            try:
                v.close()
            except Exception:  # noqa: BLE001 - best effort while cleaning up
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_records(records: Iterable[Record], root: str | Path, *, overwrite: bool = False) -> Path:
    """Write episode records (as :func:`read_lerobot` makes them) as a new LeRobot dataset at ``root``."""
    records = list(records)
    if not records:
        raise LeRobotFormatError("no episodes to write")
    first = records[0]
    features = dict(first.meta.get("features") or infer_features(first.content))
    writer = LeRobotWriter(root, float(first.content.get("fps", 30)), features,
                           robot_type=first.meta.get("robot_type"), overwrite=overwrite)
    try:
        for r in records:
            writer.add_record(r)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def infer_features(content: dict[str, Any]) -> dict[str, Any]:
    """info.json features for a record's content that has none in its meta (a record made by hand)."""
    feats: dict[str, Any] = {}
    for k, v in content.get("frames", {}).items():
        if k in DEFAULT_FEATURES or not v:
            continue
        first = v[0]
        if isinstance(first, (list, tuple)):
            feats[k] = {"dtype": "float32", "shape": [len(first)], "names": None}
        elif isinstance(first, bool):
            feats[k] = {"dtype": "bool", "shape": [1], "names": None}
        elif isinstance(first, int):
            feats[k] = {"dtype": "int64", "shape": [1], "names": None}
        else:
            feats[k] = {"dtype": "float32", "shape": [1], "names": None}
    for k in content.get("videos", {}):
        feats[k] = {"dtype": "video", "shape": [0, 0, 3], "names": ["height", "width", "channels"]}
    return feats


def read_episodes(path: str | Path) -> list[Record]:
    """Every episode record of the dataset at ``path`` (or of the ``lerobot/`` export inside a run folder)."""
    root = find_dataset_root(path)
    errors = ErrorLog()
    records = list(read_lerobot(str(root), errors))
    if errors.entries:
        raise LeRobotFormatError(f"{root}: {errors.entries[0]}")
    return records


def sim_features(width: int, height: int) -> dict[str, Any]:
    from assay.trajectories import sim

    return {
        "observation.state": {"dtype": "float32", "shape": [14], "names": sim.STATE_NAMES},
        "observation.environment_state": {"dtype": "float32", "shape": [7], "names": sim.ENV_STATE_NAMES},
        "action": {"dtype": "float32", "shape": [14], "names": sim.STATE_NAMES},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
        "observation.images.top": {"dtype": "video", "shape": [height, width, 3],
                                   "names": ["height", "width", "channels"]},
    }


def write_demos(episodes: Iterable[Any], root: str | Path, *, overwrite: bool = False,
                timestamps: list[np.ndarray | None] | None = None) -> Path:
    """Store simulator episodes (:class:`assay.trajectories.sim.Episode`) as a LeRobot v3 dataset at ``root``.
    ``timestamps`` (per episode, optional) replaces the ideal clock ``i / fps`` (planted timing defects)."""
    from assay.trajectories import sim

    episodes = list(episodes)
    if not episodes:
        raise LeRobotFormatError("no episodes to write")
    h, w = episodes[0].frames.shape[1:3]
    writer = LeRobotWriter(root, sim.FPS, sim_features(w, h), robot_type="aloha", overwrite=overwrite)
    try:
        for i, ep in enumerate(episodes):
            cols: dict[str, Any] = {"observation.state": ep.state, "observation.environment_state": ep.env_state,
                                    "action": ep.action, "next.reward": ep.reward,
                                    "next.success": ep.reward >= sim.SUCCESS_REWARD}
            if timestamps is not None and timestamps[i] is not None:
                cols["timestamp"] = timestamps[i]
            writer.add_episode(ep.task, cols, {"observation.images.top": ep.frames},
                               extra={"assay/source": f"sim:transfer_cube:seed={ep.seed}",
                                      "assay/operator": json.dumps(ep.info, default=float)})
        return writer.close()
    except BaseException:
        writer.abort()
        raise

