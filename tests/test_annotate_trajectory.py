"""The trajectory annotation task over the real app (TestClient, SQLite): robot episodes with action/state curves and a
real MP4 (two episodes in one file, each a time span of it, as LeRobot v3 stores them), import checks, the API and the
web form, answer validation, media access, the ``trajectory`` export joining back to the episodes, and agreement:
Krippendorff's α on success labels (cross-checked with the ``krippendorff`` package) and segment boundaries within a
frame tolerance (the matching cross-checked with networkx's maximum bipartite matching)."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
from annotate_support import api_login, cheap_password_hashing, make_database, web_login
from sqlalchemy import select

from assay.annotate import trajectory_task, workflow
from assay.annotate.models import Annotation, Item
from assay.core.record import LineageEntry, Record
from assay.platform.users import create_user

PW = "password-123"
FPS = 10
N = 40  # frames per episode
LINEAGE = [LineageEntry("trajectory_quality", "1", "abc123")]


def make_mp4(path, frames: int, fps: int = FPS) -> None:
    """A real H.264 MP4 (PyAV): a bright bar that moves right one step per frame, so a frame can be read off it."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.zeros((48, 64, 3), np.uint8)
            img[:, (i % 60):(i % 60) + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def episode(k: int, video: str | None, n: int = N, **extra) -> dict:
    """An episode as an Assay trajectory record's content: per-frame columns, the camera's span in a shared file."""
    state = [[math.sin(t / 5 + k), math.cos(t / 7)] for t in range(n)]
    action = [[math.sin((t + 1) / 5 + k), 0.5 if t > n // 2 else -0.5] for t in range(n)]
    content = {"episode_index": k, "task": "put the cube in the bowl", "fps": FPS, "success": k % 2 == 0,
               "frames": {"timestamp": [t / FPS for t in range(n)], "observation.state": state, "action": action},
               "names": {"action": ["x", "gripper"]}}
    if video:
        content["videos"] = {"observation.images.top": {"path": video, "from_timestamp": k * n / FPS,
                                                        "to_timestamp": (k + 1) * n / FPS}}
    content.update(extra)
    return content


def write(path, records: list[Record]) -> str:
    path.write_bytes(b"".join(r.to_json() + b"\n" for r in records))
    return str(path)


@pytest.fixture
def db(tmp_path):
    cheap_password_hashing()
    database, cleanup = make_database("sqlite", tmp_path)
    with database.write() as s:
        create_user(s, "admin", PW, "admin")
        for name in ("alice", "bob", "carol"):
            create_user(s, name, PW, "annotator")
    yield database
    cleanup()


@pytest.fixture
def episodes(tmp_path):
    video = tmp_path / "file-000.mp4"
    make_mp4(video, 2 * N)
    records = [Record(f"ep-{k}", episode(k, str(video)), "trajectory", meta={"dataset": "sim"}, lineage=LINEAGE)
               for k in range(2)]
    return records, str(video)


def client_of(db):
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app

    return TestClient(create_app(database=db), follow_redirects=False)


def test_config_and_import_checks(db, tmp_path, episodes):
    records, video = episodes
    with db.write() as s:
        for bad, match in (({"boundary_tolerance": -1}, "boundary_tolerance"), ({"labels": ["a", "a"]}, "distinct"),
                           ({"labels": "grasp"}, "labels"), ({"note": "sometimes"}, "note")):
            with pytest.raises(workflow.WorkflowError, match=match):
                workflow.create_project(s, f"bad-{match}", "trajectory", config=bad)
        p = workflow.create_project(s, "demos", "trajectory")
        assert p.config == {"boundary_tolerance": 5, "labels": [], "note": "optional"}
    broken = dict(episode(5, video))
    broken["frames"] = dict(broken["frames"], action=broken["frames"]["action"][:-3])
    nan = episode(6, video)
    nan["frames"]["action"][3][0] = float("nan")
    bad = [Record("missing-video", episode(2, str(tmp_path / "gone.mp4")), "trajectory"),
           Record("short-actions", broken, "trajectory"),
           Record("nan", nan, "trajectory"),
           Record("no-frames", {"episode_index": 7, "task": "x", "fps": 10}, "trajectory"),
           Record("not-video", episode(8, str(tmp_path / "notes.mp4")), "trajectory")]
    (tmp_path / "notes.mp4").write_text("not a video")
    report = workflow.import_records(db, "demos", [write(tmp_path / "eps.jsonl", records + bad)])
    assert report.imported == 2
    assert report.skipped == {"video_missing": 1, "frame_count_mismatch": 1, "bad_frame_values": 1,
                              "no_frames": 1, "not_a_video": 1}
    with db.read() as s:
        items = s.scalars(select(Item).order_by(Item.id)).all()
        c = items[1].content
    assert c["episode_index"] == 1 and c["n_frames"] == N and c["fps"] == FPS
    assert c["series"]["action"]["names"] == ["x", "gripper"]
    assert c["series"]["observation.state"]["names"] == ["observation.state[0]", "observation.state[1]"]
    assert c["series"]["action"]["values"][1][0] == -0.5 and len(c["series"]["action"]["values"][0]) == N
    assert c["videos"] == [{"camera": "observation.images.top", "path": video, "start": 4.0, "end": 8.0}]
    # the environment's verdict from LeRobot's per-frame next.success when the record has no success of its own
    flags = {k: v for k, v in episode(3, None).items() if k != "success"}
    flags["frames"] = {**flags["frames"], "next.success": [[t == N - 1] for t in range(N)]}
    assert trajectory_task.item_content(flags)["env_success"] is True
    flags["frames"]["next.success"] = [[False]] * N
    assert trajectory_task.item_content(flags)["env_success"] is False
    # per-frame dicts (a list of rows) are the same episode; fps may come from the timestamps alone
    rows = [{"observation.state": s, "action": a, "timestamp": t} for s, a, t in
            zip(*(episode(1, None)["frames"][k] for k in ("observation.state", "action", "timestamp")))]
    other = trajectory_task.item_content({"episode_index": 1, "task": "put the cube in the bowl", "frames": rows})
    assert other["fps"] == pytest.approx(FPS) and other["series"]["action"]["values"] == \
        trajectory_task.item_content(episode(1, None))["series"]["action"]["values"]


def test_annotators_label_episodes_over_the_api_and_the_export_joins_back(db, tmp_path, episodes):
    records, video = episodes
    with db.write() as s:
        p = workflow.create_project(s, "demos", "trajectory", overlap=2,
                                    config={"labels": ["reach", "grasp", "place"], "boundary_tolerance": 2})
        other = workflow.create_project(s, "other", "trajectory")
        for u in ("alice", "bob"):
            workflow.add_member(s, p, u)
        workflow.add_member(s, other, "carol")
        pid = p.id
    assert workflow.import_records(db, "demos", [write(tmp_path / "eps.jsonl", records)]).imported == 2
    client = client_of(db)
    alice, bob, carol = (api_login(client, u, PW) for u in ("alice", "bob", "carol"))
    with db.read() as s:
        first = s.scalars(select(Item.id).where(Item.project_id == pid).order_by(Item.id)).first()
    media = f"/api/projects/{pid}/items/{first}/media/video-0"
    assert client.get(media).status_code == 401
    assert carol.get(media).status_code == 404 and alice.get(media).status_code == 404  # not theirs (yet)

    answers = {  # episode -> annotator -> answer; bob disagrees on episode 1's outcome and cuts a little later
        0: {"alice": {"success": True, "instruction": "put the red cube in the bowl",
                      "segments": [{"start": 0, "end": 12, "label": "reach"},
                                   {"start": 13, "end": 25, "label": "grasp"},
                                   {"start": 26, "end": 39, "label": "place"}]},
            "bob": {"success": "success", "instruction": "put the cube in the bowl",
                    "segments": "0 13 reach\n14-26 grasp\n27 39 place"}},
        1: {"alice": {"success": False, "instruction": "put the cube in the bowl",
                      "segments": [{"start": 0, "end": 20, "label": "reach"}]},
            "bob": {"success": True, "instruction": "put the cube in the bowl",
                    "segments": [{"start": 5, "end": 20, "label": "reach"},
                                 {"start": 21, "end": 30, "label": "grasp"}]}},
    }
    for who in (alice, bob):
        while True:
            nxt = who.post(f"/api/projects/{pid}/next").json()
            if nxt["item"] is None:
                break
            c, aid = nxt["item"]["content"], nxt["assignment"]["id"]
            k = c["episode_index"]
            assert "env_success" not in c  # the annotator judges; the environment's verdict is for reviewers
            assert "path" not in json.dumps(c["videos"]) and c["videos"][0]["camera"] == "observation.images.top"
            url = c["videos"][0]["url"]
            assert url.startswith(f"/api/projects/{pid}/items/") and url.endswith(f"#t={k * 4:g},{(k + 1) * 4:g}")
            whole = who.get(url.split("#")[0])
            assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
            part = who.client.get(url.split("#")[0], headers={**who.headers, "Range": "bytes=0-99"})
            assert part.status_code == 206 and part.content == whole.content[:100] and part.content[4:8] == b"ftyp"
            submit = f"/api/projects/{pid}/assignments/{aid}/submit"
            for bad, message in (({"instruction": "x"}, "success or a failure"),
                                 ({"success": True, "instruction": "  "}, "instruction is empty"),
                                 ({"success": True, "instruction": "x",
                                   "segments": [{"start": 0, "end": N, "label": "reach"}]}, "within frames 0-39"),
                                 ({"success": True, "instruction": "x",
                                   "segments": [{"start": 5, "end": 10, "label": "grasp"},
                                                {"start": 0, "end": 5, "label": "reach"}]}, "overlap"),
                                 ({"success": True, "instruction": "x",
                                   "segments": [{"start": 0, "end": 3, "label": "wave"}]}, "not one of"),
                                 ({"success": True, "instruction": "x", "segments": "0 3"}, "START END LABEL")):
                r = who.post(submit, json={"value": bad})
                assert r.status_code == 400 and message in r.json()["detail"], (bad, r.text)
            assert carol.post(submit, json={"value": answers[k][who.username]}).status_code == 404
            r = who.post(submit, json={"value": answers[k][who.username], "seconds": 12.5})
            assert r.status_code == 201, r.text

    admin = api_login(client, "admin", PW)
    rows = [json.loads(x) for x in admin.get(f"/api/projects/{pid}/export?format=trajectory").text.splitlines()]
    assert len(rows) == 4
    by_episode = {r.id: r for r in records}
    for row in rows:  # every label joins back to its episode by record id and by episode_index
        source = by_episode[row["record_id"]].content
        assert row["episode_index"] == source["episode_index"]
        assert row["env_success"] == source["success"] and row["n_frames"] == N and row["fps"] == FPS
        expected = answers[row["episode_index"]][row["annotator"]]
        assert row["success"] is (expected["success"] in (True, "success"))
        assert row["instruction"] == expected["instruction"]
        assert row["instruction_changed"] == (expected["instruction"] != "put the cube in the bowl")
        assert row["lineage"][0]["step"] == "trajectory_quality" and row["lineage"][-1]["step"] == "annotate.trajectory"
        assert json.loads(row["meta"]) == {"dataset": "sim"}
    bob0 = next(r for r in rows if r["annotator"] == "bob" and r["episode_index"] == 0)
    assert bob0["segments"] == [{"start": 0, "end": 13, "label": "reach"}, {"start": 14, "end": 26, "label": "grasp"},
                                {"start": 27, "end": 39, "label": "place"}]
    r = admin.get(f"/api/projects/{pid}/export?format=ratings")
    assert r.status_code == 400 and "trajectory" in r.json()["detail"]

    # agreement: success alpha like any nominal label (reference: the krippendorff package) and segment boundaries
    import krippendorff

    q = admin.get(f"/api/projects/{pid}/quality").json()
    ref = krippendorff.alpha(reliability_data=[[1, 0], [1, 1]], level_of_measurement="nominal")  # raters x episodes
    assert q["measures"]["success"]["alpha"] == pytest.approx(ref, abs=1e-4) and q["measures"]["success"]["items"] == 2
    seg = q["segments"]
    # episode 0: 6 boundaries each, all within 2 frames (offsets 0,1,1,1,1,0); episode 1: alice 0,20 vs bob 5,20,21,30
    # -> 20 matches 20 (21 would too, once); 6 + 1 matches of 8 (alice) and 10 (bob) boundaries
    assert seg["pairs"] == 2 and seg["tolerance"] == 2
    assert seg["boundary_precision"] == pytest.approx(7 / 8, abs=1e-4)
    assert seg["boundary_recall"] == pytest.approx(7 / 10, abs=1e-4)
    assert seg["boundary_f1"] == pytest.approx(2 * (7 / 8) * (7 / 10) / (7 / 8 + 7 / 10), abs=1e-4)
    assert seg["mean_offset"] == pytest.approx(4 / 7, abs=1e-4)
    assert seg["same_count"] == 0.5 and seg["label_agreement"] == 1.0
    page = client.get(f"/projects/{pid}/dashboard", headers=admin.headers)
    assert page.status_code == 200 and 'id="segment-agreement"' in page.text


def test_web_form_keyboard_page_and_error_keeps_the_answer(db, tmp_path, episodes):
    records, _video = episodes
    with db.write() as s:
        p = workflow.create_project(s, "demos", "trajectory")
        workflow.add_member(s, p, "alice")
        pid = p.id
    draft = episode(0, records[0].content["videos"]["observation.images.top"]["path"],
                    segments=[{"start": 0, "end": 9, "label": "reach"}])
    workflow.import_records(db, "demos", [write(tmp_path / "eps.jsonl", [Record("ep-0", draft, "trajectory")])])
    client = client_of(db)
    csrf = web_login(client, "alice", PW)
    client.post(f"/projects/{pid}/start", data={"csrf_token": csrf})
    page = client.get(f"/projects/{pid}/annotate")
    assert page.status_code == 200
    html = page.text
    assert '<script src="/static/trajectory.js" defer></script>' in html and 'id="timeline"' in html
    data = json.loads(re.search(r'<script type="application/json" id="trajectory-data">(.*?)</script>', html, re.S)
                      .group(1))
    assert data["n_frames"] == N and data["fps"] == FPS and set(data["series"]) == {"action", "observation.state"}
    assert data["videos"][0]["url"].endswith("#t=0,4")
    assert ">0 9 reach\n</textarea>" in html  # the draft segments are there to correct
    assert "put the cube in the bowl</textarea>" in html
    aid = re.search(r'name="assignment_id" value="(\d+)"', html).group(1)
    form = {"csrf_token": csrf, "assignment_id": aid, "success": "failure", "instruction": "open the drawer",
            "segments": "0 9 reach\n5 12 grasp", "note": "gripper slips", "seconds": "8"}
    r = client.post(f"/projects/{pid}/submit", data=form)
    assert r.status_code == 400 and "overlap" in r.text
    assert "0 9 reach\n5 12 grasp</textarea>" in r.text and re.search(r'id="success-no" required\s+checked', r.text)
    r = client.post(f"/projects/{pid}/submit", data={**form, "segments": "0 9 reach\n10-12 grasp"})
    assert r.status_code == 303, r.text
    with db.read() as s:
        value = s.scalar(select(Annotation.value))
    assert value == {"success": False, "instruction": "open the drawer", "note": "gripper slips",
                     "segments": [{"start": 0, "end": 9, "label": "reach"}, {"start": 10, "end": 12, "label": "grasp"}]}
    assert client.get("/static/trajectory.js").status_code == 200


def test_boundary_matching_is_a_maximum_matching():
    import networkx as nx

    rng = random.Random(7)
    for _ in range(300):
        a = sorted(rng.sample(range(60), rng.randint(0, 8)))
        b = sorted(rng.sample(range(60), rng.randint(0, 8)))
        tol = rng.randint(0, 6)
        g = nx.Graph()
        g.add_nodes_from((("a", i) for i in range(len(a))), bipartite=0)
        g.add_nodes_from((("b", j) for j in range(len(b))), bipartite=1)
        g.add_edges_from((("a", i), ("b", j)) for i, x in enumerate(a) for j, y in enumerate(b) if abs(x - y) <= tol)
        best = len(nx.bipartite.maximum_matching(g, top_nodes=[("a", i) for i in range(len(a))])) // 2
        found = trajectory_task.match_boundaries(a, b, tol)
        assert len(found) == best, (a, b, tol)
        assert all(abs(x - y) <= tol for x, y in found) and len({x for x, _ in found}) == len(found)
