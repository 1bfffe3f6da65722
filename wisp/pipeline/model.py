"""The vocabulary of the pipeline: stages declare what they consume and produce; tasks are made of it.

A :class:`StageSpec` is data: its name, the service that runs it, the product kind it makes, the code
version of its science, the entities that can make it ready (``triggers``), and one rule function that
answers "which tasks of this stage are ready now, given this new entity?" (forward chaining). The same
declarations serve request-driven processing (DESIGN.md §7): a rule also knows the inputs of a task.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from wisp.ids import make_id
from wisp.v1 import pipeline_pb2


@dataclass(frozen=True)
class InputRef:
    """One input of a task: an entity id, what it is, and its role ('raw', 'bias', 'flat', ...)."""

    id: str
    entity_kind: str  # "raw_frame" | "exposure" | "product"
    role: str


@dataclass(frozen=True)
class Trigger:
    """A new entity that may make tasks ready: a raw frame (``kind`` = obstype) or a product (its kind)."""

    entity_kind: str  # "raw_frame" | "product"
    id: str
    kind: str

    @property
    def key(self) -> str:
        """``'raw_frame:bias'``, ``'product:master_flat'``: what stages list in ``triggers``."""
        return f"{self.entity_kind}:{self.kind}"


@dataclass(frozen=True)
class Task:
    """Make one product: the stage, the deterministic product id, the inputs and parameters."""

    stage: str
    product_id: str
    inputs: tuple[InputRef, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    group: Mapping[str, Any] = field(default_factory=dict)
    job_id: str = ""

    def inputs_with(self, role: str) -> list[InputRef]:
        return [i for i in self.inputs if i.role == role]

    def to_command(self) -> pipeline_pb2.MakeProduct:
        return pipeline_pb2.MakeProduct(
            stage=self.stage, product_id=self.product_id, job_id=self.job_id,
            inputs=[pipeline_pb2.InputRef(id=i.id, entity_kind=i.entity_kind, role=i.role) for i in self.inputs],
            params_json=json.dumps(dict(self.params), sort_keys=True),
            group_json=json.dumps(dict(self.group), sort_keys=True, default=str))

    @classmethod
    def from_command(cls, cmd: pipeline_pb2.MakeProduct) -> Task:
        return cls(stage=cmd.stage, product_id=cmd.product_id, job_id=cmd.job_id,
                   inputs=tuple(InputRef(i.id, i.entity_kind, i.role) for i in cmd.inputs),
                   params=json.loads(cmd.params_json or "{}"), group=json.loads(cmd.group_json or "{}"))


ReadyRule = Callable[[Session, Trigger], list[Task]]


@dataclass(frozen=True)
class StageSpec:
    """A stage as the planner sees it."""

    name: str  # "master_bias", "reduce", ...
    service: str  # the service that runs it: "calib", "astrometry", ...
    kind: str  # the product kind it makes
    id_prefix: str  # product id prefix (2-8 lowercase letters)
    version: str  # version of the stage's science: part of every product id
    triggers: tuple[str, ...]  # Trigger.key values that can make it ready
    ready: ReadyRule
    description: str = ""

    def task(self, inputs: list[InputRef], group: Mapping[str, Any],
             params: Mapping[str, Any] | None = None, job_id: str = "") -> Task:
        """A task with its deterministic product id (stage, version, inputs with roles, parameters)."""
        params = dict(params or {})
        ordered = tuple(sorted(inputs, key=lambda i: (i.role, i.id)))
        pid = make_id(self.id_prefix, self.name, self.version, [(i.role, i.id) for i in ordered], params)
        return Task(self.name, pid, ordered, params, dict(group), job_id)


@dataclass
class Output:
    """What a stage run made: one product file plus the columns that describe it.

    ``columns`` may hold instrument, chip, filter, night, field, exposure_id, frame_id, mjd_obs, ra_deg,
    dec_deg, valid_from, valid_to, metrics, quality_flags. ``extra`` writes rows of other tables (sources,
    calibration selections) in the same transaction as the product row.
    """

    path: Path
    columns: dict[str, Any] = field(default_factory=dict)
    extra: Callable[[Session, str], None] | None = None
