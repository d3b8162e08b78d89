"""Chaos suite: real worker containers under faults (issue 8). See chaos/run.py."""
