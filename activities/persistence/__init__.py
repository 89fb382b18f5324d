"""The PostgreSQL projection's writer: the activity (`writer.py`) and the records as rows (`rows.py`).

The workflow is the source of truth; PostgreSQL holds a projection of it for the read APIs, analytics and audit
(read it with `client.projection_reader.ProjectionReader`). The schema's migrations and pools are in
activities/postgres.py.
"""

from activities.persistence.rows import MAX_TEXT_BYTES, NUL_ESCAPE, PROJECTION_TABLES, QUARANTINE_TABLE
from activities.persistence.writer import (
    DATABASE_RETRY_SECONDS,
    PROJECTION_UNAVAILABLE_ERROR,
    PersistenceActivities,
)

__all__ = [
    "DATABASE_RETRY_SECONDS",
    "MAX_TEXT_BYTES",
    "NUL_ESCAPE",
    "PROJECTION_TABLES",
    "PROJECTION_UNAVAILABLE_ERROR",
    "QUARANTINE_TABLE",
    "PersistenceActivities",
]
