"""``assay trajectories``: look at LeRobot datasets and mix them for co-training.

* ``assay trajectories info DATASET``: episodes, frames, tasks, cameras, success (if recorded) of a dataset.
* ``assay trajectories mix TARGET PRIOR -o OUT --target-fraction 0.5``: the Mobile ALOHA co-training mix
  (:mod:`assay.trajectories.mix`), written as a LeRobot v3 dataset.

Curating a dataset is ``assay run recipes/robot-demos.yaml -i DATASET -o OUT`` (the kept episodes land in OUT/lerobot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Robot trajectories: LeRobot dataset summaries and co-training mixes.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)
    raise typer.Exit(2)


def _read(path: str):  # noqa: ANN202
    from assay.trajectories.lerobot import LeRobotFormatError, read_episodes

    try:
        return read_episodes(path)
    except LeRobotFormatError as e:
        _fail(str(e))


@app.command()
def info(dataset: str = typer.Argument(..., help="A LeRobot v3 dataset folder (or a run folder with lerobot/).")) -> None:
    """Episodes, frames, tasks, cameras and outcomes of a LeRobot dataset."""
    import numpy as np

    records = _read(dataset)
    if not records:
        _fail(f"{dataset}: no episodes")
    table = Table(title=f"{dataset}: {len(records)} episodes")
    for col in ("episode", "frames", "seconds", "task", "success", "from"):
        table.add_column(col)
    for r in records:
        c = r.content
        n = len(next(iter(c["frames"].values())))
        succ = c["frames"].get("next.success")
        reward = c["frames"].get("next.reward")
        ok = "yes" if succ and any(succ) else ("no" if succ is not None else
                                                (f"max reward {max(reward):g}" if reward else "?"))
        table.add_row(str(c["episode_index"]), str(n), f"{n / float(c['fps']):.1f}", str(c.get("task", ""))[:50], ok,
                      str(r.meta.get("origin_source") or "")[:40])
    Console().print(table)
    frames = [len(next(iter(r.content["frames"].values()))) for r in records]
    cams = sorted({k for r in records for k in (r.content.get("videos") or {})})
    print(f"frames: {sum(frames)} (median {int(np.median(frames))} per episode); fps {records[0].content['fps']:g}; "
          f"tasks: {len({r.content.get('task') for r in records})}; cameras: {', '.join(cams) or 'none'}")


@app.command()
def mix(
    target: str = typer.Argument(..., help="The curated target-task dataset (small)."),
    prior: str = typer.Argument(..., help="The prior dataset (larger; other tasks or other robots' data)."),
    output: str = typer.Option(..., "--output", "-o", help="The mixed LeRobot dataset to write (a new folder)."),
    target_fraction: float = typer.Option(0.5, help="Share of the mix made of target data (Mobile ALOHA: 0.5)."),
    unit: str = typer.Option("frames", help="Count the share in 'frames' (what a sampler draws) or 'episodes'."),
    prior_episodes: Optional[int] = typer.Option(None, help="Prior episodes to take (default: as many as there are)."),
    no_balance: bool = typer.Option(False, "--no-balance", help="Take the prior as it is, not an equal share per task."),
    seed: int = typer.Option(0, help="Seed of the sampling and of the order."),
    overwrite: bool = typer.Option(False, help="Replace --output if it is a LeRobot dataset."),
) -> None:
    """Mix a small target set with a larger prior at a stated ratio, per-task balanced (co-training)."""
    from assay.trajectories.lerobot import LeRobotFormatError, is_lerobot_dataset, write_records
    from assay.trajectories.mix import cotrain_mix

    if unit not in ("frames", "episodes"):
        _fail("--unit must be 'frames' or 'episodes'")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not (overwrite and is_lerobot_dataset(out)):
        _fail(f"{output} exists and is not empty" + ("" if overwrite else "; --overwrite replaces a LeRobot dataset"))
    t, p = _read(target), _read(prior)
    try:
        mixed, plan = cotrain_mix(t, p, target_fraction=target_fraction, balance_tasks=not no_balance,
                                  unit=unit, prior_episodes=prior_episodes, seed=seed)  # type: ignore[arg-type]
        write_records(mixed, out, overwrite=True)
    except (ValueError, LeRobotFormatError) as e:
        _fail(str(e))
    (out / "meta" / "mix.json").write_text(json.dumps({"target": target, "prior": prior,
                                                       "target_fraction": target_fraction, "unit": unit,
                                                       "seed": seed, **plan.as_dict()}, indent=1))
    print(f"wrote {output}: {plan.target_episodes} target + {plan.prior_episodes} prior episodes; target makes "
          f"{plan.target_fraction_frames:.1%} of the frames; prior tasks {plan.prior_tasks}")
