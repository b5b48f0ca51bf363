"""Grading: hidden checks (run inside nbgrader), the batch grader, reports and exports."""
