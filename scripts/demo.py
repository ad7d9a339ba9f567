"""`make demo`: generate images with the MindVideo hook against the bundled emulator.

With MINDVIDEO_API_KEY set, talks to the real API (MINDVIDEO_BASE_URL, default
https://api.mindvideo.ai) instead, and is charged for it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "demo-output"
PROMPTS = [
    "A red fox in fresh snow, watercolour",
    "一只橘猫坐在窗台上看夕阳,水彩画风格",
    "A blue whale under the northern lights",
]


def main() -> int:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="mindvideo-demo-"))
    from airflow_provider_mindvideo.hooks import MindVideoHook

    with ExitStack() as stack:
        api_key = os.environ.get("MINDVIDEO_API_KEY")
        if api_key:
            base_url = os.environ.get("MINDVIDEO_BASE_URL", "https://api.mindvideo.ai")
            where = f"the real MindVideo API at {base_url}"
        else:
            from airflow_provider_mindvideo.emulator import MindVideoEmulator

            emulator = stack.enter_context(MindVideoEmulator())
            base_url, api_key = emulator.base_url, emulator.api_key
            where = f"the bundled emulator at {base_url}"
        os.environ["AIRFLOW_CONN_MINDVIDEO_DEFAULT"] = json.dumps(
            {"conn_type": "mindvideo", "host": base_url, "password": api_key}
        )
        print(f"MindVideo demo: generating {len(PROMPTS)} images with gpt-image-2 on {where}\n")
        OUTPUT.mkdir(exist_ok=True)
        hook = stack.enter_context(MindVideoHook())
        tasks = [hook.create_task("gpt-image-2", {"prompt": p, "size": "16:9"}) for p in PROMPTS]
        rows = []
        for prompt, task in zip(PROMPTS, tasks, strict=True):
            while not (task := hook.get_task(task.task_id)).is_terminal:
                time.sleep(0.5)
            files = []
            for index, url in enumerate(task.output_urls):
                path = OUTPUT / f"{task.task_id}_{index}.png"
                path.write_bytes(httpx.get(url, follow_redirects=True, timeout=60).content)
                files.append(str(path.relative_to(ROOT)))
            rows.append((prompt, task.task_id, task.status.value, task.cost_actual, ", ".join(files) or "-"))

    widths = [max(len(str(row[i])) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    total = sum(row[3] or 0 for row in rows)
    print(f"\n{len(rows)} task(s), total cost {total:.4f}; images saved under {OUTPUT.relative_to(ROOT)}/")
    return 0 if all(row[2] == "succeeded" for row in rows) else 1


HEADER = ("prompt", "MindVideo task", "status", "cost", "file")

if __name__ == "__main__":
    sys.exit(main())
