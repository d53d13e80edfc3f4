"""The learner's app with the lab's instruments attached, and the small apps of single lessons."""
