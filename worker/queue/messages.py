"""What a broker message may carry: checked types and sizes before any work starts.

Anyone who can write to the broker can send a task; its arguments are treated as hostile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_IDS = 65536  # the largest task_size
_MAX_ID = 2**63 - 1  # a BIGINT


class RefusedMessage(ValueError):
    """A task message whose arguments are not what pneumoscreen sends."""


def _an_id(value: Any, what: str) -> int:
    # bool is an int subclass; "1" and 1.0 are not ids either.
    if type(value) is not int or not 1 <= value <= _MAX_ID:
        raise RefusedMessage(f"{what} must be a positive integer id")
    return value


@dataclass(frozen=True)
class ScreenArgs:
    image_ids: list[int]
    batch_id: int | None
    rescreen: bool
    model_version: int | None


def screen_args(image_ids: Any, batch_id: Any = None, rescreen: Any = False,
                model_version: Any = None, unexpected: dict[str, Any] | None = None
                ) -> ScreenArgs:
    """The screen task's arguments, checked; RefusedMessage says what is wrong."""
    if unexpected:
        names = ", ".join(sorted(str(k)[:32] for k in unexpected)[:5])
        raise RefusedMessage(f"unexpected argument(s): {names} (a task names a registered "
                             "model version by id, never a path)")
    if not isinstance(image_ids, list) or not 1 <= len(image_ids) <= MAX_IDS:
        raise RefusedMessage(f"study_ids must be a list of 1 to {MAX_IDS} ids")
    ids = [_an_id(v, "each study id") for v in image_ids]
    if type(rescreen) is not bool:
        raise RefusedMessage("rescreen must be true or false")
    return ScreenArgs(
        image_ids=ids,
        batch_id=None if batch_id is None else _an_id(batch_id, "batch_id"),
        rescreen=rescreen,
        model_version=None if model_version is None else _an_id(model_version, "model_version"))
