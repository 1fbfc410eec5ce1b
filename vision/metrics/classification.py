"""Classification metrics from a confusion matrix: top-1, per-class precision/recall/F1."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def top1(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def per_class(cm: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    tp = np.diag(cm).astype(float)
    pred = cm.sum(axis=0).astype(float)
    true = cm.sum(axis=1).astype(float)
    prec = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    rec = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    return {lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                  "support": int(true[i])} for i, lab in enumerate(labels)}


def report(cm: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    pc = per_class(cm, labels)
    return {"top1": top1(cm), "macro_f1": float(np.mean([v["f1"] for v in pc.values()])) if pc else 0.0,
            "per_class": pc, "confusion_matrix": cm.tolist(), "labels": list(labels)}


def plot_confusion_matrix(cm: np.ndarray, labels: Sequence[str], path: str, title: str = "confusion matrix") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.6 * n), dpi=110)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(history: dict[str, list[tuple[int, float]]], path: str, title: str = "training curves") -> str:
    """``history``: metric name -> [(step, value)], one panel per metric family (loss, acc, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, list[str]] = {}
    for name in sorted(history):
        families.setdefault(name.split("/")[-1].split("_")[0], []).append(name)
    fig, axes = plt.subplots(1, max(1, len(families)), figsize=(4.5 * max(1, len(families)), 3.4), dpi=110)
    axes = np.atleast_1d(axes)
    for ax, (fam, names) in zip(axes, families.items()):
        for name in names:
            pts = history[name]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, label=name)
        ax.set_title(fam)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
