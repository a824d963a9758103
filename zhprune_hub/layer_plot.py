"""A per-block picture of what pruning kept: attention heads and MLP channels, before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_NAME = "zhprune_layers.png"


def base_widths(report: dict[str, Any], base_config: dict[str, Any] | None = None) -> dict[str, int]:
    """The base model's per-block widths: from its config.json, else the largest kept index + 1.

    The report lists kept indices only, so without the base config a block-wide cut of the last
    heads or channels everywhere would go unseen; publish and `card` pass the config.
    """
    config = base_config or {}
    text = config.get("text_config") or {}
    heads = config.get("num_attention_heads") or text.get("num_attention_heads")
    kv = config.get("num_key_value_heads") or text.get("num_key_value_heads") or heads
    channels = config.get("intermediate_size") or text.get("intermediate_size")
    layers = report["layers"]

    def widest(key: str) -> int:
        return max((max(layer[key]) + 1 for layer in layers if layer[key]), default=0)

    return {
        "heads": int(heads or widest("kept_heads")),
        "kv_heads": int(kv or widest("kept_kv_heads")),
        "channels": int(channels or widest("kept_channels")),
    }


def kept_per_layer(report: dict[str, Any], base_config: dict[str, Any] | None = None) -> list[dict[str, int]]:
    """Per block: the base and kept query heads, KV heads and MLP channels (kept 0 for a removed block)."""
    widths = base_widths(report, base_config)
    rows = []
    for layer in report["layers"]:
        removed = bool(layer.get("removed"))
        # Reports record each block's base widths; older ones fall back to the config's.
        base = layer.get("base") or {
            "num_heads": widths["heads"],
            "num_kv_heads": widths["kv_heads"],
            "intermediate_size": widths["channels"],
        }
        rows.append(
            {
                "index": layer["index"],
                "heads": base["num_heads"],
                "kept_heads": 0 if removed else len(layer["kept_heads"]),
                "kv_heads": base["num_kv_heads"],
                "kept_kv_heads": 0 if removed else len(layer["kept_kv_heads"]),
                "channels": base["intermediate_size"],
                "kept_channels": 0 if removed else len(layer["kept_channels"]),
            }
        )
    return rows


def plot_layers(report: dict[str, Any], path: Path, *, base_config: dict[str, Any] | None = None) -> Path:
    """Write a two-panel PNG (kept heads, kept channels per block) to `path` and return it.

    The PNG carries no timestamp, so the same report gives the same bytes and a republish no commit.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = kept_per_layer(report, base_config)
    index = [r["index"] for r in rows]
    fig, (heads_ax, mlp_ax) = plt.subplots(2, 1, figsize=(max(6.0, 0.28 * len(rows) + 2), 5.2), sharex=True)
    for ax, total, kept, label in (
        (heads_ax, "heads", "kept_heads", "attention heads"),
        (mlp_ax, "channels", "kept_channels", "MLP channels"),
    ):
        ax.bar(index, [r[total] for r in rows], color="#d9d9d9", label="before")
        ax.bar(index, [r[kept] for r in rows], color="#3a76af", label="kept")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    removed = [r["index"] for r in rows if r["kept_heads"] == 0 and r["kept_channels"] == 0]
    for ax in (heads_ax, mlp_ax):
        for i in removed:
            ax.axvspan(i - 0.5, i + 0.5, color="#f4cccc", zorder=0)
    from matplotlib.ticker import MaxNLocator

    mlp_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    heads_ax.legend(loc="lower right", fontsize=8)
    mlp_ax.set_xlabel("block" + (" (red: block removed)" if removed else ""))
    base = report.get("base_model", {}).get("reference", "")
    fig.suptitle(f"Kept per block: {Path(str(base)).name} ({report.get('method')}, {report.get('layout')} layout)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
