"""edges/report"""
