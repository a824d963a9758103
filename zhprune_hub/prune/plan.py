"""The pruning plan: which heads, KV heads and channels each block keeps, and which blocks go.

The plan is plain data so that surgery, verification, the report and the model card all read
the same decision.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LayerPlan(BaseModel):
    """What one original decoder block keeps (indices into the base model's heads/channels)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(description="Index of the block in the base model.")
    removed: bool = Field(default=False, description="The whole block is dropped.")
    kept_heads: list[int] = Field(description="Query heads kept, grouped by KV head, ascending.")
    kept_kv_heads: list[int] = Field(description="KV heads kept, ascending.")
    kept_channels: list[int] = Field(description="MLP intermediate channels kept, ascending.")

    @property
    def num_heads(self) -> int:
        return len(self.kept_heads)

    @property
    def num_kv_heads(self) -> int:
        return len(self.kept_kv_heads)

    @property
    def intermediate_size(self) -> int:
        return len(self.kept_channels)


class PruningPlan(BaseModel):
    """Per-block decisions plus the arithmetic that led to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: list[LayerPlan]
    head_dim: int
    target_removed: int = Field(description="Parameters the ratio asked to remove.")
    planned_removed: int = Field(description="Parameters the plan removes.")

    @property
    def kept_layers(self) -> list[LayerPlan]:
        return [layer for layer in self.layers if not layer.removed]

    @property
    def removed_blocks(self) -> list[int]:
        return [layer.index for layer in self.layers if layer.removed]

    def is_uniform(self) -> bool:
        """True when every kept block has the same widths (stock configs can express it)."""
        widths = {(lp.num_heads, lp.num_kv_heads, lp.intermediate_size) for lp in self.kept_layers}
        return len(widths) <= 1
