"""A fast read-only Qt table over a pandas DataFrame (tens of thousands of rows)."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

__all__ = ["DataFrameModel", "DataFrameView", "format_value"]


def format_value(value: Any) -> str:
    """Human-readable cell text: 4 significant digits for floats, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        v = float(value)
        if math.isnan(v):
            return "-"
        if v == 0:
            return "0"
        if abs(v) >= 1e9 or abs(v) < 1e-3:
            return f"{v:.3e}"
        if abs(v) >= 1000 or (v.is_integer() and abs(v) >= 100):
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


class DataFrameModel(QAbstractTableModel):
    def __init__(self, frame=None, parent=None):
        super().__init__(parent)
        import pandas as pd

        self.frame = frame if frame is not None else pd.DataFrame()

    def set_frame(self, frame) -> None:
        self.beginResetModel()
        self.frame = frame
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.frame)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.frame.columns)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return format_value(self.frame.iat[index.row(), index.column()])
        if role == Qt.ItemDataRole.TextAlignmentRole:
            value = self.frame.iat[index.row(), index.column()]
            if isinstance(value, (int, float)) or type(value).__name__.startswith(("int", "float")):
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return str(self.frame.columns[section])
        return None


class DataFrameView(QTableView):
    """Table view with one selected row at a time."""

    def __init__(self, parent=None, *, min_height: int = 120):
        super().__init__(parent)
        self.model_ = DataFrameModel()
        self.setModel(self.model_)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setMinimumHeight(min_height)

    def set_frame(self, frame) -> None:
        self.model_.set_frame(frame)
        if len(frame) > 2000:  # sizing to content scans every row
            self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        else:
            self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
