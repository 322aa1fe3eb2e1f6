"""Drawn chairs with exact masks, in numpy and PIL only: the project's example images and test data
(`draw`) and the toy world's pictures: families, colours, patterns and captions (`toy_world`), and
the names of the colours a picture shows (`colours`).

    python -m shapeinv_core.chairs.draw --out assets/      # writes the app's example chairs
"""
