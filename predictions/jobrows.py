"""Writes of job rows in plain SQL built once from the model's fields.

A micro-batch claims and finishes each of its jobs with `UPDATE … WHERE id = … AND status = …`;
each statement's row count tells whether that job was ours. Through the ORM the same writes
took half of the worker's CPU time (CASE expressions compiled per batch, then a read-back to
tell our rows from another worker's; see bench/), for what is a handful of one-row statements.
A new job is one INSERT: through save() the ORM compiled it afresh for every submission, a
twentieth of the web's CPU per single job (bench/). Values go through each field's own
database preparation, so SQLite and PostgreSQL store them exactly as the ORM would.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from .models import PredictionJob


class RowInsert:
    """INSERT a new job with all its fields, as job.save(force_insert=True) does.

    Field defaults and pre_save (created_at's auto_now_add) apply as in save(); no pre_save or
    post_save signal is sent (nothing listens for jobs). A duplicate key raises IntegrityError.
    """

    def __init__(self) -> None:
        self._sql = ""

    def run(self, job: PredictionJob) -> None:
        db = _this_threads_connection()
        fields = PredictionJob._meta.concrete_fields
        values = [field.get_db_prep_save(field.pre_save(job, True), db) for field in fields]
        with db.cursor() as cursor:
            cursor.execute(self.sql, values)
        job._state.adding = False
        job._state.db = db.alias

    @property
    def sql(self) -> str:
        if not self._sql:  # built on first use: the connection's quoting is known by then
            quote = connection.ops.quote_name
            fields = PredictionJob._meta.concrete_fields
            columns = ", ".join(quote(_column(field.name)) for field in fields)
            table = quote(PredictionJob._meta.db_table)
            places = ", ".join(["%s"] * len(fields))
            self._sql = f"INSERT INTO {table} ({columns}) VALUES ({places})"  # noqa: S608
        return self._sql


class RowUpdate:
    """UPDATE the `assigned` fields (and add 1 to `counted`) where `matched` and `required` hold.

    `stamped` names assigned fields whose values tell this very write apart from any other
    (a task id, a timestamp): held() finds by them the rows a write already changed, when the
    commit went through but its answer was lost with the connection.
    Names are the model's own field names, never user input; values are parameters.
    """

    def __init__(
        self,
        assigned: Sequence[str],
        matched: Sequence[str],
        *,
        required: Mapping[str, Any],
        counted: Sequence[str] = (),
        stamped: Sequence[str] = (),
    ) -> None:
        self.assigned = list(assigned)
        self.matched = list(matched)
        self.required = dict(required)
        self.counted = list(counted)
        self.stamped = list(stamped)
        self._sql = ""
        self._held_sql = ""

    def run(self, rows: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[bool]:
        """Apply (assigned values, matched values) per row; whether each row was changed."""
        db = _this_threads_connection()
        with db.cursor() as cursor:
            changed = []
            for assigned, matched in rows:
                cursor.execute(self.sql, self._params(db, assigned, matched))
                changed.append(cursor.rowcount == 1)
            return changed

    def run_or_held(
        self, rows: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]
    ) -> list[bool]:
        """run(), then held() for the rows it did not change: whether each row is ours."""
        return self.or_held(rows, self.run(rows))

    def or_held(
        self, rows: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], changed: list[bool]
    ) -> list[bool]:
        """What run() `changed`, with held() asked only about the rows it did not change."""
        if all(changed):  # the usual case: no second look
            return changed
        held = iter(self.held([row for row, was in zip(rows, changed, strict=True) if not was]))
        return [was or next(held) for was in changed]

    def held(self, rows: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[bool]:
        """Whether each row already holds this write: its `matched` and `stamped` values."""
        db = _this_threads_connection()
        with db.cursor() as cursor:
            found = []
            for assigned, matched in rows:
                conditions = [(name, matched[name]) for name in self.matched]
                conditions += [(name, assigned[name]) for name in self.stamped]
                values = [_field(name).get_db_prep_value(value, db) for name, value in conditions]
                cursor.execute(self.held_sql, values)
                found.append(cursor.fetchone() is not None)
            return found

    @property
    def held_sql(self) -> str:
        if not self._held_sql:
            quote = connection.ops.quote_name
            wheres = [f"{quote(_column(name))} = %s" for name in [*self.matched, *self.stamped]]
            table = quote(PredictionJob._meta.db_table)
            self._held_sql = f"SELECT 1 FROM {table} WHERE {' AND '.join(wheres)}"  # noqa: S608
        return self._held_sql

    @property
    def sql(self) -> str:
        if not self._sql:  # built on first use: the connection's quoting is known by then
            quote = connection.ops.quote_name
            sets = [f"{quote(_column(name))} = %s" for name in self.assigned]
            sets += [
                f"{quote(_column(name))} = {quote(_column(name))} + 1" for name in self.counted
            ]
            wheres = [f"{quote(_column(name))} = %s" for name in [*self.matched, *self.required]]
            table = quote(PredictionJob._meta.db_table)
            self._sql = f"UPDATE {table} SET {', '.join(sets)} WHERE {' AND '.join(wheres)}"  # noqa: S608
        return self._sql

    def _params(
        self, db: BaseDatabaseWrapper, assigned: Mapping[str, Any], matched: Mapping[str, Any]
    ) -> list[Any]:
        values = [_field(name).get_db_prep_save(assigned[name], db) for name in self.assigned]
        conditions = [*((name, matched[name]) for name in self.matched), *self.required.items()]
        values += [_field(name).get_db_prep_value(value, db) for name, value in conditions]
        return values


def _this_threads_connection() -> BaseDatabaseWrapper:
    """The default database's connection, looked up once: `connection` is a proxy that looks
    it up on every attribute, and the fields' preparation asks it several times each (an
    INSERT's values took 44 instead of 26 us)."""
    return connections[DEFAULT_DB_ALIAS]


def _field(name: str) -> Any:
    return PredictionJob._meta.get_field(name)


def _column(name: str) -> str:
    return _field(name).column
