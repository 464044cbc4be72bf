"""core/sim"""
