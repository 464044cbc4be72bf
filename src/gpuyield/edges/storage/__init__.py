"""edges/storage"""
