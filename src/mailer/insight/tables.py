"""A chart's figures as a table: the same rows feed the picture, the table beside it (for
screen readers) and its CSV download."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    #: The file name of its CSV, without ``.csv`` (``clicks``, ``per-minute``…).
    name: str
    title: str
    columns: list[str]
    rows: list[list[str | int | float]] = field(default_factory=list)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.columns)
        for row in self.rows:
            # A cell a spreadsheet would run as a formula is quoted as text (CSV injection).
            writer.writerow([f"'{cell}" if isinstance(cell, str) and cell[:1] in "=+-@\t\r"
                             else cell for cell in row])
        return out.getvalue()

    def column(self, index: int) -> list[float]:
        return [float(row[index]) for row in self.rows]  # type: ignore[arg-type]
