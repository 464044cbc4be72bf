"""edges/io"""
