"""2. Learn the shape, 3. Progress: one *s learned from the photo and its mask, as a job in the queue."""
