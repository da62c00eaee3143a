"""PatchCore (Roth et al., CVPR 2022) and the peer implementation measured on the project machine."""

from __future__ import annotations

from . import Quoted

# PatchCore on MVTec AD (one model per class), WideResNet-50, 224 px, coreset 25 %:
# Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022, Tables 1-2.
_PC = "Roth et al., PatchCore, CVPR 2022, Tables 1-2"
_MVTEC_SEP = "MVTec AD, one model per class, mean of 15 classes"
PATCHCORE: list[Quoted] = [
    Quoted(99.1, "I-AUROC", "PatchCore-25%", _MVTEC_SEP, _PC, "WideResNet-50, 224 px"),
    Quoted(98.1, "P-AUROC", "PatchCore-25%", _MVTEC_SEP, _PC, "WideResNet-50, 224 px"),
    Quoted(93.4, "AUPRO", "PatchCore-25%", _MVTEC_SEP, _PC, "WideResNet-50, 224 px"),
]

# Peers measured on this project's 2-core CPU machine: anomalib 2.7.0 PatchCore with the same offline
# EfficientNet-Lite0 weights and layers, 256 px, on kolektorsdd/commutator. Coreset 0.1 %: the project's
# peer measurements of 2026-11-22 (shared papers notes). Coreset 1 %: the audit of the project's issue 8
# (same setting, bit-identical raw features; it gave I-AUROC and AUPRO, not P-AUROC).
_PEER_01 = "anomalib 2.7.0, measured on the project machine, 2026-11-22 (project notes on peers)"
_PEER_1 = "anomalib 2.7.0, measured on the project machine for the audit of issue 8"
_KOL = "kolektorsdd/commutator (../shared/data), 278 train / 122 test"
_LITE0 = "EfficientNet-Lite0, layers 2+3, 256 px"
PEERS: list[Quoted] = [
    Quoted(80.7, "I-AUROC", "anomalib PatchCore", _KOL, _PEER_01, _LITE0, "coreset 0.1 %"),
    Quoted(80.7, "P-AUROC", "anomalib PatchCore", _KOL, _PEER_01, _LITE0, "coreset 0.1 %"),
    Quoted(31.1, "AUPRO", "anomalib PatchCore", _KOL, _PEER_01, _LITE0, "coreset 0.1 %"),
    Quoted(86.0, "I-AUROC", "anomalib PatchCore", _KOL, _PEER_1, _LITE0, "coreset 1 %"),
    Quoted(39.7, "AUPRO", "anomalib PatchCore", _KOL, _PEER_1, _LITE0, "coreset 1 %"),
]
