"""core/workload"""
