"""Deployable exports of pruned checkpoints (OpenVINO through optimum-intel), checked before they are kept."""

from zhprune_hub.export.exporter import ExportConfig, ExportOutcome, export_checkpoint

__all__ = ["ExportConfig", "ExportOutcome", "export_checkpoint"]
