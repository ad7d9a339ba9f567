"""Exceptions raised by the MindVideo provider.

Every error is a :class:`MindVideoError`, an ``AirflowException``. ``retryable`` tells whether
an Airflow retry could help: a bad key or a refused input will be refused again, a rate limit
or a 503 may pass. The permanent ones are also ``AirflowFailException`` errors, so a task raising
them (an operator, or your own ``@task`` using the hook) fails at once instead of spending its
retries. No error ever carries the API key: messages are built from the server's answer and
our own words, never from request headers.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class MindVideoError(AirflowException):
    """Base class of every error this provider raises."""

    retryable = True
    #: Seconds the server asked to wait before trying again (its Retry-After), when it said.
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        details = []
        if self.http_status is not None:
            details.append(f"HTTP {self.http_status}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions, and Airflow
        # pickles exceptions between processes.
        return (_rebuild, (type(self), self.message, self.http_status, self.request_id))


def _rebuild(
    cls: type[MindVideoError], message: str, http_status: int | None, request_id: str | None
) -> MindVideoError:
    error = cls.__new__(cls)
    MindVideoError.__init__(error, message, http_status=http_status, request_id=request_id)
    return error


class AuthenticationError(MindVideoError, AirflowFailException):
    """The API key is missing, wrong, disabled or not allowed to do this (HTTP 401/403)."""

    retryable = False


class InputValidationError(MindVideoError, AirflowFailException):
    """The request input breaks the model's rules (client-side check, or HTTP 400/422)."""

    retryable = False


class UnknownModelError(InputValidationError):
    """The model slug is not in this provider's catalogue (a typo, or a model newer than it).

    Raised before anything is sent; pass ``allow_unknown_model=True`` to send a newer model.
    """


class TaskNotFoundError(MindVideoError, AirflowFailException):
    """No task with this id is visible to this API key (HTTP 404)."""

    retryable = False


class IdempotencyConflictError(MindVideoError, AirflowFailException):
    """The Idempotency-Key was used before with a different payload (HTTP 409)."""

    retryable = False


class RateLimitedError(MindVideoError):
    """Still rate limited (HTTP 429) after the hook's own retries."""


class ServerError(MindVideoError):
    """The service kept failing (HTTP 5xx) after the hook's own retries."""


class TransportError(MindVideoError):
    """The service could not be reached (connection refused or reset, timeouts) after retries."""


class TlsVerificationError(MindVideoError, AirflowFailException):
    """The server's TLS certificate could not be verified: a wrong host or a missing CA, not a blip."""

    retryable = False


class UnexpectedResponseError(MindVideoError):
    """An answer that is not the documented JSON: a proxy's HTML page, a truncated body, ..."""


class OversizedAnswerError(UnexpectedResponseError, AirflowFailException):
    """A task's answer does not fit what the provider stores of one task (``STORED_ANSWER_LIMIT``),
    even with everything but its output URLs cut. Permanent: the server would answer the same.
    """

    retryable = False


class InsecureConnectionError(MindVideoError, AirflowFailException):
    """Refused to send the API key over plain HTTP to a host that is not this machine."""

    retryable = False


class ConnectionNotFoundError(MindVideoError, AirflowFailException):
    """No Airflow connection has the ``mindvideo_conn_id`` given; another try would not find one either."""

    retryable = False


class RemoteTaskFailedError(MindVideoError):
    """The MindVideo task ended ``failed`` or ``cancelled``.

    Retryable: the next Airflow try of a generating task submits a new remote task.
    """

    def __init__(self, message: str, *, http_status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(message, http_status=http_status, request_id=request_id)


class EmptyOutputError(RemoteTaskFailedError, AirflowFailException):
    """The MindVideo task succeeded without any output URL.

    Not retryable: a retry would find the same succeeded task (and paying for a new one is
    not a retry's call to make).
    """

    retryable = False


class WaitTimeoutError(MindVideoError):
    """The MindVideo task did not finish before the wait's deadline.

    Retryable: the next try of a generating task finds the same remote task and waits again.
    """


class OutputUnavailableError(MindVideoError, AirflowFailException):
    """An output link is gone (HTTP 404/410/403, often: expired) or does not serve media."""

    retryable = False


class PrivateAddressError(MindVideoError, AirflowFailException):
    """Refused to connect to a loopback, private, link-local or cloud-metadata address.

    A URL from outside (an output link, or where it redirects) must not reach this machine or
    its network. Permanent: the same URL resolves to the same kind of address on a retry.
    """

    retryable = False


class OutputDownloadError(MindVideoError):
    """Downloading an output failed in a way a retry may fix (5xx, network, timeouts)."""


class OutputExistsError(MindVideoError, AirflowFailException):
    """The destination already holds a different file under the output's name (and overwrite is off)."""

    retryable = False


class BudgetExceededError(MindVideoError, AirflowFailException):
    """A task was not created: it could pass the task instance's ``max_cost``.

    Raised before anything is sent, so nothing was charged for it. Permanent: the next try
    counts the same spending (replays tell it) and would refuse again.
    """

    retryable = False


class BatchItemsFailedError(MindVideoError):
    """More items of a batch failed than its ``max_failed`` allows.

    Retryable: the next try replays every item's key (free), keeps what succeeded, and generates
    again only the items whose remote task failed, under their next key generation.
    """


class BatchItemsFailedForGoodError(BatchItemsFailedError, AirflowFailException):
    """As :class:`BatchItemsFailedError`, but no retry could change it.

    Every failed item is final: its generations are used up, its input was refused, or it did
    not fit under ``max_cost``.
    """

    retryable = False


class ResultPathError(MindVideoError, AirflowFailException):
    """A batch's ``result_path`` cannot be its manifest: a folder, or another task instance's.

    Raised before anything is sent. Permanent: the path is the DAG's to change.
    """

    retryable = False


class CorruptRecordError(MindVideoError, AirflowFailException):
    """A file a batch keeps (manifest, work list, intents, ...) cannot be read: damaged outside this provider.

    Raised before anything is sent. Permanent: a retry would read the same bytes; the message
    names the file, the line and what to do. Never guessed around: the records say what was paid.
    """

    retryable = False
