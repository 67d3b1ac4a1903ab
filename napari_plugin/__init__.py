"""napari plugin of micro-seg: a thin adapter over the headless :mod:`micro_seg` engine."""

__all__: list[str] = []
