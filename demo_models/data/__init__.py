"""Data for the demo models: synthetic generators with planted structure, and loaders for the real samples."""
