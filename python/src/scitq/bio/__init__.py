"""Helpers for bioinformatics scripts (`scitq.bio.genetics`)."""
