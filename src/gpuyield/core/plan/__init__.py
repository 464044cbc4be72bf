"""core/plan"""
