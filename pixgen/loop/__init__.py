"""The per-step maths: pure tensor functions and the loop that yields steps. No I/O.

optimise  the Loop (optimiser, clamp, NaN rollback, kept result, state), its Objective, LRSchedule
course    the loop plus its restart events (the progressive switch, the zoom segments)
cutouts   batched random cutouts and their augmentations
losses    pure loss functions and the regulariser sum
targets   CLIP targets for each story phase (PromptSchedule)
prompts   all prompt syntax, parsed once into a PromptPlan
ops       straight-through quantisation, clamp with gradient, latent resizing
specks    specks (a few pixels of no blend of a flat picture's two colours) and the guard that keeps
          the steps from adding one
"""
