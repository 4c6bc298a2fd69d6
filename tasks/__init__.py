"""Stages of the flywheel: pure decisions plus the thin I/O tasks that call them."""
