"""Exercise release and autograding (learner code never runs in the grading process)."""
