"""Building blocks that import only torch, numpy and the standard library (a test walks the imports).

`gating` (top-k weights and mixtures), `losses` (SimpleNet's truncated l1, center loss, ranked list
loss); DVAD's blocks: `scan` (selective scan), `scan2d` (2-D scan orders), `mamba` (Mamba/VSS and CNN
blocks), `hyper` (Hyper AD Plug-in), `conv_moe` (per-position expert mixture).
"""
