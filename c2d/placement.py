"""Where Kubernetes places job pods: the scheduling terms that both the node's settings and an environment's
GPUs declare."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Toleration(BaseModel):
    """A Kubernetes toleration for job pods (the fields of core/v1 Toleration that scheduling uses)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="NoExecute only: how long the pod stays once the taint appears."
    )
