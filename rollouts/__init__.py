"""Everything between a problem and a graded rollout: engines, prompts, problem sources, steps, grading."""
