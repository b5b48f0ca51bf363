# nbgrader configuration for this course.
#
# The course directory is the repository root: instructor notebooks (the nbgrader *source*) live
# in solutions/, the generated student notebooks (the *release*) in notebooks/. submitted/,
# autograded/, feedback/ and gradebook.db are instructor data and git-ignored.
#
# `transformer-course release` and `transformer-course grade` load this file. To use plain
# nbgrader instead, run it from the repository root and name this file (nbgrader 0.9.6 ignores
# `--config`):
#     nbgrader generate_assignment 04-attention --force --NbGrader.config_file=autograder/nbgrader_config.py
#     nbgrader autograde 04-attention --NbGrader.config_file=autograder/nbgrader_config.py

c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file

c.CourseDirectory.course_id = "transformer-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]

# What a student sees in place of a solution region.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A cell that runs longer than this is stopped (an infinite loop costs its exercise, not the class).
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True

