"""1. Image: the photo of one chair and its mask (found, clicked, painted or uploaded)."""
