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
        # Per model: (when the end was seen, the duration), in the order seen.
        self._recent: OrderedDict[str, deque[tuple[float, float]]] = OrderedDict()
        # Read at every poll of every wait, written once per task: kept sorted, not sorted per read.
        self._sorted: dict[str, tuple[float, ...]] = {}

    def record(self, model: str, seconds: float, ended_at: float) -> None:
        """A task of ``model`` was seen ending at ``ended_at`` (epoch seconds), ``seconds`` after it began.

        A duration that is no positive, finite number is ignored.
        """
        if not 0 < seconds < float("inf"):
            return
        recent = self._recent.get(model)
        if recent is None:
            recent = self._recent[model] = deque(maxlen=self.per_model)
            while len(self._recent) > self.models:
                forgotten, _ = self._recent.popitem(last=False)
                self._sorted.pop(forgotten, None)
        else:
            self._recent.move_to_end(model)
        recent.append((ended_at, float(seconds)))
        self._sorted[model] = tuple(sorted(seconds for _, seconds in recent))

    def of(self, model: str | None, known_by: float = float("inf")) -> tuple[float, ...]:
        """The model's recent durations, shortest first, of the tasks seen ending by ``known_by``.

        A wait asks for what was known when it began: the peers that began with it and ended
        since are only its quicker ones (the slower are still running), and would make every
        task look late. Empty for a model not seen (or None).
        """
        if model is None or model not in self._recent:
            return ()
        recent = self._recent[model]
        if max(ended_at for ended_at, _ in recent) <= known_by:
            return self._sorted[model]
        return tuple(sorted(seconds for ended_at, seconds in recent if ended_at <= known_by))

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
