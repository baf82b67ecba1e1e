"""Training in low precision: precision recipes (bf16, fp8 with or without Smooth-SwiGLU and FP8 Adam moments,
MXFP4 Quartet-style) applied to a causal LM's linear layers, a seeded training loop on the embedded model's
generated data, and checkpoints that a suite file names as a baseline or variants.

    evalsuite train --recipe fp8-smooth --steps 40 --from embedded:tiny --out runs/fp8-smooth

Modules: `recipes` (Recipe, PRESETS), `linear` (the low-precision GEMMs' autograd functions), `swiglu`
(SwiGLU statistics and Smooth-SwiGLU), `fp8_adam` (FP8AdamW), `loop` (TrainSettings, train, save).
"""
