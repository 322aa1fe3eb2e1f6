"""Scoring what was drawn: Mask-IoU, shape specificity and CLIP-T (`metrics`), and the tables and
plots made of them (`report`)."""
