"""How long a model's tasks lately took, as the waits of this process saw them. Pure: no I/O.

The schedule in :mod:`.polling` aims its polls at when tasks like the one waited for usually
end. What it learns from is kept here, per process, and bounded twice: the last
:data:`PER_MODEL` durations of each model (a window of recent tasks, so that a model that turns
twice as slow is tracked within that many tasks, not averaged with its past for ever) and the
:data:`MODELS` models used most lately. Nothing here grows with the number of tasks seen, and
nothing is needed to be correct: a process that starts cold polls as it did before it learnt.
"""

from __future__ import annotations

from collections import OrderedDict, deque

#: Durations kept per model: enough for its low and high quantiles, few enough to follow a drift.
PER_MODEL = 16
#: Models remembered; the one used least lately is forgotten first.
MODELS = 128


class RecentDurations:
    """The last ``per_model`` durations (seconds) of the ``models`` models seen most lately."""

    def __init__(self, per_model: int = PER_MODEL, models: int = MODELS) -> None:
        if per_model < 1 or models < 1:
            raise ValueError(f"per_model = {per_model!r}, models = {models!r}: must be >= 1")
        self.per_model = per_model
        self.models = models
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        # Read at every poll of every wait, written once per task: kept sorted, not sorted per read.
        self._sorted: dict[str, tuple[float, ...]] = {}

    def record(self, model: str, seconds: float) -> None:
        """A task of ``model`` was seen ending ``seconds`` after it was created (non-positive: ignored)."""
        if not seconds > 0 or seconds == float("inf"):
            return
        recent = self._recent.get(model)
        if recent is None:
            recent = self._recent[model] = deque(maxlen=self.per_model)
            while len(self._recent) > self.models:
                forgotten, _ = self._recent.popitem(last=False)
                self._sorted.pop(forgotten, None)
        else:
            self._recent.move_to_end(model)
        recent.append(float(seconds))
        self._sorted[model] = tuple(sorted(recent))

    def of(self, model: str | None) -> tuple[float, ...]:
        """The model's recent durations, shortest first; empty for a model not seen (or None)."""
        if model is None:
            return ()
        return self._sorted.get(model, ())

    def __len__(self) -> int:
        return len(self._recent)


#: The waits of one process (a triggerer's, a batch's, a worker's) learn together.
RECENT = RecentDurations()


def observed_duration(last_running: float | None, seen_ended: float, started: float) -> float | None:
    """A task's duration as one wait saw it: the middle of the span it ended in, from when the wait started.

    ``last_running``: when the wait last saw it unfinished (None: never, as after a triggerer
    restart or a task that ended before its first check; nothing is learnt from those).
    """
    if last_running is None or last_running < started or seen_ended < last_running:
        return None
    return (last_running + seen_ended) / 2 - started
