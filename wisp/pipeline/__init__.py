"""The pipeline kernel: declared stages, the planner, and the generic stage adapter."""
