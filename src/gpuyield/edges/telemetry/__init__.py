"""edges/telemetry"""
