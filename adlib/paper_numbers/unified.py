"""Multi-class (unified) MVTec AD headline numbers, mean of 15 classes, each with its source."""

from __future__ import annotations

from . import Quoted

# Multi-class MVTec AD headline numbers (mean over the 15 classes), as collected in
# ../shared/papers/README.md from the MambaAD / DVAD papers.
_UNIFIED = "MVTec AD, multi-class (unified) setting, mean of 15 classes"
MVTEC_UNIFIED: list[Quoted] = [
    Quoted(98.6, "I-AUROC", "MambaAD", _UNIFIED, "MambaAD (He et al., 2024), Table 1", "ResNet-34"),
    Quoted(97.7, "P-AUROC", "MambaAD", _UNIFIED, "MambaAD (He et al., 2024), Table 1", "ResNet-34"),
    Quoted(93.1, "AUPRO", "MambaAD", _UNIFIED, "MambaAD (He et al., 2024), Table 1", "ResNet-34"),
    Quoted(98.8, "I-AUROC", "DVAD", _UNIFIED, "DVAD (2025), Table 1", "ResNet-34"),
    Quoted(95.4, "I-AUROC", "SimpleNet", _UNIFIED, "as reported by MambaAD, Table 1", "WideResNet-50"),
    Quoted(96.8, "P-AUROC", "SimpleNet", _UNIFIED, "as reported by MambaAD, Table 1", "WideResNet-50"),
    Quoted(86.9, "AUPRO", "SimpleNet", _UNIFIED, "as reported by MambaAD, Table 1", "WideResNet-50"),
    Quoted(99.6, "I-AUROC", "Dinomaly", _UNIFIED, "Dinomaly (Guo et al., 2025)", "ViT-B/14 (DINOv2-reg)"),
]
