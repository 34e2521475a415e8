"""An in-process stand-in for the few Ray Data calls the dedup DAG makes, for corpora small enough for one process.

Ray Data's shuffles cost seconds of fixed start-up each (scheduling, actor pools, streaming executor): about
20 s for the eleven datasets of a dedup run on a few hundred documents, where the work itself takes a second.
`LocalDataset` runs the very same batch functions (`map_batches`, `groupby(...).map_groups`, `count`, `union`)
on one pyarrow table, so a small run gives exactly the output of the distributed path without its start-up.
Only the operations the dedup DAG uses are here; anything else is an AttributeError, not a silent difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EMPTY = pa.table({})


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return EMPTY
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


class LocalDataset:
    """A materialised table with Ray Data's method names (batch functions get and return `pa.Table`)."""

    def __init__(self, table: pa.Table):
        self.table = table

    @classmethod
    def read_parquet(cls, paths: list[str], columns: list[str] | None = None, filesystem=None) -> LocalDataset:
        return cls(_concat([pq.read_table(p, columns=columns, filesystem=filesystem) for p in paths]))

    def map_batches(self, fn: Callable[[pa.Table], pa.Table], batch_format: str = "pyarrow", **_: Any) -> LocalDataset:
        if batch_format != "pyarrow":
            raise ValueError("LocalDataset only runs pyarrow batch functions")
        return LocalDataset(fn(self.table) if self.table.num_rows else EMPTY)

    def groupby(self, key: str | list[str], num_partitions: int | None = None) -> LocalGroupedData:
        return LocalGroupedData(self.table, [key] if isinstance(key, str) else list(key))

    def union(self, *others: LocalDataset) -> LocalDataset:
        return LocalDataset(_concat([self.table, *(o.table for o in others)]))

    def select_columns(self, cols: list[str]) -> LocalDataset:
        return LocalDataset(self.table.select(cols) if self.table.num_rows else EMPTY)

    def materialize(self) -> LocalDataset:
        return self

    def count(self) -> int:
        return self.table.num_rows

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        yield from self.table.to_pylist()

    def iter_batches(self, batch_format: str = "pyarrow", batch_size: int | None = None) -> Iterator[Any]:
        if self.table.num_rows:
            if batch_format == "numpy":
                yield {name: self.table.column(name).to_numpy() for name in self.table.column_names}
            else:
                yield self.table


class LocalGroupedData:
    def __init__(self, table: pa.Table, keys: list[str]):
        self.table, self.keys = table, keys

    def map_groups(self, fn: Callable[[pa.Table], pa.Table], batch_format: str = "pyarrow", **_: Any) -> LocalDataset:
        """`fn` once per distinct key (rows of a group in table order, as Ray gives no order either)."""
        if not self.table.num_rows:
            return LocalDataset(EMPTY)
        t = self.table.append_column("__row", pa.array(np.arange(self.table.num_rows)))
        t = t.sort_by([(k, "ascending") for k in self.keys] + [("__row", "ascending")])
        # sorted by key: a group starts where any key column differs from the row before
        change = np.zeros(t.num_rows - 1, bool)
        for k in self.keys:
            col = t.column(k).combine_chunks()
            change |= pc.not_equal(col.slice(1), col.slice(0, t.num_rows - 1)).fill_null(True).to_numpy(zero_copy_only=False)
        starts = np.r_[0, np.flatnonzero(change) + 1]
        t = t.drop_columns(["__row"])
        bounds = list(starts) + [t.num_rows]
        return LocalDataset(_concat([fn(t.slice(a, b - a)) for a, b in zip(bounds[:-1], bounds[1:])]))

    def count(self) -> LocalDataset:
        """Rows per distinct key, as Ray Data names it (`count()`)."""
        if not self.table.num_rows:
            return LocalDataset(EMPTY)
        counts = self.table.group_by(self.keys).aggregate([([], "count_all")])
        return LocalDataset(pa.table({**{k: counts.column(k) for k in self.keys}, "count()": counts.column("count_all")}))
