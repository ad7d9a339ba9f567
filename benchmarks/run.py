"""``make bench``: every benchmark, ours beside its baseline, printed and written to ``results.md``.

The page is a list of sections (``SECTIONS``), each a function that measures and returns its
own lines and targets; a new benchmark is one more function in that list. Targets are checked
here and reported as met or missed (by how much); they are never test assertions. Every
sentence that compares figures is chosen by the figures of the same run.

Usage: ``python benchmarks/run.py [--waits 500,5000,20000] [--repeats 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_mindvideo.emulator.server import emulator_process
from benchmarks import imports, roundtrip
from benchmarks.machine import machine
from benchmarks.triggerer import API_KEY, DRIFT_ARRIVALS, DRIFT_MODELS, DRIFT_SPREAD, DRIFTING, Workload, run_workload

RESULTS = Path(__file__).with_name("results.md")

# The operators' defaults (first check after 5 s, never more than 60 s apart), and tasks that
# take from 10 s (a fast image) to 5 minutes (a long video).
FULL = {"poll_interval": 5.0, "max_poll_interval": 60.0, "shortest": 10.0, "longest": 300.0}
QUICK = {"poll_interval": 2.0, "max_poll_interval": 15.0, "shortest": 8.0, "longest": 40.0}
# The issue set its targets at 5,000 waits: they are read there (at the largest N where ours and
# the baseline both finished if that one did not), and the floor is measured there only (its cost
# per poll does not depend on N; what a trigger of its own costs in Airflow's runner, memory and
# the stall at start, is read beside ours).
TARGETS_AT = {"full": 5000, "quick": 100}
# Ours at the baseline's schedule is there to compare with the baseline per request; past this N
# the baseline does not finish (it opens a connection per poll: "Too many open files").
FIXED_UP_TO = 5000
SIZES = {"full": "500,5000,20000", "quick": "100"}
KIND_NAMES = {
    "ours": "ours",
    "ours_cold": "ours, not learning (the schedule of old)",
    "ours_fixed": "ours at the baseline's schedule",
    "baseline": "baseline",
    "floor": "floor",
}


@dataclass
class Run:
    """What every section may use: the options, the emulator, and where the time went."""

    quick: bool
    sizes: list[int]
    repeats: int
    base_url: str
    workload: dict[str, float]
    command: str
    kinds: tuple[str, ...] = tuple(KIND_NAMES)
    #: Every triggerer run so far, by (mix, N, kind): a later section reuses an earlier one's.
    measured: dict[tuple[str, int, str], list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Section:
    title: str
    lines: list[str]
    targets: list[tuple[str, str, bool]] = field(default_factory=list)


# -- helpers ------------------------------------------------------------------------------------------


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def spread(values: list[float]) -> float:
    """Half the range between repeats, as a fraction of their mean (0 with one repeat)."""
    middle = mean(values)
    return (max(values) - min(values)) / 2 / abs(middle) if len(values) > 1 and middle else 0.0


def cell(values: list[float], pattern: str) -> str:
    text = pattern.format(mean(values))
    noise = spread(values)
    return f"{text} ±{100 * noise:.0f}%" if len(values) > 1 and noise >= 0.005 else text


def times(ratio: float) -> str:
    return f"{ratio:.2f}x"


# -- section: thousands of waits in one triggerer ----------------------------------------------------

ROWS: list[tuple[str, str, str]] = [
    # (label, result key, format)
    ("wall time until all events (s)", "wall_s", "{:.1f}"),
    ("CPU of the trigger runner (s)", "cpu_s", "{:.2f}"),
    ("CPU per completed wait (ms)", "cpu_per_wait_ms", "{:.2f}"),
    ("CPU per request (ms)", "cpu_per_request_ms", "{:.2f}"),
    ("supervisor CPU per wait (ms)", "supervisor_cpu_per_wait_ms", "{:.2f}"),
    ("peak RSS of the runner (MiB)", "peak_rss_mib", "{:.0f}"),
    ("RSS per wait alive (KiB)", "rss_per_wait_kib", "{:.1f}"),
    ("TCP connections opened", "connections", "{:.0f}"),
    ("HTTP requests made", "requests", "{:.0f}"),
    ("requests per wait", "requests_per_wait", "{:.1f}"),
    ("event-loop lag p50 (ms)", "lag_p50_ms", "{:.1f}"),
    ("event-loop lag p99 (ms)", "lag_p99_ms", "{:.1f}"),
    ("event-loop lag max (ms)", "lag_max_ms", "{:.0f}"),
    ("stall at start (ms)", "start_stall_ms", "{:.0f}"),
    ("... Airflow decoding the hand-over (ms)", "handover_stall_ms", "{:.0f}"),
    ("... the rest: the waits starting (ms)", "start_stall_waits_ms", "{:.0f}"),
    ("... longest full garbage collection meanwhile (ms)", "start_full_collection_ms", "{:.0f}"),
    ("... the rest, apart from garbage collections (ms)", "start_stall_not_collecting_ms", "{:.0f}"),
    ("tasks that ended before the waits were handed over", "ended_before_handover", "{:.0%}"),
    ("detection delay p50 (s)", "latency_p50_s", "{:.2f}"),
    ("... counted from the task's end even before the hand-over (s)", "latency_from_task_end_p50_s", "{:.2f}"),
    ("detection delay p95 (s)", "latency_p95_s", "{:.2f}"),
    ("detection delay max (s)", "latency_max_s", "{:.2f}"),
    ("short images: delay / duration p50", "short_delay_p50", "{:.2f}"),
    ("short images: delay / duration p95", "short_delay_p95", "{:.2f}"),
    ("long videos: delay / duration p50", "long_delay_p50", "{:.2f}"),
    ("long videos: delay / duration p95", "long_delay_p95", "{:.2f}"),
]
Results = dict[int, dict[str, list[dict[str, Any]]]]  # N -> kind -> one result per repeat


def died(runs: list[dict[str, Any]]) -> str | None:
    return next((run["died"] for run in runs if "died" in run), None)


def figure(results: Results, n: int, kind: str, key: str) -> float:
    return mean([run[key] for run in results[n][kind]])


def completed(results: Results, n: int, *kinds: str) -> bool:
    return all(kind in results[n] and not died(results[n][kind]) for kind in kinds)


def targets_n(results: Results, run: Run) -> int | None:
    """The N the targets are read at: theirs if ours and the baseline finished there, else the largest that did."""
    both = [n for n in results if completed(results, n, "ours", "baseline")]
    wanted = TARGETS_AT["quick" if run.quick else "full"]
    return wanted if wanted in both else max(both, default=None)


def planned_kinds(n: int, quick: bool, wanted: tuple[str, ...]) -> list[str]:
    compared = ["ours", "ours_fixed", "baseline"] if n <= FIXED_UP_TO else ["ours", "baseline"]
    floor = ["floor"] if n == TARGETS_AT["quick" if quick else "full"] else []
    return [kind for kind in compared + floor if kind in wanted]


def measure_waits(run: Run) -> Results:
    results: Results = {}
    for n in run.sizes:
        results[n] = {}
        kinds = planned_kinds(n, run.quick, run.kinds)
        for repeat in range(run.repeats):
            for kind in kinds:
                print(f"==> N={n}: {kind} (repeat {repeat + 1} of {run.repeats})", flush=True)
                started = time.monotonic()
                result = run_workload(kind, Workload(waits=n, **run.workload), run.base_url)
                print(
                    f"    {time.monotonic() - started:.0f} s"
                    + (f", died: {result['died']}" if "died" in result else "")
                )
                results[n].setdefault(kind, []).append(result)
        for kind, runs in results[n].items():
            run.measured[("spread", n, kind)] = runs
    return results


def table(results: Results, n: int) -> list[str]:
    kinds = [kind for kind in ("ours", "ours_cold", "ours_fixed", "baseline", "floor") if kind in results[n]]
    header = "| measure | " + " | ".join(KIND_NAMES[kind] for kind in kinds) + " | ours / baseline |"
    lines = [f"### N = {n:,}", "", header, "|---|" + "---|" * (len(kinds) + 1)]
    dead = {kind: died(results[n][kind]) for kind in kinds}
    for kind, cause in dead.items():
        if cause:
            lines.insert(2, f"**{KIND_NAMES[kind]}: the run ended early**: {cause}.\n")
    for label, key, pattern in ROWS:
        cells = ["died" if dead[kind] else cell([run[key] for run in results[n][kind]], pattern) for kind in kinds]
        ours, base = (None if dead[k] else figure(results, n, k, key) for k in ("ours", "baseline"))
        ratio = times(ours / base) if ours is not None and base else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    return [*lines, ""]


def reading(results: Results, run: Run) -> list[str]:
    """Sentences chosen by this run's figures."""
    said: list[str] = []
    both = [n for n in results if completed(results, n, "ours", "baseline")]
    for n in results:
        for kind in results[n]:
            if cause := died(results[n][kind]):
                survivors = [
                    f"{KIND_NAMES[k]} held (lag p99 {figure(results, n, k, 'lag_p99_ms'):.0f} ms, "
                    f"peak RSS {figure(results, n, k, 'peak_rss_mib'):.0f} MiB)"
                    for k in results[n]
                    if not died(results[n][k])
                ]
                said.append(
                    f"At N={n:,} the {KIND_NAMES[kind]} run ended early: {cause}; " + "; ".join(survivors) + "."
                )
    top = targets_n(results, run)
    if top is None:
        return said
    requests = figure(results, top, "ours", "requests") / figure(results, top, "baseline", "requests")
    said.append(
        f"At N={top:,} ours made {times(requests)} the baseline's requests "
        + ("(fewer: its interval grows with the wait)." if requests < 1 else "(not fewer).")
    )
    for n in both:
        if completed(results, n, "ours_fixed"):
            schedule = figure(results, n, "ours", "cpu_per_wait_ms") / figure(results, n, "baseline", "cpu_per_wait_ms")
            fixed = figure(results, n, "ours_fixed", "cpu_per_wait_ms") / figure(
                results, n, "baseline", "cpu_per_wait_ms"
            )
            per_request = figure(results, n, "ours_fixed", "cpu_per_request_ms") / figure(
                results, n, "baseline", "cpu_per_request_ms"
            )
            said.append(
                f"N={n:,}: CPU per wait {times(schedule)} the baseline's at the operators' schedule, "
                f"{times(fixed)} at the baseline's own schedule; per request {times(per_request)} "
                + ("(cheaper)." if per_request < 0.95 else "(no cheaper)." if per_request <= 1.05 else "(dearer).")
            )
    for n in both:
        if completed(results, n, "ours_fixed"):
            same = figure(results, n, "ours_fixed", "requests_per_wait")
            base = figure(results, n, "baseline", "requests_per_wait")
            if base < 0.9 * same:
                said.append(
                    f"N={n:,}: at the same {run.workload['poll_interval']:.0f} s schedule ours made {same:.1f} "
                    f"requests per wait and the baseline {base:.1f}: the baseline fell behind its own interval "
                    f"(its lag p99: {figure(results, n, 'baseline', 'lag_p99_ms'):.0f} ms)."
                )
    floors = [n for n in results if completed(results, n, "floor", "ours_fixed")]
    for n in floors:
        floor = figure(results, n, "floor", "cpu_per_request_ms")
        ours = figure(results, n, "ours_fixed", "cpu_per_request_ms")
        said.append(
            f"The floor (one shared aiohttp session, a bare GET) cost {floor:.2f} ms per request at N={n:,} "
            f"in the same runner; ours {ours:.2f} ms at the same schedule: {times(ours / floor)} the floor."
        )
    for n in [n for n in results if completed(results, n, "floor", "ours")]:
        said.append(floor_comparison(results, n))
    for kind_of_task in ("short", "long"):
        words = "short images" if kind_of_task == "short" else "long videos"
        ours = figure(results, top, "ours", f"{kind_of_task}_delay_p50")
        base = figure(results, top, "baseline", f"{kind_of_task}_delay_p50")
        said.append(
            f"{words.capitalize()} at N={top:,}: ours saw them finish {100 * ours:.0f}% of their duration late "
            f"(p50), the baseline {100 * base:.0f}%, "
            + ("so ours detects later" if ours > base * 1.05 else "so ours detects as early or earlier")
            + f", with {figure(results, top, 'ours', 'requests_per_wait'):.1f} requests per wait against "
            f"{figure(results, top, 'baseline', 'requests_per_wait'):.1f}."
        )
    smallest, largest = min(both), max(both)
    if largest != smallest:
        kept = figure(results, largest, "baseline", "requests_per_wait") / figure(
            results, smallest, "baseline", "requests_per_wait"
        )
        if kept < 0.9:
            said.append(
                f"At N={largest:,} the baseline could not keep its own interval: "
                f"{figure(results, largest, 'baseline', 'requests_per_wait'):.1f} requests per wait against "
                f"{figure(results, smallest, 'baseline', 'requests_per_wait'):.1f} at N={smallest:,} "
                f"(its lag p99: {figure(results, largest, 'baseline', 'lag_p99_ms'):.0f} ms)."
            )
    stalls = {n: figure(results, n, "ours", "start_stall_waits_ms") for n in both}
    worst = max(stalls, key=lambda n: stalls[n])
    said.append(
        f"The stall at start that is not Airflow decoding the hand-over peaked at {stalls[worst]:.0f} ms "
        f"for ours (N={worst:,}); the hand-over itself held the loop up to "
        f"{max(figure(results, n, 'ours', 'handover_stall_ms') for n in both):.0f} ms."
    )
    return said


def waits_section(run: Run) -> Section:
    results = measure_waits(run)
    w = run.workload
    lines = [
        f"N MindVideo tasks finish after durations spread evenly from {w['shortest']:.0f} s to "
        f"{w['longest']:.0f} s. One triggerer waits for all of them: Airflow's `TriggerRunnerSupervisor` (the "
        "class `airflow triggerer` runs) forks Airflow's `TriggerRunner`, which runs every trigger in one asyncio "
        "loop as in production (greenback portal, log context, span, log lines to the supervisor, events at each "
        "state sync). Only the metadata database is left out: the N trigger workloads, each bound to a task "
        "instance, are handed to the supervisor in one go (as a triggerer with capacity for them all picks "
        "them up), events are recorded rather than written, and the supervisor's log lines go to one file "
        "instead of a file per trigger. The connections come from `AIRFLOW_CONN_*` variables.",
        "",
        f"- **ours**: `MindVideoTaskTrigger` (`poll_interval={w['poll_interval']:.0f}`, "
        f"`max_poll_interval={w['max_poll_interval']:.0f}`), each run until its event. Its hold against "
        "Airflow's fast-resume race (`[mindvideo] resume_not_before`, which delays only an event due sooner "
        "than that after the deferral; see troubleshooting.md) is off here: this measures when a wait sees "
        "the end, and the waits are handed over long after their tasks were created.",
        f"- **ours at the baseline's schedule**: the same trigger with `max_poll_interval={w['poll_interval']:.0f}`: "
        "a poll every "
        f"{w['poll_interval']:.0f} s, like the baseline, so that cost per request is compared schedule aside "
        f"(up to N={FIXED_UP_TO:,}: beyond, there is no finished baseline to compare with).",
        f"- **baseline**: the HTTP provider's machinery as its `HttpSensorTrigger` uses it: `HttpAsyncHook.run()` "
        f"with a new `aiohttp.ClientSession` per poll, every {w['poll_interval']:.0f} s, reading the JSON status.",
        f"- **floor** (at one N, the targets'): one shared `aiohttp.ClientSession`, a bare GET and a JSON "
        f"read every {w['poll_interval']:.0f} s, first checks spread as ours are: what a poll, and a trigger "
        "kept alive, cost in this runner when nothing else is done.",
        "",
        "CPU and RSS are the runner process's (where the triggers run), from `/proc`; RSS per wait is the growth "
        "since the waits were handed over, per wait alive, sampled every half second: the highest while at least "
        "80% of the most waits alive at once were alive. TCP connections are "
        "counted in the runner (aiohttp's connector, which all kinds send through); requests by the emulator. "
        "Event-loop lag: a 50 ms ticker in the runner's loop, each sample timestamped; one stall is one sample, so "
        "the max and the stall at start (the largest lag before the shortest task can end) are shown beside p99. "
        "Detection delay: when the supervisor received the event minus when the emulator made the task terminal, "
        "or minus the hand-over for a task that ended before it (the N tasks are created before the triggerer "
        "starts, which takes minutes at N=5,000 on a busy machine; in production a wait starts as its task is "
        "created; the row below it counts from the task's end regardless), "
        f"also as a fraction of the task's own duration for short images (up to "
        f"{Workload(1, **w).short_up_to:.0f} s) and long videos (from {Workload(1, **w).long_from:.0f} s). "
        f"Cells are the mean of {run.repeats} repeat(s)"
        + (", ± half the range between them." if run.repeats > 1 else ".")
        + " A poking `HttpSensor` (what `response_check` forces) would also hold a worker slot for each whole "
        "wait; that is not measured here, so no figure is given for it.",
        "",
    ]
    for n in results:
        lines += table(results, n)
    said = reading(results, run)
    lines += ["#### Reading the figures", "", *(f"- {sentence}" for sentence in said), ""]
    return Section("Thousands of waits in one triggerer", lines, waits_targets(results, run))


def floor_comparison(results: Results, n: int) -> str:
    """Memory and the stall at start, ours beside a trigger that does nothing but one shared-session GET."""

    def of(kind: str, key: str) -> float:
        return figure(results, n, kind, key)

    memory = of("ours", "rss_per_wait_kib") - of("floor", "rss_per_wait_kib")
    stall = of("ours", "start_stall_waits_ms") - of("floor", "start_stall_waits_ms")
    floor_memory, floor_stall = of("floor", "rss_per_wait_kib"), of("floor", "start_stall_waits_ms")
    return (
        f"N={n:,}: the floor, a trigger that only sends a GET through one shared session, held {floor_memory:.1f} "
        f"KiB per wait and stalled the loop {floor_stall:.0f} ms as its waits started (its longest full garbage "
        f"collection in the first seconds, the hand-over's included, took "
        f"{of('floor', 'start_full_collection_ms'):.0f} ms); ours "
        + (f"{memory:.1f} KiB more per wait" if memory > 0 else f"{-memory:.1f} KiB less per wait")
        + " and "
        + (f"{stall:.0f} ms more stall." if stall > 0 else f"{-stall:.0f} ms less stall.")
    )


def waits_targets(results: Results, run: Run) -> list[tuple[str, str, bool]]:
    top = targets_n(results, run)
    if top is None:
        return [("the waits benchmark completed for ours and the baseline", "no N", False)]
    ours = {key: figure(results, top, "ours", key) for _, key, _ in ROWS}
    base = {key: figure(results, top, "baseline", key) for _, key, _ in ROWS}
    cap = run.workload["max_poll_interval"]
    cpu_ratio = ours["cpu_per_wait_ms"] / base["cpu_per_wait_ms"]
    connection_share = ours["connections"] / ours["requests"]
    at = f" (N={top:,})"
    floor = {key: figure(results, top, "floor", key) for _, key, _ in ROWS} if completed(results, top, "floor") else {}
    floor_rss = f" (the floor: {floor['rss_per_wait_kib']:.1f})" if floor else ""
    floor_stall = f"; the floor: {floor['start_stall_waits_ms']:.0f} ms" if floor else ""
    return [
        ("CPU per completed wait <= 0.5x the baseline's" + at, times(cpu_ratio), cpu_ratio <= 0.5),
        (
            "connections opened <= 1% of requests made" + at,
            f"{100 * connection_share:.2f}%",
            connection_share <= 0.01,
        ),
        ("event-loop lag p99 <= 50 ms" + at, f"{ours['lag_p99_ms']:.1f} ms", ours["lag_p99_ms"] <= 50),
        (
            "RSS per wait <= 20 KiB, as the triggerer sees it" + at,
            f"{ours['rss_per_wait_kib']:.1f} KiB{floor_rss}",
            ours["rss_per_wait_kib"] <= 20,
        ),
        (
            "stall at start < 100 ms (the waits' part; Airflow's hand-over apart)" + at,
            f"{ours['start_stall_waits_ms']:.0f} ms (hand-over {ours['handover_stall_ms']:.0f} ms{floor_stall})",
            ours["start_stall_waits_ms"] < 100,
        ),
        (
            f"detection delay p50 <= 25% of the poll cap ({cap:.0f} s)" + at,
            f"{ours['latency_p50_s']:.1f} s = {100 * ours['latency_p50_s'] / cap:.0f}%",
            ours["latency_p50_s"] <= 0.25 * cap,
        ),
        (
            "... without more requests than the baseline" + at,
            f"{ours['requests']:.0f} vs {base['requests']:.0f}",
            ours["requests"] <= base["requests"],
        ),
    ]


# -- section: import time -----------------------------------------------------------------------------


def import_section(run: Run) -> Section:
    print("==> import time", flush=True)
    imported = imports.measure()
    lines = [
        "After `import airflow.sdk` (what every DAG file pays anyway), in a fresh interpreter, with the package's "
        "bytecode compiled as `pip install` leaves it (a first, uncounted run writes it to a temporary cache), "
        f"median of {imported['runs']} runs:",
        "",
        "| import | wall (ms) | CPU (ms) |",
        "|---|---|---|",
        f"| `from airflow_provider_mindvideo.operators import MindVideoGenerateOperator` | "
        f"{imported['one_ms']:.1f} | {imported['one_cpu_ms']:.1f} |",
        f"| ... then every other name of `airflow_provider_mindvideo.operators` | {imported['every_ms']:.1f} | "
        f"{imported['every_cpu_ms']:.1f} |",
        "",
        "The package imports each operator's module when the name is first asked for, so a DAG file pays for "
        "the operators it uses. Both rows include Airflow's lazily imported `BaseOperator` (and, for every "
        "operator, its assets, object storage and the human-in-the-loop provider), which any operator import pays.",
        "",
    ]
    targets = [
        (
            "importing an operator (MindVideoGenerateOperator) <= 30 ms over airflow.sdk",
            f"{imported['one_ms']:.1f} ms",
            imported["one_ms"] <= 30,
        ),
        (
            "importing every operator <= 30 ms over airflow.sdk",
            f"{imported['every_ms']:.1f} ms",
            imported["every_ms"] <= 30,
        ),
    ]
    return Section("Import time", lines, targets)


# -- section: create_task round trip ------------------------------------------------------------------


def round_trip_section(run: Run) -> Section:
    print("==> create_task round trip", flush=True)
    calls = 100 if run.quick else roundtrip.CALLS
    trips = roundtrip.measure_both(run.base_url, API_KEY, calls)
    lines = [
        "Client CPU per call (the calling thread's CPU clock: the server's work, in another process, is left "
        f"out), median of {calls} alternating calls per server:",
        "",
        "| server | bare `httpx.Client.post` (ms) | `MindVideoHook.create_task` (ms) | ratio | "
        "the hook without input validation (ms) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for server, trip in trips.items():
        lines.append(
            f"| {server} | {trip['bare_ms']:.3f} | {trip['hook_ms']:.3f} | {times(trip['ratio'])} | "
            f"{trip['unvalidated_ms']:.3f} | {times(trip['unvalidated_ratio'])} |"
        )
    worst = max(trips, key=lambda server: trips[server]["ratio"])
    trip = trips[worst]
    validation = trip["hook_ms"] - trip["unvalidated_ms"]
    extra = trip["hook_ms"] - trip["bare_ms"]
    lines += [
        "",
        "The emulator is uvicorn; the minimal server a raw socket answering the same 201 JSON to every request, "
        "so that nothing the server sends adds to the client's work. "
        f"Against the {worst} server the hook costs {extra:.3f} ms more than the bare POST"
        + (
            f", of which validating the input (jsonschema: is_valid, then the errors only if invalid) "
            f"is {validation:.3f} ms "
            f"({100 * validation / extra:.0f}%); the rest is the retry state machine, the request-id and "
            "deadline bookkeeping and parsing the answer into a `MindVideoTask`."
            if extra > 0
            else "."
        ),
        "",
    ]
    targets = [
        (f"create_task client CPU <= 1.3x a bare httpx POST ({server} server)", times(t["ratio"]), t["ratio"] <= 1.3)
        for server, t in trips.items()
    ]
    return Section("create_task round trip", lines, targets)


# -- section: the triggers' transport (measured elsewhere) ----------------------------------------------


def transport_section(run: Run) -> Section:
    return Section(
        "The triggers' transport",
        [
            "Triggers send through the provider's own aiohttp transport, not `httpx-aiohttp`, which cost more "
            "client CPU per poll when measured: figures and the other reasons in "
            "`benchmarks/transport-choice.md` (measured by `benchmarks/transport_choice.py`, not part of this run).",
            "",
        ],
    )


# -- section: detection, a schedule that learns (issue 30) ------------------------------------------------

#: The N the detection targets are read at (the waits section's runs at this N are reused).
DETECTION_AT = {"full": 500, "quick": 100}
DETECTION_KINDS = ("ours", "ours_cold", "baseline")
MIXES = {"spread": "the original workload", "drift": "the drift mix"}


def detection_section(run: Run) -> Section:
    n = DETECTION_AT["quick" if run.quick else "full"]
    kinds = [kind for kind in DETECTION_KINDS if kind in run.kinds]
    results: dict[str, Results] = {}
    for mix in MIXES:
        results[mix] = {n: {}}
        for kind in kinds:
            if (mix, n, kind) in run.measured:
                results[mix][n][kind] = run.measured[(mix, n, kind)]
                continue
            for repeat in range(run.repeats):
                print(f"==> detection, {mix} mix, N={n}: {kind} (repeat {repeat + 1} of {run.repeats})", flush=True)
                started = time.monotonic()
                result = run_workload(kind, Workload(waits=n, mix=mix, **run.workload), run.base_url)
                print(
                    f"    {time.monotonic() - started:.0f} s"
                    + (f", died: {result['died']}" if "died" in result else "")
                )
                results[mix][n].setdefault(kind, []).append(result)
            run.measured[(mix, n, kind)] = results[mix][n][kind]
    w = run.workload
    drifting = Workload(waits=n, mix="drift", **w)
    models = ", ".join(
        f"`{model}` {drifting.shortest + (drifting.longest - drifting.shortest) * point:.0f} s"
        for model, point in DRIFT_MODELS
    )
    lines = [
        "Whether a wait sees its task finish soon after it does, and at what cost. Ours learns, per "
        "triggerer process, the last durations of each model (`client/durations.py`) and aims its polls at "
        "when the model's tasks usually end (`client/polling.py`); a cold triggerer or a new model polls as "
        f"before. Same triggerer, kinds and measures as above, at N={n:,}, on two mixes:",
        "",
        f"- **the original workload**: the N tasks of one model, started at once, durations spread evenly from "
        f"{w['shortest']:.0f} s to {w['longest']:.0f} s (the runs of the section above, where they exist).",
        f"- **the drift mix**: tasks of six models ({models}; each task within ±{100 * DRIFT_SPREAD:.0f}% of "
        f"its model's), one started every {DRIFT_ARRIVALS * w['longest'] / n:.1f} s, each wait starting with its "
        "task (as an operator defers right after its create). The first half of the tasks warms the triggerer "
        "up, as one that has run a while (a restarted triggerer starts cold, and polls as the kind that does "
        "not learn); delays are those of the second half, requests and CPU those of all. From the middle of "
        f"the second half on, `{DRIFTING}` takes twice as long.",
        "",
        "Kinds: **ours** (`MindVideoTaskTrigger` naming the task's model), **ours, not learning** (the same "
        "trigger naming no model: the backoff of old, a quarter of the elapsed wait between "
        f"`poll_interval={w['poll_interval']:.0f}` and `max_poll_interval={w['max_poll_interval']:.0f}`), "
        f"**baseline** (the HTTP provider's pattern, every {w['poll_interval']:.0f} s). The hold against "
        "Airflow's fast-resume race is off (`AIRFLOW__MINDVIDEO__RESUME_NOT_BEFORE=0`): this measures when a "
        "wait sees the end. Detection delay max is the latest any task was seen after it ended.",
        "",
    ]
    targets: list[tuple[str, str, bool]] = []
    for mix, name in MIXES.items():
        table_lines = table(results[mix], n)
        table_lines[0] = f"### {name.capitalize()}, N = {n:,}"
        lines += table_lines
        if not completed(results[mix], n, "ours", "ours_cold"):
            targets.append((f"detection benchmark completed ({name})", "no", False))
            continue
        ours = {key: figure(results[mix], n, "ours", key) for _, key, _ in ROWS}
        cold = {key: figure(results[mix], n, "ours_cold", key) for _, key, _ in ROWS}
        base = (
            {key: figure(results[mix], n, "baseline", key) for _, key, _ in ROWS}
            if completed(results[mix], n, "baseline")
            else None
        )

        def beside(key: str, pattern: str = "{:.0%}", _cold: dict[str, float] = cold, _base: Any = base) -> str:
            return f"(not learning {pattern.format(_cold[key])}, baseline " + (
                pattern.format(_base[key]) + ")" if _base else "-)"
            )

        at = f" ({name}, N={n:,})"
        cap = w["max_poll_interval"]
        targets += [
            (
                f"long videos: delay / duration p50 <= 3%{at}",
                f"{ours['long_delay_p50']:.1%} {beside('long_delay_p50')}",
                ours["long_delay_p50"] <= 0.03,
            ),
            (
                f"long videos: delay / duration p95 <= 8%{at}",
                f"{ours['long_delay_p95']:.1%} {beside('long_delay_p95')}",
                ours["long_delay_p95"] <= 0.08,
            ),
            (
                f"short images: delay / duration p50 <= 8%{at}",
                f"{ours['short_delay_p50']:.1%} {beside('short_delay_p50')}",
                ours["short_delay_p50"] <= 0.08,
            ),
            (
                f"short images: delay / duration p95 <= 20%{at}",
                f"{ours['short_delay_p95']:.1%} {beside('short_delay_p95')}",
                ours["short_delay_p95"] <= 0.20,
            ),
            (
                f"requests per wait <= not learning's{at}",
                f"{ours['requests_per_wait']:.1f} {beside('requests_per_wait', '{:.1f}')}",
                ours["requests_per_wait"] <= cold["requests_per_wait"],
            ),
            (
                f"CPU per wait <= not learning's{at}",
                f"{ours['cpu_per_wait_ms']:.2f} ms {beside('cpu_per_wait_ms', '{:.2f}')}",
                ours["cpu_per_wait_ms"] <= cold["cpu_per_wait_ms"],
            ),
            (
                f"no task seen later than the cap ({cap:.0f} s) after it ended{at}",
                f"latest {ours['latency_max_s']:.1f} s {beside('latency_max_s', '{:.1f} s')}",
                # The supervisor's event hand-off and a busy loop add to the poll's own delay.
                ours["latency_max_s"] <= cap + 5,
            ),
        ]
    lines += [
        "The cap target allows 5 s over the cap for what follows the poll (the runner's hand-off of the event to "
        "the supervisor, a busy loop); the schedule itself never sleeps longer than the cap (tests/test_polling.py).",
        "",
    ]
    return Section("Seen done when done: polls aimed at when tasks end", lines, targets)


#: The page, in order. Each section measures, then returns its lines and targets.
SECTIONS: list[Callable[[Run], Section]] = [
    waits_section,
    detection_section,
    import_section,
    round_trip_section,
    transport_section,
]


# -- the page -------------------------------------------------------------------------------------------


def load_line() -> str:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"- Load average when the run ended (1, 5, 15 min): {load}. Other work on the machine shows as lag and "
        "wall time; CPU figures are per process and suffer less."
    )


def render(run: Run, sections: list[Section], seconds: float) -> list[str]:
    lines = [
        "# Benchmarks" + (" (quick run: not the published figures)" if run.quick else ""),
        "",
        f"Generated in {seconds / 60:.0f} min by `{run.command}`. Machine:",
        "",
        *machine(
            ("apache-airflow", "httpx", "aiohttp", "apache-airflow-providers-http", "uvicorn"),
            "- The emulator runs in its own process on the same machine (it competes for the same cores).",
            load_line(),
        ),
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    for section in sections:
        lines += [f"| {name} | {value} | {'met' if ok else '**missed**'} |" for name, value, ok in section.targets]
    for section in sections:
        body = list(section.lines)
        while body and body[-1] == "":
            body.pop()
        lines += ["", f"## {section.title}", "", *body]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--waits", help=f"comma-separated N (default {SIZES['full']}; quick: {SIZES['quick']})")
    parser.add_argument("--repeats", type=int, help="runs of each workload, for the noise (default 2; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="short tasks and intervals: a smoke run, not the figures")
    parser.add_argument(
        "--kinds",
        help=f"comma-separated waits to run (default all: {','.join(KIND_NAMES)}); a subset prints the page, "
        "without writing it",
    )
    parser.add_argument(
        "--sections",
        help="comma-separated sections to run (waits,detection,import,round_trip,transport; default all)",
    )
    args = parser.parse_args()
    kinds = tuple(args.kinds.split(",")) if args.kinds else tuple(KIND_NAMES)
    if unknown := set(kinds) - set(KIND_NAMES):
        parser.error(f"--kinds: unknown {', '.join(sorted(unknown))}; known: {', '.join(KIND_NAMES)}")
    chosen = SECTIONS
    if args.sections:
        by_name = {section.__name__.removesuffix("_section"): section for section in SECTIONS}
        if unknown := set(args.sections.split(",")) - set(by_name):
            parser.error(f"--sections: unknown {', '.join(sorted(unknown))}; known: {', '.join(by_name)}")
        chosen = [by_name[name] for name in args.sections.split(",")]
    sizes = [int(n) for n in (args.waits or SIZES["quick" if args.quick else "full"]).split(",")]
    repeats = args.repeats or (1 if args.quick else 2)
    command = "make bench" + (f" ARGS={shlex.quote(' '.join(sys.argv[1:]))}" if sys.argv[1:] else "")
    if any(section is waits_section for section in chosen):
        workload = QUICK if args.quick else FULL
        runs = sum(len(planned_kinds(n, args.quick, kinds)) for n in sizes) * repeats
        print(f"{runs} triggerer runs of about {(workload['longest'] + 60) / 60:.0f} min each", flush=True)
    started = time.monotonic()
    with emulator_process() as base_url:
        run = Run(args.quick, sizes, repeats, base_url, QUICK if args.quick else FULL, command, kinds)
        sections = [section(run) for section in chosen]
    report = render(run, sections, time.monotonic() - started)
    print("\n".join(report))
    if not args.quick and chosen == SECTIONS and kinds == tuple(KIND_NAMES):
        RESULTS.write_text("\n".join(report) + "\n")
        print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
