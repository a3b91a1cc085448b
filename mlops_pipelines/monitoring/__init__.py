"""Monitoring: drift statistics and, around them, the reports and sensors of the closed loop."""
