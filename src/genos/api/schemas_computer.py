"""Bodies of ``/v1/environments/{id}/computer/...``: what agents send and get back.

Coordinates are screen pixels (bounded here by the largest screen RFB allows;
the route checks them against the current screen before anything is sent).
Text and key names are bounded; a longer one is a 422, never a partial send.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

Coord = Annotated[StrictInt, Field(ge=0, le=8191)]
Button = Literal["left", "middle", "right"]
KeyCombo = Annotated[str, Field(min_length=1, max_length=256, description="e.g. ctrl+l, Return")]
MAX_TEXT = 8192
MAX_OUTPUT = 1 << 20


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MoveRequest(_Request):
    x: Coord
    y: Coord


class ClickRequest(_Request):
    x: Coord | None = Field(None, description="default: where the pointer is")
    y: Coord | None = None
    button: Button = "left"
    count: Annotated[StrictInt, Field(ge=1, le=3)] = 1


class DragRequest(_Request):
    path: Annotated[
        list[tuple[Coord, Coord]],
        Field(
            min_length=2,
            max_length=1000,
            description="[[x, y], ...]: press at the first, release at the last",
        ),
    ]
    button: Button = "left"


class ScrollRequest(_Request):
    x: Coord | None = Field(None, description="default: where the pointer is")
    y: Coord | None = None
    dx: Annotated[StrictInt, Field(ge=-50, le=50)] = 0
    dy: Annotated[StrictInt, Field(ge=-50, le=50, description="clicks down; negative: up")] = 0


class TypeRequest(_Request):
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


class KeyRequest(_Request):
    keys: KeyCombo


class HoldRequest(_Request):
    keys: KeyCombo | None = None
    button: Button | None = None


class ReleaseRequest(_Request):
    keys: KeyCombo | None = Field(None, description="default: every held key and button")
    button: Button | None = None


class WaitRequest(_Request):
    until: Literal["change", "settle"] = "change"
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    quiet: Annotated[float, Field(gt=0, le=30, description="settle: seconds of no change")] = 0.5


class ExecRequest(_Request):
    argv: Annotated[
        list[Annotated[str, Field(max_length=16384)]], Field(min_length=1, max_length=256)
    ]
    timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    max_output: Annotated[StrictInt, Field(ge=0, le=MAX_OUTPUT)] = 64 << 10


class ScreenOut(BaseModel):
    width: int
    height: int
    name: str


class CursorOut(BaseModel):
    x: int
    y: int


class ActionOut(BaseModel):
    ok: bool
    cursor: CursorOut
    screen: ScreenOut


class WaitOut(BaseModel):
    changed: bool = Field(description="change: pixels changed; settle: the screen went quiet")
    waited: float


class ExecOut(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool


class HolderOut(BaseModel):
    kind: Literal["person", "agent"]
    user_id: str
    name: str
    since: float


class LeaseOut(BaseModel):
    holder: HolderOut | None
    version: int
