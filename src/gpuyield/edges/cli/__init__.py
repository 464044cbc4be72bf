"""edges/cli"""
