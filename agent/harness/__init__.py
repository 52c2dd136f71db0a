"""Latency and interruption test harness: scripted scenarios in, metrics and reports out."""
