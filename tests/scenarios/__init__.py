"""Scenario suite: each TOML file holds orders, tracks and the alarm timeline they must give."""
