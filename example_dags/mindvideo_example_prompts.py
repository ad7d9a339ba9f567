"""What the content pipeline and the review example share: prompt params, and the task that turns them into inputs.

Not a DAG. Airflow puts the DAGs folder on ``sys.path``, so the examples import this module by
its name; copy it along with them.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task


def prompt_params(prompts: list[str], *, size: str, destination: str, destination_help: str) -> dict[str, Param]:
    """The params of a DAG that makes one image per prompt and saves it under ``destination``."""
    return {
        "prompts": Param(prompts, type="array", minItems=1, description="One image per prompt"),
        "size": Param(size, type="string", description="Aspect ratio, e.g. 16:9, 1:1, 9:16"),
        "destination": Param(destination, type="string", description=destination_help),
    }


@task
def build_inputs(params: dict[str, Any]) -> list[dict[str, Any]]:
    """One gpt-image-2 input per prompt, all of the run's size."""
    return [{"prompt": prompt, "size": params["size"]} for prompt in params["prompts"]]
