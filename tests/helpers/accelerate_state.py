"""Accelerate keeps its state in process-wide singletons: reset them between in-process runs (one place for the
private-API calls)."""

from accelerate.state import AcceleratorState, GradientState, PartialState


def reset_accelerate_state() -> None:
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
