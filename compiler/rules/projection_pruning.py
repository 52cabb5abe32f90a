"""Projection pruning: the scan reads only the pool columns some step uses (plus the id).

Safe because a column no step reads cannot influence any value; with parquet
it means the other columns are never decoded.
"""

from __future__ import annotations

from cbdsl.compiler.ir import Plan, Scan


def prune_projection(plan: Plan) -> Plan:
    produced = {s.writes for s in plan.steps if s.writes}
    used = set().union(*(s.reads for s in plan.steps)) - produced
    scan = plan.scan
    columns = tuple(sorted(c for c in scan.columns if c in used or c == scan.id_column))
    steps = (Scan(columns=columns, id_column=scan.id_column), *plan.steps[1:])
    return plan.model_copy(update={"steps": steps})
