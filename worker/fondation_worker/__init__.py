"""Fondation Worker: runs Fondation's Claude analysis jobs from a Convex queue."""

__version__ = "0.1.0"
