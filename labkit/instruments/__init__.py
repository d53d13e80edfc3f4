"""What the lab attaches to an app from outside: its own copy of the learner's app, or anyone's."""
