"""Where and how the maths runs, decided once at the edge.

device       device and seed
precision    bf16 weights cast once, `auto`'s cached calibration
memory       the peak-memory estimate, the check that refuses a run that won't fit, the peak
environment  what the pixels depend on, recorded with every run
"""
