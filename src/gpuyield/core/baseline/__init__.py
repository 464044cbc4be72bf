"""core/baseline"""
