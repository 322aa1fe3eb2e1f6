"""4. Edit: prompts drawn with a learned or uploaded *s, their scores, and the run's files to download."""
