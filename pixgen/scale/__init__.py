"""Scale-out on Ray (`pixgen batch --ray`, `pixgen.ray.Generate`): the pieces that run inside Ray.

tree    a job folder as files in transit, sent in full or as what changed, written back
ledger  the driver's memory of a batch: checkpoints and steps (a small actor)
worker  a worker that keeps its models loaded and runs batch jobs one after another (an actor)

None of them imports ray at module level; pixgen.apps.ray_batch makes them actors.
"""
