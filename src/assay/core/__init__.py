"""Records, steps, pipelines and recipes."""
