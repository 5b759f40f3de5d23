"""Jobs built on pixgen.api: many runs, or runs of another shape.

batch       prompt files, shards, resumable jobs, best-of-N candidates
ray_batch   `batch --ray`: the same jobs on a pool of Ray workers (ray imported only there)
restyle     video style transfer, frame by frame
sample      `pixgen sample`: draw from the prior, rerank, keep the best K
clip_tools  score, classify and search with CLIP
"""
