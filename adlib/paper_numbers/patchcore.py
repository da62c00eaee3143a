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

# Peers measured on this project's 2-core CPU machine (../shared/papers/README.md, 2026-11-22):
# anomalib 2.7.0 PatchCore with the same offline EfficientNet-Lite0 weights, 256 px, coreset 0.1 %.
_PEER = "anomalib 2.7.0, measured on the project machine (../shared/papers/README.md)"
_KOL = "kolektorsdd/commutator (../shared/data), 278 train / 122 test"
PEERS: list[Quoted] = [
    Quoted(80.7, "I-AUROC", "anomalib PatchCore", _KOL, _PEER, "EfficientNet-Lite0, 256 px", "coreset 0.1 %"),
    Quoted(80.7, "P-AUROC", "anomalib PatchCore", _KOL, _PEER, "EfficientNet-Lite0, 256 px", "coreset 0.1 %"),
    Quoted(31.1, "AUPRO", "anomalib PatchCore", _KOL, _PEER, "EfficientNet-Lite0, 256 px", "coreset 0.1 %"),
]
