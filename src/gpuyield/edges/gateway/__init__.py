"""edges/gateway"""
