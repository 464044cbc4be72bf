"""Planner edges: loading --owned/--prices files, the Ray executor, writing plan outputs and deploy files."""
