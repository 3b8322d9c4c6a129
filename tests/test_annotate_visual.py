"""Visual annotation tasks: image pair preference (Pick-a-Pic), image edit instructions with masks (MagicBrush) and clip
rating on a rubric (Movie Gen). Real images made with Pillow, a real WebM made with PyAV, the real app over HTTP
(TestClient), SQLite everywhere and one PostgreSQL run of the whole import -> annotate -> export path."""

from __future__ import annotations

import io
import json
import re

import pytest
from annotate_support import BACKENDS, api_login, cheap_password_hashing, make_database, web_login
from sqlalchemy import func, select

from assay.annotate import workflow
from assay.annotate.models import Annotation, Assignment, Item
from assay.core.record import LineageEntry, Record
from assay.platform.users import create_user

PW = "password-123"
LINEAGE = [LineageEntry("image_text_alignment", "1", "abc123")]


# -- media made in the tests ---------------------------------------------------------------------------------------
def image_bytes(colour: str, size: tuple[int, int] = (32, 24), fmt: str = "PNG", label: str = "") -> bytes:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, colour)
    if label:
        ImageDraw.Draw(im).text((2, 2), label, fill="white")
    out = io.BytesIO()
    im.save(out, format=fmt)
    return out.getvalue()


def colour_of(data: bytes) -> str:
    from PIL import Image

    r, g, b = Image.open(io.BytesIO(data)).convert("RGB").getpixel((20, 20))
    return "red" if r > max(g, b) else "blue" if b > max(r, g) else "other"


def canvas_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """What the browser canvas sends: RGBA, transparent except the painted box."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(im).rectangle(box, fill=(255, 0, 64, 255))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def make_webm(path, seconds: int = 2, fps: int = 12) -> bytes:
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(seconds * fps):
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[:, :, 0] = i * 10
            frame[10:20, i * 2:i * 2 + 10, 1] = 255  # a square moving right
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def write_records(path, records: list[Record]) -> str:
    path.write_bytes(b"".join(r.to_json() + b"\n" for r in records))
    return str(path)


def pick_a_pic(n: int) -> list[Record]:
    """Pick-a-Pic rows: a prompt and two generated images; jpg_0 (red) is the one our annotators prefer."""
    return [Record(f"pick-{i}", {"caption": f"a red balloon {i}", "jpg_0": image_bytes("red", label=str(i)),
                                 "jpg_1": image_bytes("blue", label=str(i))}, "image_text",
                   meta={"source": "pickapic"}, lineage=LINEAGE) for i in range(n)]


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture
def db(tmp_path):
    cheap_password_hashing()
    database, cleanup = make_database("sqlite", tmp_path)
    yield database
    cleanup()


def make_client(db):
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app

    return TestClient(create_app(database=db), follow_redirects=False)


def users(db, *names: str, admin: bool = True) -> None:
    with db.write() as s:
        if admin:
            create_user(s, "admin", PW, "admin")
        for name in names:
            create_user(s, name, PW, "reviewer" if name.startswith("rev") else "annotator")


def ranged(user, url: str, byte_range: str):
    """GET with a Range header, as a browser's media element sends it."""
    return user.client.get(url, headers={**user.headers, "Range": byte_range})


def annotation_count(db) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Annotation))


# -- configuration -------------------------------------------------------------------------------------------------
def test_visual_task_configs_are_checked(db):
    with db.write() as s:
        with pytest.raises(workflow.WorkflowError, match="randomize_sides"):
            workflow.create_project(s, "p1", "preference", config={"randomize_sides": "sometimes"})
        with pytest.raises(workflow.WorkflowError, match="mask"):
            workflow.create_project(s, "p2", "image_edit", config={"mask": "always"})
        with pytest.raises(workflow.WorkflowError, match="max_upload_mb"):
            workflow.create_project(s, "p3", "image_edit", config={"max_upload_mb": 10_000})
        clips = workflow.create_project(s, "p4", "clip_rating")
        assert clips.config["dimensions"] == ["motion_quality", "physical_plausibility", "visual_quality",
                                              "text_alignment"]
        with pytest.raises(workflow.WorkflowError, match="dimension"):
            workflow.create_project(s, "p5", "clip_rating", config={"dimensions": []})


# -- image pair preference -----------------------------------------------------------------------------------------
def test_image_pairs_sides_per_assignment_media_access_and_dpo_export(db, tmp_path):
    users(db, "alice", "bob", "carol", "dave")
    with db.write() as s:
        picks = workflow.create_project(s, "picks", "preference", overlap=2,
                                        config={"randomize_sides": "assignment"})
        other = workflow.create_project(s, "other", "preference")
        for u in ("alice", "bob"):
            workflow.add_member(s, picks, u)
        workflow.add_member(s, other, "carol")
        pid, other_id = picks.id, other.id
    report = workflow.import_records(db, "picks", [write_records(tmp_path / "picks.jsonl", pick_a_pic(12))])
    assert report.imported == 12
    client = make_client(db)
    alice, bob = api_login(client, "alice", PW), api_login(client, "bob", PW)
    carol, dave = api_login(client, "carol", PW), api_login(client, "dave", PW)
    with db.read() as s:
        item_ids = sorted(s.scalars(select(Item.id).where(Item.project_id == pid)))

    # nobody outside the project, and no annotator before the item is theirs, can fetch its images
    url = f"/api/projects/{pid}/items/{item_ids[0]}/media/a"
    assert client.get(url).status_code == 401
    assert carol.get(url).status_code == 404 and dave.get(url).status_code == 404
    assert alice.get(url).status_code == 404
    assert carol.get(f"/api/projects/{other_id}/items/{item_ids[0]}/media/a").status_code == 404  # wrong project

    shown: dict[str, dict[int, bool]] = {"alice": {}, "bob": {}}
    for who in (alice, bob):
        while True:
            nxt = who.post(f"/api/projects/{pid}/next").json()
            if nxt["item"] is None:
                break
            c = nxt["item"]["content"]
            assert c["kind"] == "image" and c["a"].startswith(f"/api/projects/{pid}/items/")
            a_img = who.get(c["a"])
            assert a_img.status_code == 200 and a_img.headers["content-type"] == "image/png"
            assert "private" in a_img.headers["cache-control"]
            left_is_red = colour_of(a_img.content) == "red"
            assert colour_of(who.get(c["b"]).content) == ("blue" if left_is_red else "red")
            shown[who.username][nxt["item"]["id"]] = not left_is_red
            if who is alice and len(shown["alice"]) == 1:  # a member who is not on this item gets nothing of it
                n_before = annotation_count(db)
                assert carol.post(f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/submit",
                                  json={"value": {"choice": "a"}}).status_code == 404
                assert bob.post(f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/submit",
                                json={"value": {"choice": "a"}}).status_code == 404  # alice's slot: as if missing
                assert annotation_count(db) == n_before
            r = who.post(f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/submit",
                         json={"value": {"choice": "a" if left_is_red else "b"}})
            assert r.status_code == 201, r.text
    assert len(shown["alice"]) == len(shown["bob"]) == 12
    # orientation is a coin flip per assignment: both orders occur, and the two annotators of an item differ sometimes
    flips = list(shown["alice"].values()) + list(shown["bob"].values())
    assert 0 < sum(flips) < len(flips)
    assert any(shown["alice"][i] != shown["bob"][i] for i in item_ids)
    with db.read() as s:
        rows = s.execute(select(Annotation.value, Annotation.item_id, Annotation.user_id)).all()
        names = {u.id: u.username for u in s.scalars(select(workflow.User))}
    assert {r.value["choice"] for r in rows} == {"a"}  # the red image, jpg_0, in the record's orientation
    assert all(r.value["shown_swapped"] == shown[names[r.user_id]][r.item_id] for r in rows)

    admin = api_login(client, "admin", PW)
    dpo = [json.loads(x) for x in admin.get(f"/api/projects/{pid}/export?format=dpo").text.splitlines()]
    from assay.core.record import _restore_bytes

    dpo = [_restore_bytes(r) for r in dpo]
    assert len(dpo) == 12 and all(colour_of(r["chosen"]) == "red" and colour_of(r["rejected"]) == "blue"
                                  for r in dpo)
    assert all(r["kind"] == "image" and r["lineage"][0]["step"] == "image_text_alignment" for r in dpo)
    assert dpo[0]["lineage"][-1]["step"] == "annotate.preference" and dpo[0]["votes"]["a"] == 2


# -- image edit ----------------------------------------------------------------------------------------------------
def edit_records() -> list[Record]:
    before = image_bytes("red", (40, 30))
    after = image_bytes("blue", (40, 30))
    magicbrush = Record("mb-1", {"source_img": {"bytes": before, "path": "x.png"}, "target_img": {"bytes": after},
                                 "instruction": "make it blue"}, "image_text", meta={"source": "magicbrush"},
                        lineage=LINEAGE)
    plain = Record("it-1", {"caption": "a red square", "image": image_bytes("red", (40, 30), "JPEG")}, "image_text",
                   lineage=LINEAGE)
    broken = Record("it-2", {"caption": "broken", "image": b"\xff\xd8\xff truncated"}, "image_text")
    remote = Record("it-3", {"caption": "remote", "image": "https://example.org/a.jpg"}, "image_text")
    return [magicbrush, plain, broken, remote]


def test_image_edit_form_mask_upload_validation_and_export(db, tmp_path):
    from PIL import Image

    users(db, "erin", "fred", "rev")
    with db.write() as s:
        proj = workflow.create_project(s, "edits", "image_edit", config={"max_upload_mb": 0.01})
        workflow.add_member(s, proj, "erin")
        workflow.add_member(s, proj, "fred")
        workflow.add_member(s, proj, "rev", "reviewer")
        pid = proj.id
    report = workflow.import_records(db, "edits", [write_records(tmp_path / "edits.jsonl", edit_records())])
    assert report.imported == 2 and report.skipped == {"bad_image": 1, "remote_image": 1}

    client = make_client(db)
    csrf = web_login(client, "erin", PW)
    client.post(f"/projects/{pid}/start", data={"csrf_token": csrf})
    page = client.get(f"/projects/{pid}/annotate").text
    assert 'enctype="multipart/form-data"' in page and 'id="mask-canvas" width="40" height="30"' in page
    assert "make it blue" in page  # the record's instruction is the draft
    aid = re.search(r'name="assignment_id" value="(\d+)"', page).group(1)
    before_src = re.search(r'<img src="([^"]+)" alt="before image"', page).group(1)
    assert colour_of(client.get(before_src).content) == "red"

    def post(data: dict, files: dict | None = None):
        return client.post(f"/projects/{pid}/submit", data={"csrf_token": csrf, "assignment_id": aid, **data},
                           files=files or {})

    mask = canvas_mask((40, 30), (5, 5, 14, 9))  # 10 x 5 = 50 painted pixels
    wrong = [({"instruction": "x", "after_source": "item"}, {"mask": ("m.png", canvas_mask((20, 20), (1, 1, 2, 2)),
                                                                     "image/png")}, "mask is 20x20"),
             ({"instruction": "x", "after_source": "upload"},
              {"after_file": ("a.pdf", b"%PDF-1.4 not an image", "application/pdf")}, "not a PNG, JPEG"),
             ({"instruction": "x", "after_source": "upload"},
              {"after_file": ("big.bmp", b"BM" + b"\x00" * 20_000, "image/bmp")}, "larger than the limit"),
             ({"instruction": "  ", "after_source": "item"}, None, "instruction is empty"),
             ({"instruction": "x", "after_source": "url", "after_url": "javascript:alert(1)"}, None, "http(s) URL")]
    for data, files, message in wrong:
        r = post(data, files)
        assert r.status_code == 400 and message in r.text, (message, r.text[-500:])
    assert annotation_count(db) == 0  # nothing written, and the slot is still erin's
    with db.read() as s:
        assert s.get(Assignment, int(aid)).status == "leased"

    r = post({"instruction": "Make the square blue.", "after_source": "item"}, {"mask": ("mask.png", mask,
                                                                                          "image/png")})
    assert r.status_code == 303, r.text
    page = client.get(f"/projects/{pid}/annotate").text  # the second item: no after image in the record
    assert 'id="after-item"' not in page and "a red square" in page
    aid = re.search(r'name="assignment_id" value="(\d+)"', page).group(1)
    assert post({"instruction": "x", "after_source": "item"}).status_code == 400  # it has no after image
    upload = image_bytes("blue", (40, 30), "JPEG")
    r = post({"instruction": "Paint it blue.", "after_source": "upload"}, {"after_file": ("b.jpg", upload,
                                                                                          "image/jpeg")})
    assert r.status_code == 303, r.text

    with db.read() as s:
        anns = s.scalars(select(Annotation).order_by(Annotation.id)).all()
    first, second = anns[0].value, anns[1].value
    assert first["mask_pixels"] == 50 and first["after_source"] == "item" and first["after"] is None
    m = Image.open(io.BytesIO(first["mask"]))
    assert m.mode == "L" and m.size == (40, 30) and m.getpixel((6, 6)) == 255 and m.getpixel((30, 20)) == 0
    assert second["after"] == upload and second["mask"] is None

    # the mask and the upload are the author's and reviewers' to see, nobody else's
    mask_url = f"/api/projects/{pid}/annotations/{anns[0].id}/media/mask"
    assert client.get(mask_url).content == first["mask"]
    assert api_login(client, "fred", PW).get(mask_url).status_code == 404
    assert api_login(client, "rev", PW).get(mask_url).status_code == 200
    review = make_client(db)
    web_login(review, "rev", PW)
    assert mask_url in review.get(f"/projects/{pid}/review").text

    from assay.annotate.export import export

    res = export(db, "edits", "edit", tmp_path / "edit.parquet")
    assert res["rows"] == 2
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "edit.parquet").to_pylist()
    assert colour_of(rows[0]["before"]) == "red" and colour_of(rows[0]["after"]) == "blue"
    assert rows[0]["instruction"] == "Make the square blue." and rows[0]["mask"] == first["mask"]
    assert rows[1]["after"] == upload and rows[1]["mask"] is None and rows[1]["record_id"] == "it-1"
    assert [e["step"] for e in rows[0]["lineage"]] == ["image_text_alignment", "annotate.image_edit"]
    export(db, "edits", "edit", tmp_path / "edit.jsonl")
    lines = (tmp_path / "edit.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["annotator"] == "erin"


# -- clip rating ---------------------------------------------------------------------------------------------------
def clip_records(tmp_path) -> tuple[list[Record], bytes]:
    video = make_webm(tmp_path / "source.webm")
    keyframe = image_bytes("red", (64, 48), "JPEG")
    (tmp_path / "fake.mp4").write_text("this is not a video")
    clip = Record("clip-1", {"path": str(tmp_path / "source.webm"), "start": 0.5, "end": 1.5, "clip_path": None,
                             "keyframes": [keyframe, keyframe], "keyframe_times": [0.5, 1.0],
                             "caption": "a green square slides to the right"}, "video",
                  meta={"source": "source.webm", "fps": 12.0}, lineage=[LineageEntry("scene_split", "1", "f00")])
    whole = Record("clip-2", {"clip_path": str(tmp_path / "source.webm"), "caption": "whole"}, "video")
    in_bytes = Record("clip-3", {"video": video, "caption": "bytes"}, "video")
    frames_only = Record("clip-4", {"path": str(tmp_path / "gone.webm"), "keyframes": [keyframe], "caption": "kf"},
                         "video")
    missing = Record("clip-5", {"path": str(tmp_path / "gone.webm"), "caption": "missing"}, "video")
    fake = Record("clip-6", {"path": str(tmp_path / "fake.mp4"), "caption": "fake"}, "video")
    return [clip, whole, in_bytes, frames_only, missing, fake], video


def test_clip_rating_import_cli_video_ranges_and_ratings_export(db, tmp_path):
    from typer.testing import CliRunner

    from assay.annotate.cli import app as cli

    users(db, "gina", "hank")
    with db.write() as s:
        proj = workflow.create_project(s, "clips", "clip_rating", config={"note": "optional"})
        workflow.add_member(s, proj, "gina")
        pid = proj.id
    records, video = clip_records(tmp_path)
    path = write_records(tmp_path / "clips.jsonl", records)
    out = CliRunner().invoke(cli, ["import", "clips", path, "--db", db.url])
    assert out.exit_code == 0, out.output
    assert "imported 4" in out.output and "video_missing" in out.output and "not_a_video" in out.output

    client = make_client(db)
    gina = api_login(client, "gina", PW)
    hank = api_login(client, "hank", PW)
    nxt = gina.post(f"/api/projects/{pid}/next").json()
    c = nxt["item"]["content"]
    assert c["prompt"] == "a green square slides to the right" and c["video"].endswith("#t=0.5,1.5")
    assert str(tmp_path) not in json.dumps(nxt)  # no server paths, no bytes reach the annotator
    url = c["video"].split("#")[0]
    assert hank.get(url).status_code == 404  # not a member

    full = gina.get(url)
    assert full.status_code == 200 and full.content == video and full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-type"] == "video/webm"
    part = ranged(gina, url, "bytes=100-299")
    assert part.status_code == 206 and part.content == video[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(video)}"
    tail = ranged(gina, url, "bytes=-64")
    assert tail.status_code == 206 and tail.content == video[-64:]
    assert ranged(gina, url, f"bytes={len(video) + 10}-").status_code == 416
    kf = gina.get(c["keyframes"][1])
    assert kf.status_code == 200 and kf.headers["content-type"] == "image/jpeg"
    assert gina.get(url.replace("/video", "/keyframe-9")).status_code == 404

    sub = f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/submit"
    bad = gina.post(sub, json={"value": {"scores": {"motion_quality": 9}}})
    assert bad.status_code == 400 and annotation_count(db) == 0
    scores = {"motion_quality": 4, "physical_plausibility": 2, "visual_quality": 5, "text_alignment": 3}
    assert gina.post(sub, json={"value": {"scores": scores, "physics_note": "the square passes through the wall"}},
                     ).status_code == 201

    # the clip held as bytes in the record is served from the database with ranges too
    for _ in range(3):
        nxt = gina.post(f"/api/projects/{pid}/next").json()
        c = nxt["item"]["content"]
        if c["prompt"] == "bytes":
            r = ranged(gina, c["video"], "bytes=0-9")
            assert r.status_code == 206 and r.content == video[:10] and r.headers["content-type"] == "video/webm"
        if c["prompt"] == "kf":
            assert c["video"] is None and len(c["keyframes"]) == 1
        gina.post(f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/submit",
                  json={"value": {"scores": {k: 3 for k in scores}}})

    from assay.annotate.export import export

    export(db, "clips", "ratings", tmp_path / "ratings.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "ratings.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    first = next(r for r in rows if r["record_id"] == "clip-1")
    assert first["score_physical_plausibility"] == 2 and first["physics_note"] == "the square passes through the wall"
    assert first["video_path"] == str((tmp_path / "source.webm").resolve())
    assert (first["start"], first["end"]) == (0.5, 1.5)
    assert [e["step"] for e in first["lineage"]] == ["scene_split", "annotate.clip_rating"]
    q = api_login(client, "admin", PW).get(f"/api/projects/{pid}/quality").json()
    assert set(q["measures"]) == set(scores)  # the rubric dimensions feed the agreement statistics


# -- the whole path on both databases ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_visual_import_annotate_export_on_each_database(backend, tmp_path):
    cheap_password_hashing()
    database, cleanup = make_database(backend, tmp_path)
    try:
        users(database, "ivan")
        with database.write() as s:
            for name, task in (("v-picks", "preference"), ("v-edits", "image_edit"), ("v-clips", "clip_rating")):
                workflow.add_member(s, workflow.create_project(s, name, task), "ivan")
        clips, _video = clip_records(tmp_path)
        assert workflow.import_records(database, "v-picks", [write_records(tmp_path / "p.jsonl", pick_a_pic(2))]
                                       ).imported == 2
        assert workflow.import_records(database, "v-edits", [write_records(tmp_path / "e.jsonl", edit_records())]
                                       ).imported == 2
        assert workflow.import_records(database, "v-clips", [write_records(tmp_path / "c.jsonl", clips)]
                                       ).imported == 4
        client = make_client(database)
        ivan = api_login(client, "ivan", PW)
        projects = {p["name"]: p["id"] for p in ivan.get("/api/projects").json()}
        mask = "data:image/png;base64," + __import__("base64").b64encode(canvas_mask((40, 30), (0, 0, 3, 3))).decode()
        answers = {"v-picks": {"choice": "tie"},
                   "v-edits": {"instruction": "make it blue", "after_source": "url",
                               "after_url": "https://example.org/after.png", "mask": mask},
                   "v-clips": {"scores": {"motion_quality": 5, "physical_plausibility": 4, "visual_quality": 3,
                                          "text_alignment": 2}, "physics_note": ""}}
        for name, value in answers.items():
            nxt = ivan.post(f"/api/projects/{projects[name]}/next").json()
            r = ivan.post(f"/api/projects/{projects[name]}/assignments/{nxt['assignment']['id']}/submit",
                          json={"value": value})
            assert r.status_code == 201, r.text
        from assay.annotate.export import export

        assert export(database, "v-picks", "annotations", tmp_path / "a.jsonl")["rows"] == 1
        edits = export(database, "v-edits", "edit", tmp_path / "e.parquet")
        clip_rows = export(database, "v-clips", "ratings", tmp_path / "c.parquet")
        import pyarrow.parquet as pq

        edit_row = pq.read_table(tmp_path / "e.parquet").to_pylist()[0]
        assert edits["rows"] == 1 and edit_row["after_url"] == "https://example.org/after.png"
        assert edit_row["mask_pixels"] == 16 and edit_row["after"] is None and edit_row["record_id"] == "mb-1"
        clip_row = pq.read_table(tmp_path / "c.parquet").to_pylist()[0]
        assert clip_rows["rows"] == 1 and clip_row["score_motion_quality"] == 5
        assert clip_row["lineage"][-1]["step"] == "annotate.clip_rating"
        listed = ivan.get(f"/api/projects/{projects['v-edits']}/annotations").json()
        assert listed[0]["value"]["mask"]["$bytes"]  # bytes in answers survive the JSON API
    finally:
        cleanup()


def test_import_pairs_generated_images_by_caption(db, tmp_path):
    """Several generations per prompt (single image-text records, one with its bytes on disk) become image pairs."""
    from typer.testing import CliRunner

    from assay.annotate.cli import app as cli

    users(db, "jo")
    with db.write() as s:
        workflow.create_project(s, "gen-picks", "preference")
        workflow.create_project(s, "not-prefs", "image_edit")
    (tmp_path / "y1.png").write_bytes(image_bytes("blue", label="y1"))
    gens = [Record("x1", {"caption": "x", "image": image_bytes("red", label="x1")}, "image_text", lineage=LINEAGE),
            Record("y1", {"caption": "y", "image_path": str(tmp_path / "y1.png")}, "image_text"),
            Record("x2", {"caption": "x", "image": image_bytes("blue", label="x2")}, "image_text"),
            Record("x3", {"caption": "x", "image": image_bytes("red", label="x3")}, "image_text"),
            Record("y2", {"caption": "y", "image": image_bytes("red", label="y2")}, "image_text"),
            Record("t1", "just text", "text")]
    path = write_records(tmp_path / "gens.jsonl", gens)
    out = CliRunner().invoke(cli, ["import", "gen-picks", path, "--pair-by-caption", "--db", db.url])
    assert out.exit_code == 0, out.output
    assert "imported 2" in out.output and "'unpaired_image': 1" in out.output and "'not_image_text': 1" in out.output
    with db.read() as s:
        items = s.scalars(select(Item).order_by(Item.id)).all()
    assert [i.meta["parents"] for i in items] == [["x1", "x2"], ["y1", "y2"]]
    assert items[0].content["a"] == gens[0].content["image"] and items[0].content["kind"] == "image"
    assert items[1].content["a"] == (tmp_path / "y1.png").read_bytes()  # read from disk at import
    assert items[0].lineage[0]["step"] == "image_text_alignment"
    refused = CliRunner().invoke(cli, ["import", "not-prefs", path, "--pair-by-caption", "--db", db.url])
    assert refused.exit_code == 2 and "preference project" in refused.output
