"""Who may read what: the Airflow user behind a request and the DAGs their auth manager lets them read.

Every route depends on :func:`viewer`: no valid Airflow token (the UI's cookie or a Bearer
header), no answer (401/403, from Airflow's own ``get_user``). A ledger row of a DAG the user may
not read is never counted, listed or served; a row with no DAG (a hook called outside a DAG) and
the budget windows, which add up every DAG's creates, only for users who may read every DAG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, HTTPException, status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Viewer:
    """One request's user, as the pages need them."""

    user: Any

    def readable(self, dag_ids: Iterable[str]) -> frozenset[str]:
        """Those of ``dag_ids`` this user may read (GET on the DAG)."""
        wanted = {dag_id for dag_id in dag_ids if dag_id}
        if not wanted:
            return frozenset()
        return frozenset(_auth_manager().filter_authorized_dag_ids(dag_ids=wanted, user=self.user, method="GET"))

    def may_read(self, dag_id: str) -> bool:
        return dag_id in self.readable([dag_id])

    def reads_every_dag(self, known: Iterable[str]) -> bool:
        """Whether the user may read every DAG: those Airflow knows and ``known`` (the ledger's, deleted ones too).

        Not ``is_authorized_dag`` without a DAG: FAB answers that for "may list DAGs", true for
        a role that reads a single one. With no DAG known at all, that is the only question left.
        """
        every = {dag_id for dag_id in known if dag_id} | _airflow_dags()
        if not every:
            return bool(_auth_manager().is_authorized_dag(method="GET", user=self.user))
        return self.readable(every) == every

    def require_dag(self, dag_id: str) -> None:
        # The same answer for a DAG that does not exist and one the user may not read: no probing.
        if not self.may_read(dag_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No run of DAG {dag_id!r} that you may read")


def _airflow_dags() -> set[str]:
    """Every DAG in Airflow's metadata database (none where there is no database: a test of the app alone)."""
    try:
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            return set(session.scalars(select(DagModel.dag_id)))
    except Exception as exc:  # no metadata DB: the ledger's DAGs are all there is to go by
        log.warning("MindVideo page: could not list Airflow's DAGs (%s)", exc)
        return set()


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def viewer(user: Annotated[Any, Depends(get_user)]) -> Viewer:
    return Viewer(user)


ViewerDep = Annotated[Viewer, Depends(viewer)]
