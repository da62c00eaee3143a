"""Multi-class (unified) MVTec AD headline numbers, mean of 15 classes, each with its exact source.

Two sources are quoted and they do not always agree: the DVAD paper's text (section 4.2, quoting its
Table 1) and the multi-class table in the INP-Former repository's README (which collects MambaAD's,
Dinomaly's and UniAD's own papers). Where they disagree (MambaAD: 97.8 in DVAD's text, 98.6 in
MambaAD's own Table 1; UniAD: 92.5 vs 96.5) both are kept, each with its source, and shown side by side.
"""

from __future__ import annotations

from . import Quoted

_UNIFIED = "MVTec AD, multi-class (unified) setting, mean of 15 classes"
_DVAD_TEXT = "DVAD (2025), section 4.2 text (its Table 1)"
_INP_README = "multi-class table of the INP-Former repository README"
_MAMBAAD = "MambaAD (He et al., 2024), Table 1, via the " + _INP_README

MVTEC_UNIFIED: list[Quoted] = [
    Quoted(98.8, "I-AUROC", "DVAD", _UNIFIED, _DVAD_TEXT, "ResNet-34"),
    Quoted(97.8, "I-AUROC", "MambaAD", _UNIFIED, _DVAD_TEXT, "ResNet-34", "MambaAD's own Table 1 says 98.6"),
    Quoted(98.6, "I-AUROC", "MambaAD", _UNIFIED, _MAMBAAD, "ResNet-34", "DVAD's text quotes 97.8"),
    Quoted(97.7, "P-AUROC", "MambaAD", _UNIFIED, _MAMBAAD, "ResNet-34"),
    Quoted(93.1, "AUPRO", "MambaAD", _UNIFIED, _MAMBAAD, "ResNet-34"),
    Quoted(95.4, "I-AUROC", "SimpleNet", _UNIFIED, _DVAD_TEXT, "WideResNet-50", "one model for all classes"),
    Quoted(92.5, "I-AUROC", "UniAD", _UNIFIED, _DVAD_TEXT, "EfficientNet-B4", "the INP-Former README says 96.5"),
    Quoted(96.5, "I-AUROC", "UniAD", _UNIFIED, _INP_README, "EfficientNet-B4", "DVAD's text quotes 92.5"),
    Quoted(96.8, "P-AUROC", "UniAD", _UNIFIED, _INP_README, "EfficientNet-B4"),
    Quoted(90.7, "AUPRO", "UniAD", _UNIFIED, _INP_README, "EfficientNet-B4"),
    Quoted(99.6, "I-AUROC", "Dinomaly", _UNIFIED, _INP_README, "ViT-B/14 (DINOv2-reg)"),
    Quoted(98.4, "P-AUROC", "Dinomaly", _UNIFIED, _INP_README, "ViT-B/14 (DINOv2-reg)"),
    Quoted(94.8, "AUPRO", "Dinomaly", _UNIFIED, _INP_README, "ViT-B/14 (DINOv2-reg)"),
    Quoted(99.7, "I-AUROC", "INP-Former", _UNIFIED, _INP_README, "ViT-B/14 (DINOv2-reg)"),
    Quoted(98.5, "P-AUROC", "INP-Former", _UNIFIED, _INP_README, "ViT-B/14 (DINOv2-reg)"),
    Quoted(94.9, "AUPRO", "INP-Former", _UNIFIED, _INP_README, "ViT-B/14 (DINOv2-reg)"),
]
