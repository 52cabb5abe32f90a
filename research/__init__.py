"""Research tools over the loop: policy mutations, the search baseline, trajectories."""
