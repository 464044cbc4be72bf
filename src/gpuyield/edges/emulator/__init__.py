"""edges/emulator"""
