"""core/perf"""
