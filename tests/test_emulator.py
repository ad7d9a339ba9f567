"""The emulator as a product: its contract, its media, its knobs, its command."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from airflow_provider_mindvideo.emulator import EmulatorConfig, EmulatorState, Fault, MindVideoEmulator
from airflow_provider_mindvideo.emulator.media import background_colour, image_dimensions, render_mp4, render_png


def client(emulator: MindVideoEmulator, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key or emulator.api_key}"}
    return httpx.Client(base_url=emulator.base_url, headers=headers)


def create(
    http: httpx.Client, prompt: str = "a red kite", model: str = "gpt-image-2", **input: object
) -> httpx.Response:
    return http.post("/api/v1/tasks", json={"model": model, "input": {"prompt": prompt, **input}})


def finish(http: httpx.Client, task_id: str) -> dict[str, object]:
    while True:  # bounded by the pytest timeout; the emulator's durations are fractions of a second
        body = http.get(f"/api/v1/tasks/{task_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.02)


def test_requests_need_a_valid_key(mindvideo_emulator: MindVideoEmulator) -> None:
    assert httpx.post(f"{mindvideo_emulator.base_url}/api/v1/tasks", json={}).status_code == 401
    with client(mindvideo_emulator, "mv_live_other") as http:
        assert create(http).status_code == 401
    assert mindvideo_emulator.state.charged_tasks == 0


def test_tasks_are_invisible_to_other_keys() -> None:
    with MindVideoEmulator(config=EmulatorConfig(api_keys=("key_a", "key_b"))) as emulator:
        a, b = client(emulator, "key_a"), client(emulator, "key_b")
        task_id = create(a).json()["task_id"]
        assert a.get(f"/api/v1/tasks/{task_id}").status_code == 200
        assert b.get(f"/api/v1/tasks/{task_id}").status_code == 404
        assert b.get(f"/api/v1/tasks/{task_id}/events").status_code == 404


def test_idempotency_is_per_key_and_payload(mindvideo_emulator: MindVideoEmulator) -> None:
    with client(mindvideo_emulator) as http:
        headers = {"Idempotency-Key": "abc"}
        first = http.post("/api/v1/tasks", json={"model": "gpt-image-2", "input": {"prompt": "x"}}, headers=headers)
        again = http.post("/api/v1/tasks", json={"model": "gpt-image-2", "input": {"prompt": "x"}}, headers=headers)
        other = http.post("/api/v1/tasks", json={"model": "gpt-image-2", "input": {"prompt": "y"}}, headers=headers)
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json()["task_id"] == first.json()["task_id"]
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert mindvideo_emulator.state.charged_tasks == 1


def test_creates_are_counted_per_idempotency_key(mindvideo_emulator: MindVideoEmulator) -> None:
    with client(mindvideo_emulator) as http:
        for key in ("k1", "k2", "k2", "k3", "k3", "k3"):
            body = {"model": "gpt-image-2", "input": {"prompt": key}}
            assert http.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": key}).status_code < 300
        create(http)  # no key: a create, but nothing to count it under
    assert mindvideo_emulator.state.creates_by_key == {"k1": 1, "k2": 2, "k3": 3}
    state = httpx.get(f"{mindvideo_emulator.base_url}/_emulator/state").json()
    assert state["creates_per_key"] == {"1": 1, "2": 1, "3": 1}
    assert state["charged_tasks"] == 4


def test_bad_requests(mindvideo_emulator: MindVideoEmulator) -> None:
    with client(mindvideo_emulator) as http:
        assert http.post("/api/v1/tasks", content=b"{nope").status_code == 400
        assert http.post("/api/v1/tasks", json={"input": {}}).status_code == 422
        refused = create(http, size="7:5")
        assert refused.status_code == 422
        assert "input.size = '7:5'" in refused.json()["error"]["message"]
    assert mindvideo_emulator.state.charged_tasks == 0


@pytest.mark.parametrize("typo", ["gpt-image2", "gpt-image-9"])
def test_unknown_models_are_refused_and_not_charged(mindvideo_emulator: MindVideoEmulator, typo: str) -> None:
    # As the API would: a DAG tested offline against the emulator catches the typo too.
    with client(mindvideo_emulator) as http:
        refused = create(http, model=typo)
    assert refused.status_code == 422
    assert refused.json()["error"]["message"].startswith(f"model = {typo!r}: not a MindVideo model")
    assert "did you mean 'gpt-image-2'?" in refused.json()["error"]["message"]
    assert mindvideo_emulator.state.charged_tasks == 0
    assert mindvideo_emulator.state.tasks == {}


def test_models_newer_than_the_catalogue_can_be_added() -> None:
    config = EmulatorConfig(extra_models={"veo4-preview": "video"})
    with MindVideoEmulator(config=config) as emulator, client(emulator) as http:
        created = create(http, "dolphins", model="veo4-preview")
        assert created.status_code == 201
        assert create(http, model="veo5-preview").status_code == 422
    (task,) = emulator.state.tasks.values()
    assert (task.kind, task.cost) == ("video", 0.01)


def test_the_command_takes_extra_models() -> None:
    from airflow_provider_mindvideo.emulator.server import emulator_process

    with emulator_process("--extra-model", "veo4-preview=video", "--extra-model", "img-x=image") as base_url:
        headers = {"Authorization": "Bearer mv_test_emulator"}
        for model in ("veo4-preview", "img-x"):
            body = {"model": model, "input": {"prompt": "x"}}
            assert httpx.post(f"{base_url}/api/v1/tasks", json=body, headers=headers).status_code == 201
        kinds = {t["model"]: t["kind"] for t in httpx.get(f"{base_url}/_emulator/state").json()["tasks"]}
    assert kinds == {"veo4-preview": "video", "img-x": "image"}


def test_lifecycle_outputs_and_events(mindvideo_emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    real_clock = mindvideo_emulator.state.clock
    created_at = real_clock()
    # Stopped while it is created and first looked at: a busy machine may take longer than its
    # 0.05 s queue between the create and the answer, or the next request.
    monkeypatch.setattr(mindvideo_emulator.state, "clock", lambda: created_at)
    with client(mindvideo_emulator) as http:
        created = create(http, "a blue whale", size="9:16").json()
        assert created["status"] == "queued"
        assert http.get(f"/files/{created['task_id']}/0.png").status_code == 404  # not made yet
        monkeypatch.setattr(mindvideo_emulator.state, "clock", real_clock)
        done = finish(http, created["task_id"])
        assert done["cost_actual"] == done["cost_estimate"] == 0.0135
        (image,) = done["output"]["images"]  # type: ignore[index]
        png = httpx.get(image["url"])
        assert png.headers["content-type"] == "image/png"
        width, height = struct.unpack(">II", png.content[16:24])
        assert (width, height) == (216, 384)
        events = http.get(f"/api/v1/tasks/{created['task_id']}/events").json()["events"]
        assert [e["type"] for e in events] == ["task.created", "task.processing", "task.succeeded"]

        video = finish(http, create(http, "dolphins", model="veo3-1-fast").json()["task_id"])
        (clip,) = video["output"]["videos"]  # type: ignore[index]
        mp4 = httpx.get(clip["url"])
        assert mp4.headers["content-type"] == "video/mp4"
        assert mp4.content[4:8] == b"ftyp"
        assert httpx.get(clip["url"].replace(".mp4", ".png")).status_code == 404


@pytest.mark.parametrize(
    ("outcome", "status", "error"),
    [
        ("failed", "failed", "The model could not generate this request"),
        ("cancelled", "cancelled", "The model could not generate this request"),
    ],
)
def test_scripted_outcomes(mindvideo_emulator: MindVideoEmulator, outcome: str, status: str, error: str) -> None:
    mindvideo_emulator.script("doomed", outcome)
    with client(mindvideo_emulator) as http:
        body = finish(http, create(http, "a doomed ship").json()["task_id"])
        assert body["status"] == status
        assert body["error"]["message"] == error  # type: ignore[index]
        assert body["output"] is None
        events = http.get(f"/api/v1/tasks/{body['task_id']}/events").json()["events"]
        assert events[-1]["message"] == error


def test_never_finishing_and_empty_output(
    mindvideo_emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    mindvideo_emulator.script("forever", "never")
    mindvideo_emulator.script("empty", "no_output")
    with client(mindvideo_emulator) as http:
        stuck = create(http, "forever young").json()
        empty = finish(http, create(http, "empty room").json()["task_id"])
        assert empty["output"] == {"images": []}
        assert http.get(f"/files/{empty['task_id']}/0.png").status_code == 404
        # An hour on, by the emulator's clock: far past every configured duration, with no sleep.
        real_clock = mindvideo_emulator.state.clock
        monkeypatch.setattr(mindvideo_emulator.state, "clock", lambda: real_clock() + 3600)
        assert http.get(f"/api/v1/tasks/{stuck['task_id']}").json()["status"] == "processing"
    assert [t["terminal_at"] is None for t in mindvideo_emulator.state.snapshot()["tasks"]] == [True, False]


def test_control_api_over_http(mindvideo_emulator: MindVideoEmulator) -> None:
    base = mindvideo_emulator.base_url
    assert (
        httpx.post(f"{base}/_emulator/faults", json={"kind": "status", "status": 503, "route": "get"}).status_code
        == 200
    )
    assert httpx.post(f"{base}/_emulator/faults", json={"kind": "status", "bogus": 1}).status_code == 422
    assert httpx.post(f"{base}/_emulator/scripts", json={"match": "x", "outcome": "failed"}).status_code == 200
    with client(mindvideo_emulator) as http:
        task_id = create(http).json()["task_id"]
        assert http.get(f"/api/v1/tasks/{task_id}").status_code == 503
        assert http.get(f"/api/v1/tasks/{task_id}").status_code == 200
    state = httpx.get(f"{base}/_emulator/state").json()
    assert state["charged_tasks"] == 1
    assert state["requests"] == {"create": 1, "get": 2}
    assert state["total_charged"] == 0.0135
    assert httpx.post(f"{base}/_emulator/reset").json()["charged_tasks"] == 0


def test_time_is_injectable() -> None:
    now = [1000.0]
    state = EmulatorState(EmulatorConfig(queued_seconds=1, processing_seconds={"image": 2}), clock=lambda: now[0])
    task, problem, replayed = state.create_task("k", "gpt-image-2", {"prompt": "x"}, None)
    assert task is not None
    assert (problem, replayed) == (None, False)
    for moment, status in ((1000.5, "queued"), (1001.5, "processing"), (1003.0, "succeeded")):
        assert task.status_at(moment) == status
    assert task.terminal_at == 1003.0


def test_media_helpers() -> None:
    assert background_colour("一只橘猫") == (235, 130, 30)
    assert background_colour("red then blue") == (200, 40, 40)
    assert background_colour("no colour here") == background_colour("no colour here")
    assert image_dimensions("16:9") == (384, 216)
    assert image_dimensions("1881x836") == (384, 171)
    assert image_dimensions("auto") == image_dimensions(None) == (384, 384)
    assert image_dimensions("1:0") == (384, 384)
    assert render_png({"prompt": "x"}, index=1).startswith(b"\x89PNG")
    assert b"dolphins" in render_mp4({"prompt": "dolphins"})


def pixels(png: bytes) -> list[bytes]:
    """The RGB rows of one of the emulator's PNGs (8-bit RGB, filter 0 on every row)."""
    width, height = struct.unpack(">II", png[16:24])
    start = png.index(b"IDAT") + 4
    raw = zlib.decompress(png[start : start + struct.unpack(">I", png[start - 8 : start - 4])[0]])
    stride = 1 + 3 * width
    return [raw[row * stride + 1 : (row + 1) * stride] for row in range(height)]


def test_text_the_bitmap_font_cannot_draw_is_left_out_not_boxed() -> None:
    # A CJK prompt showed a row of empty boxes; now the image shows only what it can draw.
    cjk = {"prompt": "一只橘猫坐在窗台上看夕阳"}
    background = bytes(background_colour(cjk["prompt"]))
    assert all(row == background * (len(row) // 3) for row in pixels(render_png(cjk)))
    # (A colour word fixes the background, which otherwise comes from a hash of the whole prompt.)
    assert pixels(render_png({"prompt": "A red cat 猫 at dusk"})) == pixels(render_png({"prompt": "A red cat at dusk"}))
    assert pixels(render_png({"prompt": "Red café crème"})) == pixels(render_png({"prompt": "Red cafe creme"}))
    assert pixels(render_png({"prompt": "a red kite"})) != pixels(render_png({"prompt": "a red kit"}))
    assert "一只橘猫".encode() in render_png(cjk)  # the whole prompt stays in the file's metadata


def test_the_command_serves_until_stopped(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_mindvideo.emulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--api-key",
            "mv_test_cli",
        ],
        stdout=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        # Until it has started, however long a busy machine takes (a 60 s bound failed under load):
        # one that never does is stopped by the test's timeout (pytest-timeout).
        while not (port_file.exists() and port_file.read_text()):
            assert process.poll() is None, "the emulator exited"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        created = httpx.post(
            f"{base}/api/v1/tasks",
            json={"model": "gpt-image-2", "input": {"prompt": "x"}},
            headers={"Authorization": "Bearer mv_test_cli"},
            timeout=120,  # a hang guard, not a speed target: the first answer of a fresh process
        )
        assert created.status_code == 201
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert b"mv_test_cli" in process.stdout.read()  # type: ignore[union-attr]


def test_emulator_process_serves_until_the_block_ends() -> None:
    from airflow_provider_mindvideo.emulator.server import emulator_process

    with emulator_process("--rate-limit", "1") as base_url:
        headers = {"Authorization": "Bearer mv_test_emulator"}
        statuses = [httpx.get(f"{base_url}/api/v1/tasks/t", headers=headers).status_code for _ in range(2)]
        assert statuses == [404, 429]  # its options reach it: one request a second
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/_emulator/state")


def test_peak_of_remote_tasks_generating_at_once() -> None:
    # What an account-wide cap (an Airflow pool) bounds: remote tasks created and not yet
    # terminal at the same moment, whoever created them.
    now = [1000.0]
    state = EmulatorState(EmulatorConfig(queued_seconds=1, processing_seconds={"image": 2}), clock=lambda: now[0])
    for prompt in ("a", "b"):
        state.create_task("k", "gpt-image-2", {"prompt": prompt}, None)
    now[0] = 1002.0
    state.create_task("k", "gpt-image-2", {"prompt": "c"}, None)  # a and b are still processing
    now[0] = 1010.0
    state.create_task("k", "gpt-image-2", {"prompt": "d"}, None)  # alone: the others ended at 1003, 1005
    snapshot = state.snapshot()
    assert snapshot["max_generating"] == 3
    assert snapshot["generating"] == 1
    assert state.reset() is None and state.snapshot()["max_generating"] == 0


def test_peak_of_create_requests_in_flight(mindvideo_emulator: MindVideoEmulator) -> None:
    # Every create answered 2 s late: three sent together are in flight together; the polls
    # sent meanwhile count as API requests in flight but not as creates.
    mindvideo_emulator.state.add_fault(Fault(kind="delay", route="create", seconds=2, times=3))
    with client(mindvideo_emulator) as http, ThreadPoolExecutor(4) as pool:
        created = list(pool.map(lambda prompt: create(http, prompt), ["one", "two", "three"]))
        assert [response.status_code for response in created] == [201, 201, 201]
        for response in created:
            finish(http, response.json()["task_id"])
    snapshot = mindvideo_emulator.state.snapshot()
    assert snapshot["max_in_flight_creates"] == 3
    assert snapshot["in_flight_creates"] == 0
    # Zeroed over HTTP for a test that measures one stretch, tasks kept.
    reset = httpx.post(f"{mindvideo_emulator.base_url}/_emulator/reset-counters").json()
    assert (reset["max_in_flight_creates"], reset["charged_tasks"]) == (0, 3)
    assert [task["created_at"] <= time.time() for task in reset["tasks"]] == [True, True, True]


def test_held_tasks_are_released_on_demand(mindvideo_emulator: MindVideoEmulator) -> None:
    # A `never` script holds tasks for as long as a test needs (a rolling restart of the
    # triggerers under thousands of waits), then the control API lets them succeed at once.
    base = mindvideo_emulator.base_url
    httpx.post(f"{base}/_emulator/scripts", json={"match": "held", "outcome": "never"}).raise_for_status()
    with client(mindvideo_emulator) as http:
        held = [create(http, f"held {i}").json()["task_id"] for i in range(2)]
        other = create(http, "free").json()["task_id"]
        assert httpx.post(f"{base}/_emulator/release", json={"match": "nothing"}).json()["released"] == 0
        assert httpx.post(f"{base}/_emulator/release", json={"match": "held"}).json()["released"] == 2
        assert httpx.post(f"{base}/_emulator/release", json={"bogus": 1}).status_code == 422
        bodies = [http.get(f"/api/v1/tasks/{task_id}").json() for task_id in held]
        assert [body["status"] for body in bodies] == ["succeeded", "succeeded"]
        assert all(body["output"]["images"] for body in bodies)
        assert finish(http, other)["status"] == "succeeded"
    assert mindvideo_emulator.state.charged_tasks == 3


def test_the_command_help_starts_with_plain_text() -> None:
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "airflow_provider_mindvideo.emulator", "--help"], capture_output=True, text=True
    ).stdout
    description = shown.split("\n\n")[1]
    assert "``" not in shown and description.startswith("Serve the MindVideo emulator"), description


def test_image_text_breaks_between_words() -> None:
    from airflow_provider_mindvideo.emulator.media import text_lines

    assert text_lines("A red fox in fresh snow at sunrise, watercolour", 12) == [
        "A RED FOX IN",
        "FRESH SNOW",
        "AT SUNRISE,",
        "WATERCOLOUR",
    ]
    assert text_lines("supercalifragilistic", 8) == ["SUPERCAL", "IFRAGILI", "STIC"]  # only a too-long word is cut
